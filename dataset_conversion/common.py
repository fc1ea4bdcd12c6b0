"""Helpers shared by the dataset converters: output folder checks, file placement, dataset.json."""
import argparse
import os
import shutil
from pathlib import Path

from boxunet.errors import BoxunetError
from boxunet.io.atomic import atomic_path, write_json
from boxunet.io.dataset_json import parse_dataset_json
from boxunet.io.dataset_locator import dataset_id_of

FILE_MODES = ("link", "copy", "symlink")


def new_dataset_folder(root: Path, dataset_id: int, name: str, overwrite: bool = False) -> Path:
    """Return ``root/DatasetXXX_name`` after checking that a converter may write it; nothing is changed.

    Refused: an id outside 1..999, a name unfit for a folder, another folder with the same id, or an
    existing non-empty folder (unless ``overwrite``).
    """
    if not 1 <= dataset_id <= 999:
        raise BoxunetError(f"dataset id {dataset_id}: must be between 1 and 999")
    folder_name = f"Dataset{dataset_id:03d}_{name}"
    dataset_id_of(folder_name)
    root = Path(root)
    if root.is_dir():
        others = sorted(p.name for p in root.glob(f"Dataset{dataset_id:03d}_*") if p.name != folder_name)
        if others:
            raise BoxunetError(f"dataset id {dataset_id}: already used by {root / others[0]}; choose another id with -d")
    folder = root / folder_name
    if folder.exists() and not folder.is_dir():
        raise BoxunetError(f"folder {folder}: exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise BoxunetError(f"folder {folder}: exists and is not empty; use --overwrite to replace it")
    return folder


def replace_folder(folder: Path) -> None:
    """Remove ``folder`` with its content if it exists, then create it empty."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def place_file(source: Path, target: Path, mode: str = "link") -> None:
    """Put ``source`` at ``target`` byte for byte.

    ``mode`` "link": a hard link, or a copy when linking fails (other file system); "copy": a copy
    written atomically; "symlink": a symbolic link to the absolute source path.
    """
    if mode not in FILE_MODES:
        raise ValueError(f"mode must be one of {FILE_MODES}, got {mode!r}")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "symlink":
        os.symlink(Path(source).resolve(), target)
        return
    if mode == "link":
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    with atomic_path(target) as temporary:
        shutil.copyfile(source, temporary)


def write_dataset_json(data: dict, folder: Path) -> None:
    """Validate ``data`` as a dataset.json and write it atomically to ``folder/dataset.json``."""
    path = Path(folder) / "dataset.json"
    parse_dataset_json(data, str(path))
    write_json(data, path)


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
