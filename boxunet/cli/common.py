"""Shared helpers of the command-line entry points."""
import sys

from boxunet.errors import BoxunetError


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
