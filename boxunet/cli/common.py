"""Shared helpers of the command-line entry points."""
import sys

from boxunet.errors import BoxunetError


def run_cli(function, *args, **kwargs):
    """Call ``function``; a BoxunetError ends the program with its message and exit status 1."""
    try:
        return function(*args, **kwargs)
    except BoxunetError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit("interrupted: finished files are kept; rerun the same command to resume")
