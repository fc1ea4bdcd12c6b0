"""Largest connected component of a mask, and its use on label maps (with connected-components-3d)."""
import cc3d
import numpy as np

CONNECTIVITIES = {2: (4, 8), 3: (6, 18, 26)}
BOX_DATASET_CONNECTIVITY = 18  # [Yang 2020]'s "3D MC": largest component with 18-connectivity


def default_connectivity(box_labels) -> int:
    """The connectivity of keep-largest-component decisions: 18 for box datasets ([Yang 2020]), else 26."""
    return BOX_DATASET_CONNECTIVITY if box_labels else 26


def keep_largest_component(mask: np.ndarray, connectivity: int) -> np.ndarray:
    """Boolean mask of the largest connected component of ``mask`` (all False when ``mask`` is empty).

    ``connectivity`` counts the neighbours that touch: 4 or 8 for 2D arrays, 6 (faces), 18 (and edges) or
    26 (and corners) for 3D arrays.
    """
    mask = np.asarray(mask, dtype=bool)
    if connectivity not in CONNECTIVITIES.get(mask.ndim, ()):
        raise ValueError(f"connectivity {connectivity} is not one of {CONNECTIVITIES.get(mask.ndim, ())} "
                         f"for a {mask.ndim}D array")
    return cc3d.largest_k(mask, k=1, connectivity=connectivity, binary_image=True) > 0


def remove_all_but_largest(segmentation: np.ndarray, labels_or_region: int | tuple[int, ...], connectivity: int,
                           background: int = 0) -> np.ndarray:
    """A copy of ``segmentation`` in which the voxels of ``labels_or_region`` (one label, or a tuple of labels
    taken together as one mask) outside the largest component of that mask are set to ``background``."""
    mask = np.isin(segmentation, np.asarray(labels_or_region).ravel())
    result = np.array(segmentation, copy=True)
    result[mask & ~keep_largest_component(mask, connectivity)] = background
    return result
