"""Preprocessed case storage: ``<case>.b2nd`` (data), ``<case>_seg.b2nd`` (labels), ``<case>.json`` (properties).

Arrays are blosc2 NDArrays (LZ4, chunks shaped like the training patch) that can be opened memory
mapped and sliced without decompressing the whole case. The properties file is written last, so a
case counts as finished only when its properties exist; every file is written atomically.
"""
import os
from pathlib import Path

import blosc2
import numpy as np

from boxunet.io.atomic import atomic_path, read_json, write_json

COMPRESSION = {"codec": blosc2.Codec.LZ4, "clevel": 5, "nthreads": 1}


def _chunks(shape: tuple[int, ...], patch_size: list[int]) -> tuple[int, ...]:
    spatial = shape[1:]
    patch = list(patch_size)
    if len(patch) < len(spatial):
        patch = [1] * (len(spatial) - len(patch)) + patch
    return (1,) + tuple(max(1, min(s, p)) for s, p in zip(spatial, patch))


def write_array(array: np.ndarray, path: Path, patch_size: list[int]) -> None:
    """Store a (c, *spatial) array as blosc2 with patch-shaped chunks (atomic)."""
    with atomic_path(path) as temporary:
        blosc2.asarray(np.ascontiguousarray(array), urlpath=str(temporary), mode="w",
                       chunks=_chunks(array.shape, patch_size), cparams=COMPRESSION)


def save_case(folder: Path, case_id: str, data: np.ndarray, seg: np.ndarray, properties: dict,
              patch_size: list[int]) -> None:
    """Store one preprocessed case: (c, z, y, x) float32 data, (1, z, y, x) int8 seg, properties JSON."""
    folder = Path(folder)
    write_array(data.astype(np.float32, copy=False), folder / f"{case_id}.b2nd", patch_size)
    write_array(seg.astype(np.int8, copy=False), folder / f"{case_id}_seg.b2nd", patch_size)
    write_json(properties, folder / f"{case_id}.json", indent=None)


def load_case(folder: Path, case_id: str, memory_mapped: bool = True):
    """Open a stored case: data and seg as blosc2 arrays (slice them to read) and the properties."""
    folder = Path(folder)
    mode = {"mmap_mode": "r"} if memory_mapped and os.name != "nt" else {}
    data = blosc2.open(str(folder / f"{case_id}.b2nd"), **mode)
    seg = blosc2.open(str(folder / f"{case_id}_seg.b2nd"), **mode)
    return data, seg, read_json(folder / f"{case_id}.json")


def finished_case_properties(folder: Path, case_id: str) -> dict | None:
    """The properties of a finished case, or None if the case is not (completely) stored."""
    folder = Path(folder)
    properties = folder / f"{case_id}.json"
    if not (properties.is_file() and (folder / f"{case_id}.b2nd").is_file() and (folder / f"{case_id}_seg.b2nd").is_file()):
        return None
    try:
        return read_json(properties)
    except ValueError:
        return None


def finished_case_signature(folder: Path, case_id: str) -> str | None:
    """The preprocessing signature of a finished case, or None if the case is not (completely) stored."""
    properties = finished_case_properties(folder, case_id)
    return None if properties is None else properties.get("preprocessing_signature")
