"""Surface distances of two boolean masks in the convention of DeepMind's ``surface-distance`` (the library the
official KiTS21/23 evaluation uses), computed faster and with numbers equal to it (to the last bit but for exact
ties between nearest elements).

Convention (``surface_distance.compute_surface_distances``):

- a mask's surface is made of surface elements: every corner point of the voxel grid whose 2 x 2 x 2 (2D: 2 x 2)
  neighbourhood holds some but not all mask voxels carries one, with the area in mm^2 (2D: the contour length in
  mm) of the marching-cubes surface through that neighbourhood, from the library's lookup table for the spacing;
  outside the image counts as outside the mask;
- every element of one surface gets the Euclidean distance in mm to the nearest element of the other;
- HD95 is the larger of the two directed 95th percentiles, each weighted by element area
  (``compute_robust_hausdorff(distances, 95)``);
- ASSD is the area-weighted mean of the distances of both directions pooled together, i.e. from the library's
  directed averages d_RP, d_PR and the surface areas A_R, A_P: (d_RP A_R + d_PR A_P) / (A_R + A_P);
- Surface Dice at tolerance t is the area of both surfaces within t of the other over their total area
  (``compute_surface_dice_at_tolerance``).

Both masks empty: NaN for every metric. Exactly one empty: HD95 and ASSD equal the image diagonal in mm (the worst
possible value), Surface Dice 0. (KiTS's own empty-case rules are in boxunet.evaluation.kits.)
"""
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import correlate
from scipy.spatial import cKDTree
from surface_distance import lookup_tables

from boxunet.cropping import mask_bbox


@dataclass(frozen=True)
class SurfaceDistances:
    """Each surface element's distance to the other surface (mm) and its area (mm^2, 2D: mm), per direction,
    ordered by (distance, area) as the library orders them."""

    reference_to_prediction: np.ndarray
    reference_areas: np.ndarray
    prediction_to_reference: np.ndarray
    prediction_areas: np.ndarray


def image_diagonal_mm(shape: tuple[int, ...], spacing) -> float:
    """Length in mm of the diagonal of an image of ``shape`` voxels of ``spacing`` mm."""
    return float(np.sqrt(np.sum((np.asarray(shape) * np.asarray(spacing, dtype=np.float64)) ** 2)))


def _area_table_and_kernel(spacing) -> tuple[np.ndarray, np.ndarray]:
    if len(spacing) == 3:
        return (lookup_tables.create_table_neighbour_code_to_surface_area(spacing),
                lookup_tables.ENCODE_NEIGHBOURHOOD_3D_KERNEL)
    return (lookup_tables.create_table_neighbour_code_to_contour_length(spacing),
            lookup_tables.ENCODE_NEIGHBOURHOOD_2D_KERNEL)


