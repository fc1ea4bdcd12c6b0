"""Spacing-aware surface distances of two boolean masks: HD95 and ASSD in mm, and Surface Dice.

Convention:

- the surface of a mask is its voxels with at least one face neighbour (6-neighbourhood in 3D,
  4-neighbourhood in 2D) outside the mask; the image border counts as outside;
- every surface voxel of A gets the Euclidean distance in mm (``spacing`` in array axis order) to the
  nearest surface voxel of B, and every surface voxel of B the distance to the nearest one of A;
- HD95 is the larger of the two directed 95th percentiles (``np.percentile``, linear interpolation);
- ASSD is the mean of the distances of both directions pooled together;
- both masks empty: NaN for both (skipped in means, like Dice); exactly one empty: both equal the image
  diagonal in mm, the worst possible value, so a missed or hallucinated structure is penalised.
"""
import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with a face neighbour outside the mask (the image border counts as outside)."""
    face_neighbours = generate_binary_structure(mask.ndim, 1)
    return mask & ~binary_erosion(mask, structure=face_neighbours, border_value=0)


def image_diagonal_mm(shape: tuple[int, ...], spacing) -> float:
    """Length in mm of the diagonal of an image of ``shape`` voxels of ``spacing`` mm."""
    return float(np.sqrt(np.sum((np.asarray(shape) * np.asarray(spacing, dtype=np.float64)) ** 2)))


def _union_crop(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...]:
    # The crop is exact. Every surface voxel of either mask lies in the union bounding box, and the EDT
    # gives true Euclidean distances (not path lengths inside the crop), so a domain holding all surface
    # voxels yields the same nearest-surface distances as the whole image. The one-voxel margin keeps
    # every face neighbour of a mask voxel inside the crop, so the surface found in the crop is the one of
    # the whole image; where the margin is cut off by the image border, that border is outside in both.
    coordinates = np.nonzero(a | b)
    return tuple(slice(max(int(c.min()) - 1, 0), int(c.max()) + 2) for c in coordinates)


def directed_surface_distances(reference: np.ndarray, prediction: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from every surface voxel of ``reference`` to the surface of ``prediction``, and back;
    both masks must be non-empty."""
    crop = _union_crop(reference, prediction)
    reference_surface, prediction_surface = surface_voxels(reference[crop]), surface_voxels(prediction[crop])
    to_prediction = distance_transform_edt(~prediction_surface, sampling=spacing)[reference_surface]
    to_reference = distance_transform_edt(~reference_surface, sampling=spacing)[prediction_surface]
    return to_prediction, to_reference


def surface_dice(reference: np.ndarray, prediction: np.ndarray, spacing, tolerance_mm: float) -> float:
    """Surface Dice (normalized surface distance) at ``tolerance_mm``: the fraction of the surface voxels of
    both masks that lie within the tolerance of the other mask's surface. Counts voxels (each surface voxel
    weighs the same) rather than surfel areas as DeepMind's surface-distance does. NaN when both masks are
    empty, 0 when exactly one is."""
    if not reference.any() and not prediction.any():
        return float("nan")
    if not reference.any() or not prediction.any():
        return 0.0
    to_prediction, to_reference = directed_surface_distances(reference, prediction, spacing)
    within = np.count_nonzero(to_prediction <= tolerance_mm) + np.count_nonzero(to_reference <= tolerance_mm)
    return float(within / (to_prediction.size + to_reference.size))


def surface_distance_metrics(reference: np.ndarray, prediction: np.ndarray, spacing) -> dict[str, float]:
    """``{"HD95": .., "ASSD": ..}`` in mm of two boolean masks of the same 2D or 3D shape."""
    reference_empty, prediction_empty = not reference.any(), not prediction.any()
    if reference_empty and prediction_empty:
        return {"HD95": float("nan"), "ASSD": float("nan")}
    if reference_empty or prediction_empty:
        worst = image_diagonal_mm(reference.shape, spacing)
        return {"HD95": worst, "ASSD": worst}
    to_prediction, to_reference = directed_surface_distances(reference, prediction, spacing)
    hd95 = max(np.percentile(to_prediction, 95), np.percentile(to_reference, 95))
    assd = np.concatenate([to_prediction, to_reference]).mean()
    return {"HD95": float(hd95), "ASSD": float(assd)}
