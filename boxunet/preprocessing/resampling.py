"""Separable resampling with torch (fast, multi-threaded, memory bounded by chunking).

Images are resampled in two passes: first the plane of the two in-plane axes (cubic for order 3,
linear for order 1, nearest for order 0), then the remaining axis. With the separate-z rule (an
anisotropic spacing with one clearly coarser axis) that axis is the coarse one and uses ``order_z``
(nearest by default), which avoids interpolating across thick slices. Otherwise it is axis 0 and uses
the same order as the plane. Cubic here is Keys' cubic convolution (a = -0.75), applied separably;
sample positions follow pixel centres (``align_corners=False``), so a resampled image covers exactly
the physical extent of the original. Label maps are resampled one label at a time as soft masks
(order 1) and thresholded at 0.5.
"""
import numpy as np
import torch
import torch.nn.functional as F

CHUNK_ELEMENTS = 32 * 1024 * 1024
_MODES_2D = {0: "nearest-exact", 1: "bilinear", 3: "bicubic"}


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


def _check_order(order: int) -> str:
    if order not in _MODES_2D:
        raise ValueError(f"interpolation order must be 0, 1 or 3, got {order}")
    return _MODES_2D[order]


def _resample_plane(volume: np.ndarray, size: tuple[int, int], order: int) -> np.ndarray:
    """Resample axes 1 and 2 of a (n, y, x) float32 volume, chunked along axis 0."""
    mode = _check_order(order)
    n = volume.shape[0]
    if tuple(volume.shape[1:]) == tuple(size):
        return volume
    out = np.empty((n,) + tuple(size), dtype=np.float32)
    step = max(1, CHUNK_ELEMENTS // max(1, int(np.prod(volume.shape[1:])) + int(np.prod(size))))
    kwargs = {} if order == 0 else {"align_corners": False}
    for start in range(0, n, step):
        chunk = torch.from_numpy(np.ascontiguousarray(volume[start:start + step], dtype=np.float32))[:, None]
        out[start:start + step] = F.interpolate(chunk, size=size, mode=mode, **kwargs)[:, 0].numpy()
    return out


def _resample_axis0(volume: np.ndarray, length: int, order: int) -> np.ndarray:
    """Resample axis 0 of a (z, y, x) float32 volume; the other axes are treated as one, chunked."""
    if volume.shape[0] == length:
        return volume
    z, rest = volume.shape[0], volume.shape[1:]
    flat = volume.reshape(z, -1)
    if order == 0:
        source = np.minimum(((np.arange(length) + 0.5) * z / length).astype(np.int64), z - 1)
        return np.ascontiguousarray(volume[source])
    mode = _check_order(order)
    out = np.empty((length, flat.shape[1]), dtype=np.float32)
    step = max(1, CHUNK_ELEMENTS // (z + length))
    for start in range(0, flat.shape[1], step):
        chunk = torch.from_numpy(np.ascontiguousarray(flat[:, start:start + step]))[None, None]
        out[:, start:start + step] = F.interpolate(chunk, size=(length, chunk.shape[-1]), mode=mode,
                                                   align_corners=False)[0, 0].numpy()
    return out.reshape((length,) + tuple(rest))


def resample_volume(volume: np.ndarray, new_shape, order: int, separate_axis: int | None = None,
                    order_z: int = 0, keep_plane_result: bool = False):
    """Resample one (z, y, x) volume to ``new_shape`` (float32).

    The plane pass covers the two axes other than ``separate_axis`` (axis 0 when None); that axis then
    uses ``order_z`` when it is a separate axis, else ``order``. With ``keep_plane_result`` the result
    after the plane pass (the 2D-configuration resampling) is returned too.
    """
    axis = 0 if separate_axis is None else separate_axis
    moved = np.moveaxis(np.asarray(volume, dtype=np.float32), axis, 0)
    new_moved = [new_shape[axis]] + [new_shape[a] for a in range(3) if a != axis]
    plane = _resample_plane(moved, tuple(new_moved[1:]), order)
    full = _resample_axis0(plane, new_moved[0], order if separate_axis is None else order_z)
    full = np.ascontiguousarray(np.moveaxis(full, 0, axis))
    if keep_plane_result:
        return full, np.ascontiguousarray(np.moveaxis(plane, 0, axis))
    return full


def resample_segmentation(seg: np.ndarray, new_shape, order: int = 1, separate_axis: int | None = None,
                          order_z: int = 0, keep_plane_result: bool = False):
    """Resample a (z, y, x) integer label map label by label (soft masks thresholded at 0.5), as int8."""
    values = [v for v in np.unique(seg) if v != 0]
    full = np.zeros(new_shape, dtype=np.int8)
    plane_shape = list(new_shape)
    axis = 0 if separate_axis is None else separate_axis
    plane_shape[axis] = seg.shape[axis]
    plane = np.zeros(plane_shape, dtype=np.int8) if keep_plane_result else None
    for value in values:
        mask = (seg == value).astype(np.float32)
        resampled = resample_volume(mask, new_shape, order, separate_axis, order_z, keep_plane_result)
        if keep_plane_result:
            resampled, plane_mask = resampled
            plane[plane_mask >= 0.5] = value
        full[resampled >= 0.5] = value
    return (full, plane) if keep_plane_result else full


def resample_channels(data: np.ndarray, new_shape, order: int, separate_axis: int | None = None,
                      order_z: int = 0, keep_plane_result: bool = False):
    """Resample every channel of a (c, z, y, x) array (see ``resample_volume``)."""
    full = np.empty((len(data),) + tuple(new_shape), dtype=np.float32)
    plane = None
    for index, channel in enumerate(data):
        result = resample_volume(channel, new_shape, order, separate_axis, order_z, keep_plane_result)
        if keep_plane_result:
            result, plane_result = result
            if plane is None:
                plane = np.empty((len(data),) + plane_result.shape, dtype=np.float32)
            plane[index] = plane_result
        full[index] = result
    return (full, plane) if keep_plane_result else full
