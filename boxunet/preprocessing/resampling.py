"""Separable resampling in numpy, slab by slab so that memory stays bounded on large CTs.

Images are resampled one axis at a time: first the two in-plane axes, then the remaining axis. With
the separate-z rule (an anisotropic spacing with one clearly coarser axis) that axis is the coarse one
and uses ``order_z`` (nearest by default), which avoids interpolating across thick slices; otherwise it
is axis 0 and uses the same order as the plane. Order 3 is Keys' cubic convolution (a = -0.5), order 1
linear, order 0 nearest. Sample positions follow pixel centres, so a resampled image covers exactly the
physical extent of the original; samples beyond the border repeat the edge voxel. Label maps are
resampled one label at a time as soft masks (order 1) and thresholded at 0.5.

The output is produced in slabs along the remaining axis: each slab reads only the input slices its
interpolation taps need, converts them to float32 (optionally transformed, e.g. normalized), resamples
them in-plane and then along the axis. Besides input and output, memory holds one slab (about
``CHUNK_ELEMENTS`` voxels), so no full-size float copy of the input or of a label mask is ever made.
"""
from typing import Callable, Iterator

import numpy as np

CHUNK_ELEMENTS = 16 * 1024 * 1024
KEYS_A = -0.5  # Catmull-Rom: reproduces linear and quadratic signals exactly


def shape_at_spacing(shape, spacing, new_spacing) -> list[int]:
    """Shape of an image of ``shape`` at ``spacing`` once resampled to ``new_spacing`` (at least 1 per axis)."""
    return [max(1, int(round(s * sp / nsp))) for s, sp, nsp in zip(shape, spacing, new_spacing)]


def separate_z_axis(spacing, new_spacing, threshold: float = 3.0) -> int | None:
    """The coarse axis to resample on its own, or None.

    Applies when the original (or else the target) spacing is anisotropic (max/min > ``threshold``) and
    exactly one axis has the largest spacing.
    """
    for candidate in (spacing, new_spacing):
        candidate = np.asarray(candidate, dtype=np.float64)
        if candidate.max() / candidate.min() > threshold:
            coarse = np.flatnonzero(np.isclose(candidate, candidate.max()))
            return int(coarse[0]) if len(coarse) == 1 else None
    return None


