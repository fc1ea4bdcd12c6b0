"""Saved class probabilities of one case, as prediction, validation and ensembling write them.

``<case>.npz`` holds the key ``probabilities``: float16, (K, *raw shape) in raw array order.
``<case>.json`` holds the case's preprocessing properties, among them ``geometry`` (``Geometry.to_json``).
"""
import zipfile
import zlib
from pathlib import Path

import numpy as np

from boxunet.errors import BoxunetError
from boxunet.io.atomic import atomic_path, read_json, write_json


def _with_suffix(stem: Path, suffix: str) -> Path:
    stem = Path(stem)
    return stem.with_name(stem.name + suffix)


def write_probabilities(probabilities: np.ndarray, properties: dict, stem: Path) -> None:
    """Write ``<stem>.npz`` (the probabilities as float16) and ``<stem>.json`` (the properties), atomically."""
    with atomic_path(_with_suffix(stem, ".npz")) as temporary, open(temporary, "wb") as file:
        np.savez_compressed(file, probabilities=np.asarray(probabilities, dtype=np.float16))
    write_json(properties, _with_suffix(stem, ".json"))


def read_probabilities(stem: Path) -> np.ndarray:
    """The float16 (K, *raw shape) probabilities of ``<stem>.npz``; a file that is not one (truncated, pickled,
    another array) is a BoxunetError naming it. Pickled content is never unpickled."""
    path = _with_suffix(stem, ".npz")
    try:
        with np.load(path, allow_pickle=False) as data:
            probabilities = data["probabilities"]
    except (ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        raise BoxunetError(f"file {path}: not a probabilities file written by boxunet ({type(error).__name__}: "
                           f"{error}); predict case {Path(stem).name} again with --save-probabilities") from None
    if not np.issubdtype(probabilities.dtype, np.floating):
        raise BoxunetError(f"file {path}: holds {probabilities.dtype} values, not probabilities; predict case "
                           f"{Path(stem).name} again with --save-probabilities")
    return probabilities


def read_properties(stem: Path) -> dict:
    """The properties saved next to the probabilities, ``<stem>.json``."""
    return read_json(_with_suffix(stem, ".json"))
