"""Crop to the nonzero region (shared by fingerprint, preprocessing and inference).

The mask is the union over channels of nonzero voxels with holes filled; the crop is its bounding box.
Label voxels outside the mask that are background are marked -1 so that samplers and losses can tell
"outside the body" from "labelled background".
"""
import numpy as np
from scipy.ndimage import binary_fill_holes

OUTSIDE_NONZERO = -1


def nonzero_mask(data: np.ndarray) -> np.ndarray:
    """Union over channels of nonzero voxels of a (c, z, y, x) array, holes filled."""
    mask = np.any(data != 0, axis=0)
    if mask.all():
        return mask
    return binary_fill_holes(mask)


def mask_bbox(mask: np.ndarray) -> list[list[int]]:
    """Bounding box ``[[lo, hi], ...]`` (hi exclusive) of the True voxels of a non-empty mask."""
    bbox = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))
        bbox.append([int(present[0]), int(present[-1]) + 1])
    return bbox


def nonzero_bbox(data: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    """Bounding box ``[[lo, hi], ...]`` (hi exclusive) of the nonzero mask of ``data``, and the mask."""
    mask = nonzero_mask(data)
    if mask.all() or not mask.any():
        return [[0, s] for s in mask.shape], mask
    return mask_bbox(mask), mask


def crop_to_nonzero(data: np.ndarray, seg: np.ndarray | None = None):
    """Crop (c, z, y, x) ``data`` and (1, z, y, x) ``seg`` to the nonzero bbox; return data, seg, bbox.

    Background label voxels outside the nonzero mask become -1. When no seg is given, one is made
    that holds -1 outside the mask and 0 inside. A given seg is modified in place.
    """
    bbox, mask = nonzero_bbox(data)
    region = tuple(slice(lo, hi) for lo, hi in bbox)
    data = data[(slice(None),) + region]
    mask = mask[region]
    if seg is None:
        seg = np.zeros((1,) + data.shape[1:], dtype=np.int8)
    else:
        seg = seg[(slice(None),) + region]
    if not mask.all():
        seg[(seg == 0) & ~mask[None]] = OUTSIDE_NONZERO
    return data, seg, bbox
