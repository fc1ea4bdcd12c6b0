"""Target spacing with nnU-Net's anisotropy rule, and the transpose that puts the coarsest axis first."""
import numpy as np

ANISOTROPY_RATIO = 3.0
LOW_RESOLUTION_AXIS_PERCENTILE = 10


def target_spacing(spacings: list[list[float]], shapes: list[list[int]]) -> list[float]:
    """Per-axis median spacing; a strongly anisotropic axis gets the 10th percentile of its spacings.

    An axis is treated as anisotropic when its median spacing is more than 3x the largest other
    median spacing and its median size times 3 is below the smallest other median size. Its target
    is then never finer than the largest other spacing (plus 1e-5).
    """
    spacings = np.asarray(spacings, dtype=np.float64)
    shapes = np.asarray(shapes, dtype=np.float64)
    target = np.median(spacings, axis=0)
    median_shape = np.median(shapes, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(len(target)) if a != worst]
    anisotropic_spacing = target[worst] > ANISOTROPY_RATIO * max(target[others])
    few_slices = median_shape[worst] * ANISOTROPY_RATIO < min(median_shape[others])
    if anisotropic_spacing and few_slices:
        low_resolution = float(np.percentile(spacings[:, worst], LOW_RESOLUTION_AXIS_PERCENTILE))
        finest_allowed = float(max(target[others]))
        if low_resolution < finest_allowed:
            low_resolution = finest_allowed + 1e-5
        target[worst] = low_resolution
    return [float(s) for s in target]


def transpose_for(spacing: list[float]) -> tuple[list[int], list[int]]:
    """Axis order that puts the coarsest axis first (others keep their order), and its inverse."""
    coarsest = int(np.argmax(spacing))
    forward = [coarsest] + [axis for axis in range(len(spacing)) if axis != coarsest]
    backward = [int(i) for i in np.argsort(forward)]
    return forward, backward

