"""Patch samplers whose targets come from boxes or from stored targets (the box trainers).

The preprocessed label map of a box dataset holds its dense labels only (box labels are removed);
the boxes are in each case's properties on the same grid. These samplers build a patch's targets from
that (named targets: boxunet.training.data.sampler):

* ``BoxFillSampler``: every box voxel without a dense label takes its box's label;
* ``BoxIgnoreSampler``: labels as stored, and ``ignore`` on the box voxels without a dense label;
* ``StoredTargetSampler``: the label map (and, when asked, the ``weights``) of a target store
  (boxunet.preprocessing.grid_labels), e.g. stage-1 pseudo masks or stage-2 fusion masks with their voxel weights;
* ``IgnoreBoxBackgroundSampler``: a stored label map, and ``ignore`` on the box voxels it calls background
  ([Fan 2022]: background inside a box is not trusted).
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
    """``labels`` ``(1, *patch)`` plus the ``ignore`` target as it travels (its complement): 0 on box voxels whose
    label is background, 1 elsewhere."""
    known = np.ones_like(labels[0])
    for _, mask in boxes_in_region(properties, region, shape_2d):
        known[mask & (labels[0] == 0)] = 0
    return np.concatenate([labels, known[None]])


class BoxIgnoreSampler(PatchSampler):
    """The loss ignores the voxels inside boxes, unless densely labelled."""

    extra_targets = ("ignore",)

    def seg_channels(self, seg, properties, region):
        return with_known_channel(seg, properties, region, len(self.patch_size) == 2)


class StoredTargetSampler(PatchSampler):
    """Targets read from ``target_folder`` instead of the case's labels: its label map, and with ``weights`` its
    weight map as the ``weights`` target."""

    def __init__(self, *args, target_folder, weights: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.target_folder = target_folder
        self.extra_targets = ("weights",) if weights else ()

    def stored_channels(self, seg, properties, region, count: int) -> np.ndarray:
        """The first ``count`` channels of the stored target in ``region`` (label map first), with the label map's
        marker of voxels outside the nonzero mask (-1) kept from ``seg``."""
        target = read_region(self.stored_target(self.target_folder, properties["case_id"]), region, -1)[:count]
        if len(self.patch_size) == 2:
            target = target[:, 0]
        target = target.astype(seg.dtype, copy=True)
        target[0][seg[0] < 0] = -1
        return target

    def seg_channels(self, seg, properties, region):
        return self.stored_channels(seg, properties, region, 1 + len(self.extra_targets))


class IgnoreBoxBackgroundSampler(StoredTargetSampler):
    """The stored label map; the loss ignores the box voxels it calls background."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.extra_targets = ("ignore",)

    def seg_channels(self, seg, properties, region):
        return with_known_channel(self.stored_channels(seg, properties, region, 1), properties, region,
                                  len(self.patch_size) == 2)
