"""Per-slice landmark and boundary heatmaps: the regression targets of [Zhang 2019]'s multi-task branches.

Both are built slice by slice along axis 0 (the transverse slices of a (z, y, x) array): ones are put at
the chosen pixels of a slice, the slice is smoothed with a 2D Gaussian of ``sigma`` pixels, and divided by
its maximum, so every slice that holds a point peaks at 1 and every other slice is 0.

* Landmarks (5 channels): for each kidney (a 3D connected component of the mask) and each slice it
  crosses, its left (smallest x), top (smallest y), right, bottom and center pixel. An extreme side is
  held by several pixels; the middle one (median of the other coordinate) is taken. The center is the
  rounded centroid of the kidney's pixels in the slice.
* Boundary (1 channel): the pixels of the mask that touch the background in their slice (4-connectivity).
"""
import cc3d
import numpy as np
from scipy.ndimage import binary_erosion, gaussian_filter

LANDMARKS = ("left", "top", "right", "bottom", "center")


def smoothed_slices(points: np.ndarray, sigma: float) -> np.ndarray:
    """float32 copy of ``points`` (z, y, x) smoothed in-plane with a Gaussian of ``sigma`` pixels, each
    non-empty slice divided by its maximum."""
    smoothed = gaussian_filter(np.asarray(points, dtype=np.float32), sigma=(0, sigma, sigma), mode="constant")
    peaks = smoothed.max(axis=(1, 2), keepdims=True)
    return np.divide(smoothed, peaks, out=np.zeros_like(smoothed), where=peaks > 0)


def _middle(values: np.ndarray) -> int:
    return int(np.sort(values)[(len(values) - 1) // 2])


def slice_landmarks(mask: np.ndarray) -> list[tuple[int, int]]:
    """(y, x) of the left, top, right, bottom and center pixel of a non-empty 2D mask (order of LANDMARKS)."""
    ys, xs = np.nonzero(mask)
    left, right, top, bottom = xs.min(), xs.max(), ys.min(), ys.max()
    return [(_middle(ys[xs == left]), int(left)), (int(top), _middle(xs[ys == top])),
            (_middle(ys[xs == right]), int(right)), (int(bottom), _middle(xs[ys == bottom])),
            (int(round(ys.mean())), int(round(xs.mean())))]


def landmark_heatmaps(mask: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    """float32 ``(5, z, y, x)`` landmark heatmaps of a 3D foreground mask (see the module docstring)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"landmark heatmaps need a 3D mask, got shape {mask.shape}")
    points = np.zeros((len(LANDMARKS), *mask.shape), dtype=np.float32)
    components = cc3d.connected_components(mask, connectivity=26)
    for component in range(1, int(components.max()) + 1):
        kidney = components == component
        for z in np.flatnonzero(kidney.any(axis=(1, 2))):
            for channel, (y, x) in enumerate(slice_landmarks(kidney[z])):
                points[channel, z, y, x] = 1.0
    return np.stack([smoothed_slices(channel, sigma) for channel in points])


def boundary_heatmap(mask: np.ndarray, sigma: float) -> np.ndarray:
    """float32 ``(1, z, y, x)`` heatmap of the in-slice boundary pixels of a 3D mask."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"boundary heatmaps need a 3D mask, got shape {mask.shape}")
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    boundary = mask & ~binary_erosion(mask, structure=in_plane, border_value=1)
    return smoothed_slices(boundary, sigma)[None]
