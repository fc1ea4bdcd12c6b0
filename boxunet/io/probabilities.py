"""Saved class probabilities of one case, as prediction, validation and ensembling write them.

``<case>.npz`` holds the key ``probabilities``: float16, (K, *raw shape) in raw array order.
``<case>.json`` holds the case's preprocessing properties, among them ``geometry`` (``Geometry.to_json``).
"""
from pathlib import Path

import numpy as np

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
    """The float16 (K, *raw shape) probabilities of ``<stem>.npz``."""
    with np.load(_with_suffix(stem, ".npz")) as data:
        return data["probabilities"]


def read_properties(stem: Path) -> dict:
    """The properties saved next to the probabilities, ``<stem>.json``."""
    return read_json(_with_suffix(stem, ".json"))
