"""Atomic writes: a file is written under a temporary name in its folder, then renamed into place."""
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from boxunet.errors import BoxunetError


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp_{os.getpid()}_{path.name}")
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())  # the data is on disk before the rename makes it visible
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_json(data, path: Path, indent: int | None = 2) -> None:
    """Write ``data`` as JSON (indented unless ``indent`` is None), atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=indent) + "\n")


def copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically: a symlink at ``target`` is replaced, never written through."""
    with atomic_path(target) as temporary:
        shutil.copyfile(source, temporary)


def read_json(path: Path):
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def read_user_json(path: Path):
    """Read a JSON file a user wrote (dataset.json, a box file): anything unreadable is a BoxunetError naming it."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        problem = f"is not UTF-8 text (byte {error.start})"
    except json.JSONDecodeError as error:
        problem = f"is not valid JSON ({error})"
    except RecursionError:
        problem = "is not valid JSON for boxunet: it nests too deeply"
    raise BoxunetError(f"file {path}: {problem}")
