"""Map boxes from the raw image grid to the preprocessed grid (transpose, crop, resample)."""
import math

from boxunet.io.boxes import Box


def box_to_preprocessed(box: Box, transpose_forward: list[int], crop_bbox: list[list[int]],
                        shape_after_crop: list[int], shape_after_resampling: list[int]) -> Box | None:
    """The box in preprocessed voxel indices, or None when it lies entirely outside the cropped region.

    ``crop_bbox`` and the shapes are in transposed axis order. The resampled box is the smallest
    voxel box covering the original box's physical extent (min floored, max ceiled).
    """
    lower, upper = [], []
    for axis, raw_axis in enumerate(transpose_forward):
        start, stop = crop_bbox[axis]
        lo = min(max(box.min[raw_axis], start), stop) - start
        hi = min(max(box.max[raw_axis], start), stop) - start
        if hi <= lo:
            return None
        scale = shape_after_resampling[axis] / shape_after_crop[axis]
        new_lo = min(int(math.floor(lo * scale + 1e-6)), shape_after_resampling[axis] - 1)
        new_hi = max(int(math.ceil(hi * scale - 1e-6)), new_lo + 1)
        lower.append(new_lo)
        upper.append(min(new_hi, shape_after_resampling[axis]))
    return Box(box.label, tuple(lower), tuple(upper))

