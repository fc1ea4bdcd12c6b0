"""Counting kidneys and the abnormal-case rule of [KiTS19 coarse-to-fine].

A kidney is a connected component (26-connectivity) of the kidney mask (every kidney label, tumor and cyst
included) whose volume reaches ``min_volume_ml``. [KiTS19 coarse-to-fine] counts components of at least 10,000 voxels at
3 x 0.7816 x 0.7816 mm (18.3 ml, below the 154 +/- 33 ml of an adult kidney so that a partly segmented
kidney still counts, above the volume of noise); given in ml, the threshold carries over to any spacing.
A case whose count is not 2 is abnormal.
"""
import cc3d
import numpy as np

SEED_004_VOXELS, SEED_004_SPACING_MM = 10_000, (3.0, 0.7816, 0.7816)
MIN_KIDNEY_VOLUME_ML = SEED_004_VOXELS * float(np.prod(SEED_004_SPACING_MM)) / 1000.0
NORMAL_KIDNEY_COUNT = 2


def components_by_volume(mask: np.ndarray, spacing) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """The 26-connected components of a 3D mask (a label image) and their (label, volume in ml), largest first."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3 or len(spacing) != 3:
        raise ValueError(f"kidney counting needs a 3D mask and 3 spacings, got {mask.shape} and {spacing}")
    components, count = cc3d.connected_components(mask, connectivity=26, return_N=True)
    voxels = np.bincount(components.ravel(), minlength=count + 1)[1:]
    volumes = [(label + 1, float(v) * float(np.prod(spacing)) / 1000.0) for label, v in enumerate(voxels)]
    return components, sorted(volumes, key=lambda item: -item[1])


def kidney_check(mask: np.ndarray, spacing, min_volume_ml: float = MIN_KIDNEY_VOLUME_ML) -> dict:
    """``{"kidney_count", "abnormal", "kidney_volumes_ml"}`` of a kidney mask with voxel ``spacing`` (mm)."""
    volumes = [v for _, v in components_by_volume(mask, spacing)[1] if v >= min_volume_ml]
    return {"kidney_count": len(volumes), "abnormal": len(volumes) != NORMAL_KIDNEY_COUNT,
            "kidney_volumes_ml": [round(v, 2) for v in volumes]}


def kidney_components(mask: np.ndarray, spacing, min_volume_ml: float = MIN_KIDNEY_VOLUME_ML) -> list[np.ndarray]:
    """The kidneys of a mask as boolean masks, largest first: its components of at least ``min_volume_ml``, or
    the largest component when none is that large (none for an empty mask)."""
    components, volumes = components_by_volume(mask, spacing)
    kept = [label for label, volume in volumes if volume >= min_volume_ml] or [label for label, _ in volumes[:1]]
    return [components == label for label in kept]
