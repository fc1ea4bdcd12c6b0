"""One run per output folder: an advisory lock that a second run is refused on, and the clean-up of what
dead runs left behind.

``exclusive_folder(folder, what)`` holds an exclusive ``flock`` on ``<folder>/.boxunet.lock`` for the
duration of a run. The kernel releases it when the process ends, however it ends (kill -9 included), so a
lock can never be stale; the file holds the owner's process id for the refusal message. Taking the lock
also removes the temporary files (``.tmp_<pid>_<name>``, boxunet.io.atomic) of processes that no longer
run: a run killed while writing a checkpoint leaves one behind.

The lock is POSIX only (``fcntl``); elsewhere the folder is not locked.
"""
import contextlib
import os
import re
from pathlib import Path

from boxunet.errors import BoxunetError

LOCK_FILE_NAME = ".boxunet.lock"
TEMPORARY_NAME = re.compile(r"^\.tmp_(?P<pid>\d+)_")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_dead_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files under ``folder`` whose writing process is gone; return them."""
    removed = []
    for path in sorted(Path(folder).rglob(".tmp_*")):
        match = TEMPORARY_NAME.match(path.name)
        if match and path.is_file() and int(match.group("pid")) != os.getpid() \
                and not _process_alive(int(match.group("pid"))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def exclusive_folder(folder: Path, what: str):
    """Hold ``folder`` (created if missing) for one run of ``what`` (e.g. "training"); a second run while
    this one holds it raises a BoxunetError naming the first's process id and what it runs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform
        yield
        return
    with open(folder / LOCK_FILE_NAME, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "a process"
            raise BoxunetError(f"{folder}: {owner} is writing here; wait for it to finish or stop it, then "
                               f"rerun the {what}") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"the {what} of process {os.getpid()}")
            handle.flush()
            remove_dead_temporaries(folder)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
