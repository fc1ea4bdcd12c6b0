"""Patch samplers whose seg channels come from boxes or from stored targets (the box trainers).

The preprocessed label map of a box dataset holds its dense labels only (box labels are removed);
the boxes are in each case's properties on the same grid. These samplers build the training label
channels of a patch from that:

* ``BoxFillSampler``: every box voxel without a dense label takes its box's label;
* ``BoxIgnoreSampler``: labels as stored, plus a channel that is 1 where the label is known (outside
  the boxes, or densely labelled) and 0 inside boxes, where the loss ignores the voxel;
* ``StoredTargetSampler``: the label (and weight) channels of a target store (boxunet.preprocessing.grid_labels),
  e.g. stage-1 pseudo masks or stage-2 fusion masks with their voxel weights;
* ``IgnoreBoxBackgroundSampler``: a stored label map plus a known channel that is 0 on the box voxels it
  calls background (seed 002: background inside a box is not trusted).
"""
import numpy as np

from boxunet.io.boxes import case_boxes
from boxunet.training.data.sampler import PatchSampler, read_region


def _box_slices_in_region(box, region) -> tuple[slice, ...] | None:
    """The part of ``box`` inside ``region`` (a (start, stop) per axis) in region coordinates, or None."""
    slices = []
    for lo, hi, (start, stop) in zip(box.min, box.max, region):
        a, b = max(lo, start), min(hi, stop)
        if a >= b:
            return None
        slices.append(slice(a - start, b - start))
    return tuple(slices)


def boxes_in_region(properties: dict, region, shape_2d: bool) -> list[tuple[int, np.ndarray]]:
    """(label, mask) per box label present: the voxels of the sampled region inside its boxes."""
    size = tuple(stop - start for start, stop in region)
    masks: dict[int, np.ndarray] = {}
    for box in case_boxes(properties):
        inside = _box_slices_in_region(box, region)
        if inside is not None:
            masks.setdefault(box.label, np.zeros(size, dtype=bool))[inside] = True
    return [(label, mask[0] if shape_2d else mask) for label, mask in sorted(masks.items())]


class BoxFillSampler(PatchSampler):
    """Box voxels without a dense label take their box's label (the BoxFill baseline)."""

    def seg_channels(self, seg, properties, region):
        filled = seg.copy()
        for label, mask in boxes_in_region(properties, region, len(self.patch_size) == 2):
            filled[0][mask & (filled[0] == 0)] = label
        return filled


def with_known_channel(labels: np.ndarray, properties: dict, region, shape_2d: bool) -> np.ndarray:
    """``labels`` ``(1, *patch)`` plus a channel that is 0 on box voxels whose label is background, 1 elsewhere."""
    known = np.ones_like(labels[0])
    for _, mask in boxes_in_region(properties, region, shape_2d):
        known[mask & (labels[0] == 0)] = 0
    return np.concatenate([labels, known[None]])


class BoxIgnoreSampler(PatchSampler):
    """Channel 1 marks known voxels: 0 inside boxes (unless densely labelled), 1 elsewhere."""

    def seg_channels(self, seg, properties, region):
        return with_known_channel(seg, properties, region, len(self.patch_size) == 2)


class StoredTargetSampler(PatchSampler):
    """Seg channels read from ``target_folder`` (label map, optional weight map) instead of the case's labels."""

    def __init__(self, *args, target_folder, **kwargs):
        super().__init__(*args, **kwargs)
        self.target_folder = target_folder

    def seg_channels(self, seg, properties, region):
        target = read_region(self.stored_target(self.target_folder, properties["case_id"]), region, -1)
        if len(self.patch_size) == 2:
            target = target[:, 0]
        target = target.astype(seg.dtype, copy=True)
        target[0][seg[0] < 0] = -1  # keep the outside-of-nonzero-mask marker of the stored labels
        return target


class IgnoreBoxBackgroundSampler(StoredTargetSampler):
    """The stored label map, and channel 1: 0 on the box voxels the stored map calls background, 1 elsewhere."""

    def seg_channels(self, seg, properties, region):
        target = super().seg_channels(seg, properties, region)[:1]
        return with_known_channel(target, properties, region, len(self.patch_size) == 2)
