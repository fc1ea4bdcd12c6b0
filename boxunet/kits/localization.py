"""The region of interest of [Zhang 2019]'s localization stage.

The localization network segments kidney and tumor as one class on a coarse grid and regresses the
landmark heatmaps (boxunet.kits.heatmaps). Its segmentation box is used unless its transverse width (the
extent along x, across both kidneys) disagrees with the landmark box's by more than ``width_tolerance``
(a fraction of the larger width): a segmentation that misses one kidney is narrower than the landmarks,
which always span both. The box is then mapped to the full-resolution grid and expanded by a margin.
"""
import numpy as np

from boxunet.cropping import mask_bbox

LANDMARK_THRESHOLD = 0.5
WIDTH_TOLERANCE = 0.2
# [Zhang 2019] expands boxes by 16 x 128 x 128 voxels at 3 x 0.78 x 0.78 mm, i.e. about 24 / 50 / 50 mm a side
ROI_MARGIN_MM = (24.0, 50.0, 50.0)


def landmark_box(heatmaps: np.ndarray, threshold: float = LANDMARK_THRESHOLD) -> list[list[int]] | None:
    """Bounding box ``[[lo, hi], ...]`` of the voxels where any landmark heatmap ``(5, *shape)`` exceeds
    ``threshold``; None when none does."""
    peaks = np.asarray(heatmaps).max(axis=0) > threshold
    return mask_bbox(peaks) if peaks.any() else None


def choose_box(segmentation_box: list[list[int]] | None, landmark_box_: list[list[int]] | None,
               width_tolerance: float = WIDTH_TOLERANCE) -> tuple[list[list[int]] | None, str]:
    """The box [Zhang 2019] crops to, and where it came from ("segmentation", "landmarks" or "none")."""
    if segmentation_box is None or landmark_box_ is None:
        chosen = segmentation_box or landmark_box_
        return chosen, "none" if chosen is None else ("segmentation" if segmentation_box else "landmarks")
    widths = [box[-1][1] - box[-1][0] for box in (segmentation_box, landmark_box_)]
    if abs(widths[0] - widths[1]) <= width_tolerance * max(widths):
        return segmentation_box, "segmentation"
    return landmark_box_, "landmarks"


def expand_box(box: list[list[int]], spacing, margin_mm, shape) -> list[list[int]]:
    """``box`` expanded by ``margin_mm`` per side (rounded up to whole voxels) and clipped to ``shape``."""
    return [[max(0, lo - int(np.ceil(m / s))), min(size, hi + int(np.ceil(m / s)))]
            for (lo, hi), s, m, size in zip(box, spacing, margin_mm, shape)]


def scale_box(box: list[list[int]], coarse_shape, fine_shape, fine_spacing,
              margin_mm=ROI_MARGIN_MM) -> list[list[int]]:
    """A box on a coarse grid mapped onto a fine grid covering the same extent (``fine_shape``), expanded by
    ``margin_mm`` per side and clipped to the grid."""
    scaled = [[int(np.floor(lo * fine / coarse)), int(np.ceil(hi * fine / coarse))]
              for (lo, hi), coarse, fine in zip(box, coarse_shape, fine_shape)]
    return expand_box(scaled, fine_spacing, margin_mm, fine_shape)
