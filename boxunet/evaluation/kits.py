"""KiTS metrics: the KiTS19 composite and the KiTS21/23 hierarchical evaluation classes (HECs).

The HECs are "kidney and masses" (every KiTS label), "masses" (tumor and cyst; the tumor alone without a
cyst label) and "tumor". They are recognised by the names in dataset.json "labels" (case-insensitive):
``kidney`` and ``tumor`` as plain labels (KiTS19, the demo dataset), or as the regions of the KiTS21/23
conversion (``kidney: [1, 2, 3], masses: [2, 3], tumor: 2``).

* KiTS19 composite: per case the mean of Dice(kidney and masses) and Dice(tumor); when one term is NaN
  (reference and prediction both empty) the other alone.
* Per HEC and case, Dice and Surface Dice (boxunet.evaluation.surface, DeepMind surface-distance's surface
  elements) at the HEC's tolerance (``KITS_SURFACE_TOLERANCE_MM``, the official values at full precision: about the
  95th percentile of KiTS21's inter-rater surface distances) with KiTS's empty-case rule: both empty scores 1,
  exactly one empty scores 0. These are the numbers of the official evaluation (kits23/evaluation/metrics.py).
"""
import numpy as np

from boxunet.evaluation.case_masks import CaseMasks
from boxunet.evaluation.surface import surface_dice

KITS_SURFACE_TOLERANCE_MM = {"kidney_and_masses": 1.0330772532390826, "masses": 1.1328796488598762,
                             "tumor": 1.1498198361434828}


def _label_value(value) -> int | None:
    """A single label value (an int, or a one-element list); None otherwise."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def kits_regions(labels: dict) -> dict[str, tuple[int, ...]] | None:
    """The label values of each HEC (``kidney_and_masses``, ``masses``, ``tumor``) when ``labels`` are KiTS's,
    else None."""
    by_name = {str(name).lower(): value for name, value in labels.items()}
    tumor, kidney = _label_value(by_name.get("tumor")), by_name.get("kidney")
    if tumor is None or kidney is None:
        return None
    if isinstance(kidney, (list, tuple)) and len(kidney) > 1:  # KiTS21/23 regions
        everything = tuple(sorted(kidney))
        masses = by_name.get("masses")
        masses = tuple(sorted(masses)) if isinstance(masses, (list, tuple)) else (tumor,)
    else:
        kidney, cyst = _label_value(kidney), _label_value(by_name.get("cyst"))
        if kidney is None:
            return None
        everything = tuple(sorted(v for v in (kidney, tumor, cyst) if v is not None))
        masses = tuple(sorted(v for v in (tumor, cyst) if v is not None))
    if tumor not in everything or not set(masses) <= set(everything):
        return None
    return {"kidney_and_masses": everything, "masses": masses, "tumor": (tumor,)}


def kits_case_scores(case: CaseMasks, regions: dict[str, tuple[int, ...]],
                     surface: bool = True) -> dict[str, dict[str, float]]:
    """Dice and (with ``surface``) Surface Dice of every HEC in ``regions`` (``kits_regions``) of one case, with
    KiTS's empty-case rule."""
    scores = {}
    for name, region in regions.items():
        reference, prediction = case.pair(region)
        reference_voxels, predicted_voxels = np.count_nonzero(reference), np.count_nonzero(prediction)
        if reference_voxels == 0 or predicted_voxels == 0:
            value = 1.0 if reference_voxels == predicted_voxels == 0 else 0.0
            scores[name] = {"Dice": value, "SurfaceDice": value} if surface else {"Dice": value}
            continue
        overlap = np.count_nonzero(reference & prediction)
        scores[name] = {"Dice": 2 * overlap / (reference_voxels + predicted_voxels)}
        if surface:
            scores[name]["SurfaceDice"] = surface_dice(case.distances(region), KITS_SURFACE_TOLERANCE_MM[name])
    return scores
