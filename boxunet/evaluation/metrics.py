"""Overlap, volume and surface metrics per label or region, per case and over a folder (nnU-Net-style
``summary.json``).

A region is a tuple of label values evaluated as one mask (voxels whose label is any of them). Dice, IoU,
HD95, ASSD and Surface Dice are NaN when reference and prediction are both empty; means skip NaN values. Surface
distances follow ``boxunet.evaluation.surface`` (DeepMind surface-distance's surface elements), computed once per
label or region and case; the KiTS metrics ``boxunet.evaluation.kits``.
"""
import functools
import warnings
from pathlib import Path

import numpy as np

from boxunet.errors import BoxunetError
from boxunet.evaluation.case_classification import classification_summary, predicted_case_classes
from boxunet.evaluation.case_masks import CaseMasks, LabelOrRegion
from boxunet.evaluation.kits import KITS_SURFACE_TOLERANCE_MM, kits_case_scores, kits_regions
from boxunet.evaluation.surface import SurfaceDistances, surface_metrics
from boxunet.io.atomic import write_json
from boxunet.io.dataset_json import CaseClassification
from boxunet.io.images import read_image
from boxunet.parallel import map_in_processes


def dice(reference: np.ndarray, prediction: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when both are empty."""
    tp = int(np.count_nonzero(reference & prediction))
    total = int(np.count_nonzero(reference)) + int(np.count_nonzero(prediction))
    return 2 * tp / total if total else float("nan")


def label_metrics(reference: np.ndarray, prediction: np.ndarray, spacing, surface: bool = True,
                  tolerance_mm: float | None = None, distances: SurfaceDistances | None = None,
                  image_shape: tuple[int, ...] | None = None) -> dict:
    """Confusion counts, sizes, Dice, IoU, ``volume_difference_ml`` (prediction minus reference) and, with
    ``surface``, HD95 and ASSD in mm (and Surface Dice at ``tolerance_mm`` when given) of two boolean masks with
    voxel ``spacing`` (mm, array axis order); ``distances``, when given, are the masks' surface distances;
    ``image_shape``, when the masks are a crop of a larger image with nothing of either outside: that image's
    shape."""
    tp = int(np.count_nonzero(reference & prediction))
    n_ref, n_pred = int(np.count_nonzero(reference)), int(np.count_nonzero(prediction))
    fp, fn = n_pred - tp, n_ref - tp
    tn = (int(np.prod(image_shape)) if image_shape is not None else reference.size) - tp - fp - fn
    union = tp + fp + fn
    metrics = {"TP": tp, "FP": fp, "FN": fn, "TN": tn, "n_ref": n_ref, "n_pred": n_pred,
               "Dice": 2 * tp / (union + tp) if union else float("nan"),
               "IoU": tp / union if union else float("nan"),
               "volume_difference_ml": (n_pred - n_ref) * float(np.prod(spacing)) / 1000}
    if surface:
        metrics.update(surface_metrics(reference, prediction, spacing, tolerance_mm, distances, image_shape))
    return metrics


def metric_key(label_or_region) -> str:
    """Key of a label (``"1"``) or a region (``"(1, 2)"``) in metric dictionaries."""
    return str(tuple(label_or_region)) if isinstance(label_or_region, (list, tuple)) else str(label_or_region)


def case_metrics(case: CaseMasks, labels_or_regions: list[LabelOrRegion], surface: bool = True,
                 tolerances_mm: dict[str, float] | None = None) -> dict[str, dict]:
    """``label_metrics`` of every label or region of one case, keyed by ``metric_key``, with Surface Dice where
    ``tolerances_mm`` (by key) gives a tolerance. The background (label 0) gets no surface distances: they would
    cost the surface of the whole image."""
    metrics = {}
    for item in labels_or_regions:
        key, with_surface = metric_key(item), surface and item not in (0, (0,))
        reference, prediction = case.pair(item)
        metrics[key] = label_metrics(reference, prediction, case.spacing, surface=with_surface,
                                     tolerance_mm=(tolerances_mm or {}).get(key),
                                     distances=case.distances(item) if with_surface else None,
                                     image_shape=case.shape)
    return metrics


def _read(case_id: str, path: Path):
    try:
        return read_image(path)
    except BoxunetError as error:
        raise BoxunetError(f"case {case_id!r}: {error}") from None


def _check_label_values(case_id: str, path: Path, labels: np.ndarray, allowed: tuple[int, ...] | None) -> None:
    if allowed is None or labels.size == 0:
        return
    consecutive = allowed == tuple(range(allowed[0], allowed[-1] + 1))
    if consecutive and np.issubdtype(labels.dtype, np.integer) and allowed[0] <= labels.min() <= labels.max() <= \
            allowed[-1]:
        return  # the usual case, cheaply: an integer map within a range of consecutive labels
    outside = ~np.isin(labels, allowed)
    if outside.any():
        values = np.unique(labels[outside]).tolist()
        raise BoxunetError(f"case {case_id!r}: {path} holds label value(s) {values[:10]} that the dataset does not "
                           f"have (its labels: {list(allowed)})")


def _evaluate_case(files: tuple[str, Path, Path], labels_or_regions: list[LabelOrRegion], surface: bool,
                   kits: dict | None, tolerances_mm: dict[str, float] | None,
                   allowed_values: tuple[int, ...] | None) -> dict:
    case_id, reference_file, prediction_file = files
    reference, reference_geometry = _read(case_id, reference_file)
    prediction, prediction_geometry = _read(case_id, prediction_file)
    difference = reference_geometry.mismatch(prediction_geometry)
    if difference:
        raise BoxunetError(f"case {case_id!r}: prediction {prediction_file} does not match reference "
                           f"{reference_file}: {difference}")
    for path, labels in ((reference_file, reference), (prediction_file, prediction)):
        _check_label_values(case_id, path, labels, allowed_values)
    spacing = reference_geometry.spacing
    if reference_geometry.is_2d:  # evaluate the image plane, not a slab of the placeholder z spacing
        reference, prediction, spacing = reference[0], prediction[0], spacing[1:]
    case = CaseMasks(reference, prediction, spacing)
    result = {"reference_file": str(reference_file), "prediction_file": str(prediction_file),
              "metrics": case_metrics(case, labels_or_regions, surface, tolerances_mm)}
    if kits is not None:
        result["kits_composite"] = _nanmean([dice(*case.pair(kits["kidney_and_masses"])),
                                             dice(*case.pair(kits["tumor"]))])
        result["kits"] = kits_case_scores(case, kits, surface)
    return result


def _nanmean(values: list[float]) -> float:
    values = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all NaN -> NaN, silently
        return float(np.nanmean(values)) if values.size else float("nan")


def _mean_of(metric_dicts: list[dict]) -> dict:
    return {name: _nanmean([m[name] for m in metric_dicts]) for name in metric_dicts[0]} if metric_dicts else {}


def nsd_tolerances(labels_or_regions: list[LabelOrRegion], tolerance_mm) -> dict[str, float] | None:
    """Surface Dice tolerances (mm) by ``metric_key`` from ``tolerance_mm``: None, one value for every foreground
    label or region, or one per foreground label or region in their order; each finite and positive."""
    if tolerance_mm is None:
        return None
    values = list(tolerance_mm) if isinstance(tolerance_mm, (list, tuple)) else [tolerance_mm]
    foreground = [metric_key(item) for item in labels_or_regions if item not in (0, (0,))]
    if len(values) not in (1, len(foreground)):
        raise BoxunetError(f"Surface Dice tolerance: {len(values)} values for {len(foreground)} labels or regions "
                           f"({', '.join(foreground)}); give one for all or one each")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise BoxunetError(f"Surface Dice tolerance {value!r}: must be a positive number of mm")
    return dict(zip(foreground, values * len(foreground) if len(values) == 1 else values))


def _dataset_label_values(label_names: dict | None) -> tuple[int, ...] | None:
    """Every label value dataset.json's "labels" name (regions flattened)."""
    if not label_names:
        return None
    values = set()
    for value in label_names.values():
        values.update(value if isinstance(value, (list, tuple)) else [value])
    return tuple(sorted(values))


def evaluate_folders(reference_folder: Path, prediction_folder: Path, labels_or_regions: list[LabelOrRegion],
                     file_ending: str, output_file: Path | None = None, num_processes: int = 1,
                     case_ids: list[str] | None = None, surface: bool = True,
                     label_names: dict | None = None, case_classification: CaseClassification | None = None,
                     nsd_tolerance_mm=None) -> dict:
    """Evaluate every ``<case><file_ending>`` of ``reference_folder`` (only ``case_ids`` when given) against
    the same file name in ``prediction_folder``; return (and write to ``output_file`` if given) the summary.

    The summary holds ``metric_per_case``, ``mean`` (per label or region, NaN-skipping mean over cases) and
    ``foreground_mean`` (mean of the per-label means, label 0 excluded). Without ``surface`` HD95
    and ASSD are neither computed nor reported; with them and ``nsd_tolerance_mm`` (``nsd_tolerances``) every
    foreground label or region also gets ``SurfaceDice`` and the summary ``nsd_tolerance_mm``. With
    ``label_names`` (dataset.json "labels"), a label value outside them in either file is an error naming the case.
    When ``label_names`` are KiTS's,
    every case and the summary also get ``kits_composite`` and ``kits`` (Dice and Surface Dice of the
    HECs, see boxunet.evaluation.kits). With a ``case_classification`` (dataset.json) and case classes in the
    prediction folder's report, the summary gets ``case_classification`` (boxunet.evaluation.case_classification).
    A missing folder, a missing or unreadable file
    or a prediction whose geometry differs from its reference raises a BoxunetError before anything is
    written; predictions without a reference are ignored.
    """
    if nsd_tolerance_mm is not None and not surface:
        raise BoxunetError("a Surface Dice tolerance needs the surface metrics (surface=False skips them)")
    tolerances = nsd_tolerances(labels_or_regions, nsd_tolerance_mm)
    reference_folder, prediction_folder = Path(reference_folder), Path(prediction_folder)
    for folder in (reference_folder, prediction_folder):
        if not folder.is_dir():
            raise BoxunetError(f"folder {folder}: does not exist")
    references = sorted(p for p in reference_folder.iterdir()
                        if p.name.endswith(file_ending) and not p.name.startswith(".")
                        and (case_ids is None or p.name[:-len(file_ending)] in set(case_ids)))
    if not references:
        raise BoxunetError(f"folder {reference_folder}: no reference files ending with {file_ending!r}")
    missing = [p.name for p in references if not (prediction_folder / p.name).is_file()]
    if missing:
        raise BoxunetError(f"folder {prediction_folder}: no prediction for {len(missing)} reference case(s) of "
                           f"{reference_folder}: {', '.join(missing)}")
    pairs = [(p.name[:-len(file_ending)], p, prediction_folder / p.name) for p in references]
    kits = kits_regions(label_names) if label_names else None
    evaluate = functools.partial(_evaluate_case, labels_or_regions=list(labels_or_regions), surface=surface,
                                 kits=kits, tolerances_mm=tolerances,
                                 allowed_values=_dataset_label_values(label_names))
    per_case = map_in_processes(evaluate, pairs, num_processes, "evaluation", progress=False)
    keys = [metric_key(item) for item in labels_or_regions]
    mean = {key: _mean_of([case["metrics"][key] for case in per_case]) for key in keys}
    foreground = [mean[metric_key(item)] for item in labels_or_regions if item not in (0, (0,))]
    summary = {"metric_per_case": per_case, "mean": mean, "foreground_mean": _mean_of(foreground)}
    if tolerances is not None:
        summary["nsd_tolerance_mm"] = tolerances
    if kits is not None:
        summary["kits_composite"] = {"mean": _nanmean([case["kits_composite"] for case in per_case])}
        summary["kits"] = {"tolerance_mm": KITS_SURFACE_TOLERANCE_MM,
                           "mean": {name: _mean_of([case["kits"][name] for case in per_case]) for name in kits}}
    predicted = predicted_case_classes(prediction_folder) if case_classification else {}
    if predicted:
        summary["case_classification"] = dict(
            classification_summary(case_classification.cases, predicted, case_classification.classes,
                                   [case_id for case_id, _, _ in pairs]), name=case_classification.name)
    if output_file is not None:
        write_json(summary, output_file)
    return summary
