"""One case's reference and predicted label maps, with the boolean masks and surface distances of its labels or
regions computed once each (a KiTS HEC that is also an evaluated region, or a label that is its own region, shares
them)."""
import numpy as np

from boxunet.cropping import mask_bbox
from boxunet.evaluation.surface import SurfaceDistances, surface_distances

LabelOrRegion = int | tuple[int, ...]


def label_values(label_or_region: LabelOrRegion) -> tuple[int, ...]:
    """The label values a label (``2``) or region (``(1, 2)``) stands for, sorted."""
    return tuple(sorted(label_or_region)) if isinstance(label_or_region, (list, tuple)) else (label_or_region,)


def region_mask(labels: np.ndarray, label_or_region: LabelOrRegion) -> np.ndarray:
    """Voxels of ``labels`` whose value is the label, or any value of the region."""
    values = label_values(label_or_region)
    if len(values) == 1:
        return labels == values[0]
    if np.issubdtype(labels.dtype, np.integer) and values == tuple(range(values[0], values[-1] + 1)):
        # consecutive values of an integer map: two comparisons
        return (labels >= values[0]) & (labels <= values[-1])
    return np.isin(labels, values)


def _foreground_window(reference_labels: np.ndarray, predicted_labels: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of every non-zero voxel of either label map (empty slices when there is none)."""
    foreground = (reference_labels != 0) | (predicted_labels != 0)
    if not foreground.any():
        return (slice(0, 0),) * foreground.ndim
    return tuple(slice(lo, hi) for lo, hi in mask_bbox(foreground))


class CaseMasks:
    """The masks and surface distances of one case's labels or regions, computed when first asked for. Masks of
    labels and regions without the background are cut to the bounding box of both maps' foreground (``shape`` is
    the whole image's): their counts and surfaces are those of the whole image."""

    def __init__(self, reference_labels: np.ndarray, predicted_labels: np.ndarray, spacing):
        self.reference_labels, self.predicted_labels, self.spacing = reference_labels, predicted_labels, spacing
        self.shape = reference_labels.shape
        window = _foreground_window(reference_labels, predicted_labels)
        self._foreground = reference_labels[window], predicted_labels[window]
        self._masks: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
        self._distances: dict[tuple[int, ...], SurfaceDistances] = {}

    def pair(self, label_or_region: LabelOrRegion) -> tuple[np.ndarray, np.ndarray]:
        """The (reference, prediction) boolean masks of a label or region: of the whole image when it holds the
        background (0), else of the foreground's bounding box."""
        key = label_values(label_or_region)
        if key not in self._masks:
            maps = (self.reference_labels, self.predicted_labels) if 0 in key else self._foreground
            self._masks[key] = (region_mask(maps[0], key), region_mask(maps[1], key))
        return self._masks[key]

    def distances(self, label_or_region: LabelOrRegion) -> SurfaceDistances | None:
        """The surface distances of a label or region; None when either mask is empty."""
        key = label_values(label_or_region)
        if key not in self._distances:
            reference, prediction = self.pair(key)
            if not reference.any() or not prediction.any():
                return None
            self._distances[key] = surface_distances(reference, prediction, self.spacing)
        return self._distances[key]
