"""Boxes and box files: ``boxesTr/<case>.json`` = ``{"boxes": [{"label": 2, "min": [z, y, x], "max": [z, y, x]}]}``.

Coordinates are voxel indices of the raw image's array; ``min`` is inclusive, ``max`` exclusive.
"""
from dataclasses import dataclass
from pathlib import Path

import cc3d
import numpy as np

from boxunet.errors import BoxunetError
from boxunet.io.atomic import read_user_json, write_json
from boxunet.io.dataset_json import is_int


@dataclass(frozen=True)
class Box:
    """An axis-aligned box of one label in array index space, min inclusive, max exclusive."""

    label: int
    min: tuple[int, ...]
    max: tuple[int, ...]

    def to_json(self) -> dict:
        return {"label": self.label, "min": list(self.min), "max": list(self.max)}

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(lo, hi) for lo, hi in zip(self.min, self.max))

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(hi - lo for lo, hi in zip(self.min, self.max))

    def shifted(self, offset: tuple[int, ...]) -> "Box":
        """The same box with ``offset`` added to its corners (e.g. into a crop's voxels)."""
        return Box(self.label, tuple(v + o for v, o in zip(self.min, offset)),
                   tuple(v + o for v, o in zip(self.max, offset)))


def parse_boxes(data, source: str) -> list[Box]:
    """Turn the parsed JSON of a box file into boxes; malformed entries raise an error naming ``source``."""
    if not isinstance(data, dict) or not isinstance(data.get("boxes"), list):
        raise BoxunetError(f'file {source}: must be {{"boxes": [{{"label": L, "min": [z, y, x], "max": [z, y, x]}}]}}')
    boxes = []
    for index, entry in enumerate(data["boxes"]):
        ok = (isinstance(entry, dict) and is_int(entry.get("label"))
              and all(isinstance(entry.get(key), list) and len(entry[key]) == 3 and all(is_int(v) for v in entry[key])
                      for key in ("min", "max")))
        if not ok:
            raise BoxunetError(f"file {source}: box {index} must have an int label and 3 int min and max "
                               f"coordinates (z, y, x); got {entry!r}")
        boxes.append(Box(entry["label"], tuple(entry["min"]), tuple(entry["max"])))
    return boxes


def case_boxes(properties: dict) -> list[Box]:
    """The boxes of a preprocessed case, in its grid's voxel indices."""
    return parse_boxes({"boxes": properties.get("boxes", [])}, f"properties of case {properties.get('case_id')}")


def read_boxes(path: Path) -> list[Box]:
    """Read a box file."""
    return parse_boxes(read_user_json(path), str(path))


def write_boxes(boxes: list[Box], path: Path) -> None:
    """Write a box file atomically."""
    write_json({"boxes": [box.to_json() for box in boxes]}, path)


def box_problem(box: Box, shape: tuple[int, ...], declared_box_labels: list[int]) -> str | None:
    """Describe what is wrong with ``box`` for an image of array ``shape``, or None."""
    if box.label not in declared_box_labels:
        return f"box label {box.label} is not in dataset.json box_labels {declared_box_labels}"
    if any(lo >= hi for lo, hi in zip(box.min, box.max)):
        return f"box min {list(box.min)} must be < max {list(box.max)} on every axis (empty or inverted box)"
    if any(lo < 0 for lo in box.min) or any(hi > s for hi, s in zip(box.max, shape)):
        return f"box {list(box.min)}..{list(box.max)} lies outside the image of size {list(shape)}"
    return None


def boxes_from_label_map(label_map: np.ndarray, label: int, margin: int = 0, connectivity: int = 26,
                         min_voxels: int = 1) -> list[Box]:
    """Return one box per connected component of ``label`` in a (z, y, x) label map.

    The box is the component's tight bounding box grown by ``margin`` voxels on every side and
    clipped to the image. Components smaller than ``min_voxels`` are skipped.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    mask = np.ascontiguousarray(label_map == label)
    if not mask.any():
        return []
    components, count = cc3d.connected_components(mask, connectivity=connectivity, return_N=True)
    statistics = cc3d.statistics(components)
    boxes = []
    for index in range(1, count + 1):
        if statistics["voxel_counts"][index] < min_voxels:
            continue
        slices = statistics["bounding_boxes"][index]
        lower = [max(0, s.start - margin) for s in slices]
        upper = [min(size, s.stop + margin) for s, size in zip(slices, label_map.shape)]
        boxes.append(Box(int(label), tuple(int(v) for v in lower), tuple(int(v) for v in upper)))
    return sorted(boxes, key=lambda box: (box.min, box.max))


def box_mask(shape: tuple[int, ...], boxes: list[Box], label: int | None = None) -> np.ndarray:
    """Boolean mask of the voxels inside any of ``boxes`` (only those of ``label`` when given); a box reaching out
    of ``shape`` marks its part inside."""
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        if label is None or box.label == label:
            mask[tuple(slice(max(lo, 0), max(hi, 0)) for lo, hi in zip(box.min, box.max))] = True
    return mask
