"""Derive boxes from a dense label map: one box per connected component of a label (seed 000, 3.1.2)."""
import cc3d
import numpy as np

from boxunet.io.boxes import Box


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
    """Boolean mask of the voxels inside any of ``boxes`` (only those of ``label`` when given)."""
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        if label is None or box.label == label:
            mask[box.slices] = True
    return mask
