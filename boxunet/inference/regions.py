"""Sliding-window prediction of the regions around boxes only.

Stage 2 of the box trainer needs its group networks' answers inside the boxes, not in the whole volume: each
box grows by a margin of context on every side, to at least one patch where the image allows, overlapping
regions merge, and only those regions are predicted. Voxels outside every region get a fixed background
answer.
"""
import torch

from boxunet.inference.sliding_window import predict_sliding_window
from boxunet.io.boxes import Box

OUTSIDE_LOGIT = 10.0  # outside the regions: +this for background, -this for every other output


def _grown(box: Box, shape, margin, minimum) -> list[list[int]]:
    """``box`` grown by ``margin`` per axis, then evenly to at least ``minimum``, within ``shape``; [start, stop]."""
    bounds = []
    for low, high, size, grow, least in zip(box.min, box.max, shape, margin, minimum):
        low, high = max(0, low - grow), min(size, high + grow)
        length = max(high - low, min(least, size))
        low = min(max(0, low - (length - (high - low)) // 2), size - length)
        bounds.append([low, low + length])
    return bounds


def _overlap(a: list[list[int]], b: list[list[int]]) -> bool:
    return all(a_low < b_high and b_low < a_high for (a_low, a_high), (b_low, b_high) in zip(a, b))


def box_regions(boxes: list[Box], shape, patch_size, margin) -> list[tuple[slice, ...]]:
    """The regions to predict for ``boxes`` of an image of spatial ``shape``: each box plus ``margin`` voxels per
    axis, at least ``patch_size`` (with a leading 1 for 2D patches on 3D data), overlapping regions merged into
    their bounding region; sorted. No boxes, no regions."""
    shape = tuple(int(s) for s in shape)
    leading = len(shape) - len(patch_size)
    minimum = (1,) * leading + tuple(int(p) for p in patch_size)
    margin = (0,) * leading + tuple(int(m) for m in margin)
    regions = [_grown(box, shape, margin, minimum) for box in boxes]
    while True:
        pair = next(((i, j) for i in range(len(regions)) for j in range(i + 1, len(regions))
                     if _overlap(regions[i], regions[j])), None)
        if pair is None:
            break
        i, j = pair
        regions[i] = [[min(a[0], b[0]), max(a[1], b[1])] for a, b in zip(regions[i], regions[j])]
        del regions[j]
    return sorted(tuple(slice(low, high) for low, high in region) for region in regions)


def predict_box_regions(network, data: torch.Tensor, boxes: list[Box], patch_size, num_outputs: int, margin,
                        **sliding_window_options) -> torch.Tensor:
    """Logits (num_outputs, *spatial), float32 on the CPU, of ``data`` (C, *spatial): the sliding window over
    ``box_regions(boxes, ...)``, ``OUTSIDE_LOGIT`` background elsewhere. ``sliding_window_options`` go to
    ``predict_sliding_window`` (step size, mirroring, device, precision)."""
    logits = torch.full((num_outputs,) + tuple(data.shape[1:]), -OUTSIDE_LOGIT, dtype=torch.float32)
    logits[0] = OUTSIDE_LOGIT
    for region in box_regions(boxes, data.shape[1:], patch_size, margin):
        logits[(slice(None),) + region] = predict_sliding_window(network, data[(slice(None),) + region], patch_size,
                                                                 num_outputs, **sliding_window_options)
    return logits
