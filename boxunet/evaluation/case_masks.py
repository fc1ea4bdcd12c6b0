"""One case's reference and predicted label maps, with the boolean masks and surface distances of its labels or
regions computed once each (a KiTS HEC that is also an evaluated region, or a label that is its own region, shares
them)."""
import numpy as np

from boxunet.evaluation.surface import SurfaceDistances, surface_distances

LabelOrRegion = int | tuple[int, ...]


def label_values(label_or_region: LabelOrRegion) -> tuple[int, ...]:
    """The label values a label (``2``) or region (``(1, 2)``) stands for, sorted."""
    return tuple(sorted(label_or_region)) if isinstance(label_or_region, (list, tuple)) else (label_or_region,)


def region_mask(labels: np.ndarray, label_or_region: LabelOrRegion) -> np.ndarray:
    """Voxels of ``labels`` whose value is the label, or any value of the region."""
    values = label_values(label_or_region)
    return labels == values[0] if len(values) == 1 else np.isin(labels, values)


class CaseMasks:
    """The masks and surface distances of one case's labels or regions, computed when first asked for."""

    def __init__(self, reference_labels: np.ndarray, predicted_labels: np.ndarray, spacing):
        self.reference_labels, self.predicted_labels, self.spacing = reference_labels, predicted_labels, spacing
        self._masks: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
        self._distances: dict[tuple[int, ...], SurfaceDistances] = {}

    def pair(self, label_or_region: LabelOrRegion) -> tuple[np.ndarray, np.ndarray]:
        """The (reference, prediction) boolean masks of a label or region."""
        key = label_values(label_or_region)
        if key not in self._masks:
            self._masks[key] = (region_mask(self.reference_labels, key), region_mask(self.predicted_labels, key))
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