def _surface_elements(mask: np.ndarray, table: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid points (index array, one row each) and areas of ``mask``'s surface elements; ``mask`` is already cropped
    with one empty voxel appended along every axis, so the neighbourhoods at the far border are whole."""
    codes = correlate(mask.view(np.uint8), kernel, mode="constant", cval=0)
    on_surface = (codes != 0) & (codes != kernel.sum())
    return np.argwhere(on_surface), table[codes[on_surface]]


def _crops(reference: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to the bounding box of their union, one empty voxel appended along every axis."""
    window = tuple(slice(lo, hi) for lo, hi in mask_bbox(reference | prediction))
    padding = [(0, 1)] * reference.ndim
    return np.pad(reference[window], padding), np.pad(prediction[window], padding)


def _nearest_distances(points: np.ndarray, targets: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distance in mm from each grid point to the nearest target: found with a k-d tree, then computed from the
    index offsets in the order scipy's distance transform uses (axis by axis), so the floats are the library's
    (up to the last bit where two nearest targets tie at offsets that sum in another order)."""
    scale = np.asarray(spacing)
    nearest = cKDTree(targets * scale).query(points * scale, k=1)[1]
    offsets = (points - targets[nearest]).astype(np.float64)
    squared = np.zeros(len(points))
    for axis, step in enumerate(spacing):
        squared += (offsets[:, axis] * step) ** 2
    return np.sqrt(squared)


def _ordered(distances: np.ndarray, areas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((areas, distances))
    return distances[order], areas[order]


def surface_distances(reference: np.ndarray, prediction: np.ndarray, spacing) -> SurfaceDistances:
    """The surface elements of two non-empty boolean masks (2D or 3D, ``spacing`` in mm in array axis order) and
    their distances to the other surface: a k-d tree's nearest neighbours, the same distances as the library's
    Euclidean distance transforms."""
    spacing = tuple(float(s) for s in spacing)
    reference, prediction = np.asarray(reference, dtype=bool), np.asarray(prediction, dtype=bool)
    table, kernel = _area_table_and_kernel(spacing)
    reference_crop, prediction_crop = _crops(reference, prediction)
    reference_points, reference_areas = _surface_elements(reference_crop, table, kernel)
    prediction_points, prediction_areas = _surface_elements(prediction_crop, table, kernel)
    to_prediction = _nearest_distances(reference_points, prediction_points, spacing)
    to_reference = _nearest_distances(prediction_points, reference_points, spacing)
    return SurfaceDistances(*_ordered(to_prediction, reference_areas), *_ordered(to_reference, prediction_areas))


def _directed_percentile(distances: np.ndarray, areas: np.ndarray, percent: float) -> float:
    cumulative = np.cumsum(areas) / np.sum(areas)
    return float(distances[min(int(np.searchsorted(cumulative, percent / 100.0)), len(distances) - 1)])


def robust_hausdorff(distances: SurfaceDistances, percent: float = 95.0) -> float:
    """The larger of the two directed area-weighted ``percent``-th percentiles of the distances."""
    return max(_directed_percentile(distances.reference_to_prediction, distances.reference_areas, percent),
               _directed_percentile(distances.prediction_to_reference, distances.prediction_areas, percent))


def average_symmetric_surface_distance(distances: SurfaceDistances) -> float:
    """The area-weighted mean distance of both surfaces' elements pooled."""
    weighted = (np.sum(distances.reference_to_prediction * distances.reference_areas)
                + np.sum(distances.prediction_to_reference * distances.prediction_areas))
    return float(weighted / (np.sum(distances.reference_areas) + np.sum(distances.prediction_areas)))


def surface_dice(distances: SurfaceDistances, tolerance_mm: float) -> float:
    """The area of both surfaces within ``tolerance_mm`` of the other, over their total area."""
    within = (np.sum(distances.reference_areas[distances.reference_to_prediction <= tolerance_mm])
              + np.sum(distances.prediction_areas[distances.prediction_to_reference <= tolerance_mm]))
    return float(within / (np.sum(distances.reference_areas) + np.sum(distances.prediction_areas)))


def surface_metrics(reference: np.ndarray, prediction: np.ndarray, spacing, tolerance_mm: float | None = None,
                    distances: SurfaceDistances | None = None,
                    image_shape: tuple[int, ...] | None = None) -> dict[str, float]:
    """``{"HD95", "ASSD"}`` in mm and, with ``tolerance_mm``, ``"SurfaceDice"`` of two boolean masks of the same
    2D or 3D shape, with the empty-mask rules of the module docstring; ``distances``: the masks' surface distances
    when already computed; ``image_shape``: the whole image's when the masks are a crop of it."""
    reference_empty, prediction_empty = not reference.any(), not prediction.any()
    if reference_empty and prediction_empty:
        metrics = {"HD95": float("nan"), "ASSD": float("nan"), "SurfaceDice": float("nan")}
    elif reference_empty or prediction_empty:
        worst = image_diagonal_mm(image_shape or reference.shape, spacing)
        metrics = {"HD95": worst, "ASSD": worst, "SurfaceDice": 0.0}
    else:
        distances = distances or surface_distances(reference, prediction, spacing)
        metrics = {"HD95": robust_hausdorff(distances), "ASSD": average_symmetric_surface_distance(distances)}
        if tolerance_mm is not None:
            metrics["SurfaceDice"] = surface_dice(distances, tolerance_mm)
    if tolerance_mm is None:
        metrics.pop("SurfaceDice", None)
    return metrics
