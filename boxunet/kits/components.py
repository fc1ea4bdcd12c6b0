"""Connected-component rules of the KiTS variants.

* ``remove_small_slice_components`` ([Zhang 2019]'s tumor postprocessing): in every slice along axis 0, keep
  only the 2D components (8-connectivity) larger than ``min_area_mm2``. [Zhang 2019] keeps components of more
  than 64 pixels at 0.78 x 0.78 mm, i.e. 38.9 mm2, given in mm2 so that it carries over to any spacing.
* ``keep_connected_to`` ([KiTS19 coarse-to-fine]): of lesions found outside a region of interest, keep only those that
  touch it (26-connectivity).
"""
import cc3d
import numpy as np

SEED_001_MIN_SLICE_AREA_MM2 = 64 * 0.78 * 0.78


def remove_small_slice_components(mask: np.ndarray, in_plane_spacing,
                                  min_area_mm2: float = SEED_001_MIN_SLICE_AREA_MM2) -> np.ndarray:
    """Boolean copy of a 3D mask without the 2D components of at most ``min_area_mm2`` in any slice
    (``in_plane_spacing``: the (y, x) spacing in mm)."""
    mask = np.asarray(mask, dtype=bool)
    largest_removed = int(np.floor(min_area_mm2 / float(np.prod(in_plane_spacing)) + 1e-9))
    kept = np.zeros_like(mask)
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        kept[z] = cc3d.dust(mask[z], threshold=largest_removed + 1, connectivity=8, in_place=False)
    return kept


def keep_connected_to(lesions: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Boolean copy of ``lesions`` keeping only the voxels inside ``region`` and the lesion components that
    touch ``region`` (components of lesions | region that contain a region voxel)."""
    lesions, region = np.asarray(lesions, dtype=bool), np.asarray(region, dtype=bool)
    if lesions.shape != region.shape:
        raise ValueError(f"lesion mask {lesions.shape} and region {region.shape} differ in shape")
    components = cc3d.connected_components(lesions | region, connectivity=26)
    touching = np.unique(components[region])
    return lesions & np.isin(components, touching[touching > 0])
