"""File stamps: what a resumable step records about its input files to see later that they changed.

A stamp is ``[size in bytes, modification time in ns]``: an edit that rewrites a file changes at least its
modification time (copies that keep the time, e.g. ``cp -p`` of an older file, almost always change the size
too). Stamps are plain lists, so a stamp read back from JSON compares equal to a fresh one.
"""
import hashlib
import json
from pathlib import Path


def file_stamp(path: Path | str | None) -> list[int] | None:
    """``[size, mtime_ns]`` of a file, or None for no file."""
    if path is None:
        return None
    status = Path(path).stat()
    return [status.st_size, status.st_mtime_ns]


def file_digest(path: Path | str) -> str:
    """The sha256 of a file's bytes (what it holds, wherever it was copied to)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_digest(record) -> str:
    """A short digest of a JSON-serialisable record (stamps, settings)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
