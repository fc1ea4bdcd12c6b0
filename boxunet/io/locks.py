"""One run per output folder: an advisory lock that a second run is refused on, and the clean-up of what
dead runs left behind.

``exclusive_folder(folder, what)`` holds an exclusive ``flock`` on ``<folder>/.boxunet.lock`` for the
duration of a run. The kernel releases it when the process ends, however it ends (kill -9 included), so a
lock can never be stale; the file holds the owner's process id for the refusal message. Taking the lock
also removes the temporary files (``.tmp_<pid>_<name>``, boxunet.io.atomic) of processes that no longer
run: a run killed while writing a checkpoint leaves one behind.

A job split into parts (``--num-parts``) shares the folder: each part holds the folder's lock shared and its
own part's lock (``.boxunet.lock.part_I_of_N``) exclusively, so parts run side by side while a second run of
one part, or a whole run, is refused.

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
def exclusive_folder(folder: Path, what: str, part: str | None = None):
    """Hold ``folder`` (created if missing) for one run of ``what`` (e.g. "training"); a second run while
    this one holds it raises a BoxunetError naming the first's process id and what it runs.

    A run of one ``part`` of a job split over several runs (``--num-parts``) shares the folder with the other
    parts and holds only its part: a second run of the same part, or a whole run, is refused while it runs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform
        yield
        return
    with contextlib.ExitStack() as held:
        handle = held.enter_context(open(folder / LOCK_FILE_NAME, "a+"))
        _lock(handle, fcntl.LOCK_SH if part else fcntl.LOCK_EX, folder, what)
        held.callback(fcntl.flock, handle, fcntl.LOCK_UN)
        _write_owner(handle, f"a {what} split into parts" if part else f"the {what} of process {os.getpid()}")
        if part:
            handle = held.enter_context(open(folder / f"{LOCK_FILE_NAME}.{part}", "a+"))
            _lock(handle, fcntl.LOCK_EX, folder, what)
            held.callback(fcntl.flock, handle, fcntl.LOCK_UN)
            _write_owner(handle, f"the {what} of process {os.getpid()} ({part})")
        else:  # no part runs now (each holds the folder's lock shared); parts may run on other machines, whose
            remove_dead_temporaries(folder)  # process ids mean nothing here: only a whole run cleans up
            for part_lock in folder.glob(f"{LOCK_FILE_NAME}.part_*"):
                part_lock.unlink(missing_ok=True)
        yield


def _write_owner(handle, owner: str) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(owner)
    handle.flush()


def _lock(handle, mode: int, folder: Path, what: str) -> None:
    import fcntl
    try:
        fcntl.flock(handle, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another run"
        raise BoxunetError(f"{folder}: {owner} is writing here; wait for it to finish or stop it, then "
                           f"rerun the {what}") from None
