"""Shared helpers of the command-line entry points."""
import errno
import sys

from boxunet.errors import BoxunetError

FILE_SYSTEM_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                      errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                      errno.EROFS: "read-only file system", errno.ENOTDIR: "not a folder (a file is in the way)",
                      errno.EEXIST: "a file is in the way", errno.EISDIR: "is a folder, not a file"}


def run_cli(function, *args, interrupted_hint: str = "", **kwargs):
    """Call ``function``; a BoxunetError ends the program with its message and exit status 1.

    ``interrupted_hint`` is added to the message printed on Ctrl-C (e.g. how to resume).
    """
    try:
        return function(*args, **kwargs)
    except BoxunetError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit("interrupted" + (f": {interrupted_hint}" if interrupted_hint else ""))
    except OSError as error:  # the file system refused: a full disk, no permission, a file where a folder goes
        if error.errno not in FILE_SYSTEM_ERRORS:
            raise
        where = error.filename if error.filename2 is None else f"{error.filename} -> {error.filename2}"
        sys.exit(f"error: {FILE_SYSTEM_ERRORS[error.errno]}: {where}"
                 + (f"; {interrupted_hint}" if interrupted_hint else ""))