def _keys_cubic(distance: np.ndarray) -> np.ndarray:
    d = np.abs(distance)
    near = ((KEYS_A + 2) * d - (KEYS_A + 3)) * d * d + 1
    far = ((KEYS_A * d - 5 * KEYS_A) * d + 8 * KEYS_A) * d - 4 * KEYS_A
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def interpolation_taps(length: int, new_length: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights, each (taps, new_length), to resample an axis of ``length`` samples."""
    scale = length / new_length
    centres = (np.arange(new_length) + 0.5) * scale - 0.5
    if order == 0:
        index = np.minimum(np.floor((np.arange(new_length) + 0.5) * scale).astype(np.int64), length - 1)
        return index[None], np.ones((1, new_length), dtype=np.float32)
    base = np.floor(centres).astype(np.int64)
    if order == 1:
        offsets = np.arange(0, 2)
        weights = 1.0 - np.abs(centres[None] - (base[None] + offsets[:, None]))
    elif order == 3:
        offsets = np.arange(-1, 3)
        weights = _keys_cubic(centres[None] - (base[None] + offsets[:, None]))
    else:
        raise ValueError(f"interpolation order must be 0, 1 or 3, got {order}")
    index = np.clip(base[None] + offsets[:, None], 0, length - 1)
    return index, weights.astype(np.float32)


def resample_axis(volume: np.ndarray, axis: int, new_length: int, order: int) -> np.ndarray:
    """Resample one axis of a float32 array; chunked along another axis to bound temporary memory."""
    if volume.shape[axis] == new_length:
        return volume
    index, weights = interpolation_taps(volume.shape[axis], new_length, order)
    new_shape = list(volume.shape)
    new_shape[axis] = new_length
    out = np.empty(new_shape, dtype=np.float32)
    chunk_axis = 0 if axis != 0 else 1
    if volume.ndim == 1:
        chunk_axis, step = 0, 1 << 62  # nothing to chunk along: one pass
    else:
        step = max(1, CHUNK_ELEMENTS * new_shape[chunk_axis] // max(1, int(np.prod(new_shape))))
    broadcast = [1] * volume.ndim
    broadcast[axis] = new_length
    for start in range(0, volume.shape[chunk_axis], step):
        region = [slice(None)] * volume.ndim
        region[chunk_axis] = slice(start, start + step)
        source = volume[tuple(region)]
        target = out[tuple(region)]
        np.multiply(np.take(source, index[0], axis=axis), weights[0].reshape(broadcast), out=target)
        for tap in range(1, len(index)):
            target += np.take(source, index[tap], axis=axis) * weights[tap].reshape(broadcast)
    return out


SlabReader = Callable[[tuple[slice, ...]], np.ndarray]


def _slabs(shape, read: SlabReader, new_shape, order: int, separate_axis: int | None,
           order_z: int) -> Iterator[tuple[int, int, np.ndarray, int, int, np.ndarray]]:
    """Yield ``(lo, hi, plane, start, stop, out)`` in axis-moved layout (the remaining axis first).

    ``plane`` holds input slices lo:hi resampled in-plane, ``out`` output slices start:stop.
    """
    axis = 0 if separate_axis is None else separate_axis
    length, new_length = shape[axis], new_shape[axis]
    plane_axes = [a for a in range(3) if a != axis]
    index, weights = interpolation_taps(length, new_length, order if separate_axis is None else order_z)
    if length == new_length:
        index, weights = np.arange(length)[None], np.ones((1, length), dtype=np.float32)
    per_slice = int(np.prod([shape[a] for a in plane_axes])) + int(np.prod([new_shape[a] for a in plane_axes]))
    step = max(1, CHUNK_ELEMENTS // per_slice)
    for start in range(0, new_length, step):
        stop = min(start + step, new_length)
        taps = index[:, start:stop]
        lo, hi = int(taps.min()), int(taps.max()) + 1
        region = tuple(slice(lo, hi) if a == axis else slice(None) for a in range(3))
        plane = np.moveaxis(read(region), axis, 0)
        for moved_axis, original_axis in ((1, plane_axes[0]), (2, plane_axes[1])):
            plane = resample_axis(plane, moved_axis, new_shape[original_axis], order)
        out = plane[taps[0] - lo] * weights[0, start:stop, None, None]
        for tap in range(1, len(taps)):
            out += plane[taps[tap] - lo] * weights[tap, start:stop, None, None]
        yield lo, hi, plane, start, stop, out


def _moved_shape(shape, axis: int) -> list[int]:
    return [shape[axis]] + [shape[a] for a in range(3) if a != axis]


def resample_volume(volume: np.ndarray, new_shape, order: int, separate_axis: int | None = None,
                    order_z: int = 0, keep_plane_result: bool = False, read: SlabReader | None = None):
    """Resample one (z, y, x) volume of any numeric dtype to ``new_shape`` (float32).

    The plane pass covers the two axes other than ``separate_axis`` (axis 0 when None); that axis then
    uses ``order_z`` when it is a separate axis, else ``order``. ``read(region)`` returns the float32
    input for ``volume[region]`` (default: the values as they are; e.g. normalized). With ``keep_plane_result`` the
    result after the plane pass (the 2D-configuration resampling) is returned too.
    """
    axis = 0 if separate_axis is None else separate_axis
    full = np.empty(_moved_shape(new_shape, axis), dtype=np.float32)
    plane_shape = _moved_shape(new_shape, axis)
    plane_shape[0] = volume.shape[axis]
    plane = np.empty(plane_shape, dtype=np.float32) if keep_plane_result else None
    read = read or (lambda region: volume[region].astype(np.float32))
    for lo, hi, plane_slab, start, stop, out in _slabs(volume.shape, read, new_shape, order, separate_axis, order_z):
        full[start:stop] = out
        if plane is not None:
            plane[lo:hi] = plane_slab
    full = np.moveaxis(full, 0, axis)
    return (full, np.moveaxis(plane, 0, axis)) if keep_plane_result else full


def resample_segmentation(seg: np.ndarray, new_shape, order: int = 1, separate_axis: int | None = None,
                          order_z: int = 0, keep_plane_result: bool = False):
    """Resample a (z, y, x) integer label map label by label (soft masks thresholded at 0.5), as int8."""
    axis = 0 if separate_axis is None else separate_axis
    full = np.zeros(_moved_shape(new_shape, axis), dtype=np.int8)
    plane_shape = _moved_shape(new_shape, axis)
    plane_shape[0] = seg.shape[axis]
    plane = np.zeros(plane_shape, dtype=np.int8) if keep_plane_result else None
    for value in (v for v in np.unique(seg) if v != 0):
        def read_mask(region, value=value):
            return (seg[region] == value).astype(np.float32)
        for lo, hi, plane_slab, start, stop, out in _slabs(seg.shape, read_mask, new_shape, order, separate_axis,
                                                           order_z):
            full[start:stop][out >= 0.5] = value
            if plane is not None:
                plane[lo:hi][plane_slab >= 0.5] = value
    full = np.moveaxis(full, 0, axis)
    return (full, np.moveaxis(plane, 0, axis)) if keep_plane_result else full


def resample_channels(data: np.ndarray, new_shape, order: int, separate_axis: int | None = None,
                      order_z: int = 0, keep_plane_result: bool = False, readers: list[SlabReader] | None = None):
    """Resample every channel of a (c, z, y, x) array (see ``resample_volume``); one optional reader per channel."""
    results = [resample_volume(channel, new_shape, order, separate_axis, order_z, keep_plane_result,
                               readers[index] if readers else None)
               for index, channel in enumerate(data)]
    if not keep_plane_result:
        return _stack(results)
    return _stack([r[0] for r in results]), _stack([r[1] for r in results])


def _stack(volumes: list[np.ndarray]) -> np.ndarray:
    return volumes[0][None] if len(volumes) == 1 else np.stack(volumes)
