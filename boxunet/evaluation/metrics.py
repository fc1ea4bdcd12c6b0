"""Overlap, volume and surface metrics per label or region, per case and over a folder (nnU-Net-style
``summary.json``).

A region is a tuple of label values evaluated as one mask (voxels whose label is any of them). Dice, IoU,
HD95 and ASSD are NaN when reference and prediction are both empty; means skip NaN values. Surface
distances follow ``boxunet.evaluation.surface``; the KiTS19 composite ``boxunet.evaluation.kits``.
"""
import functools
import warnings
from pathlib import Path

import numpy as np

from boxunet.errors import BoxunetError
from boxunet.evaluation.case_classification import classification_summary, predicted_case_classes
from boxunet.evaluation.kits import KITS_SURFACE_TOLERANCE_MM, kits_case_scores, kits_regions
from boxunet.evaluation.surface import surface_distance_metrics
from boxunet.io.atomic import write_json
from boxunet.io.dataset_json import CaseClassification
from boxunet.io.images import read_image
from boxunet.parallel import map_in_processes

LabelOrRegion = int | tuple[int, ...]


def dice(reference: np.ndarray, prediction: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when both are empty."""
    tp = int(np.count_nonzero(reference & prediction))
    total = int(np.count_nonzero(reference)) + int(np.count_nonzero(prediction))
    return 2 * tp / total if total else float("nan")


def label_metrics(reference: np.ndarray, prediction: np.ndarray, spacing, ignore: np.ndarray | None = None,
                  surface_metrics: bool = True) -> dict:
    """Confusion counts, sizes, Dice, IoU, ``volume_difference_ml`` (prediction minus reference) and, with
    ``surface_metrics``, HD95 and ASSD in mm of two boolean masks with voxel ``spacing`` (mm, array axis
    order). Voxels where ``ignore`` is True are removed from both masks first."""
    valid = np.ones(reference.shape, dtype=bool) if ignore is None else ~ignore
    reference, prediction = reference & valid, prediction & valid
    tp = int(np.count_nonzero(reference & prediction))
    n_ref, n_pred = int(np.count_nonzero(reference)), int(np.count_nonzero(prediction))
    fp, fn = n_pred - tp, n_ref - tp
    tn = int(np.count_nonzero(valid)) - tp - fp - fn
    union = tp + fp + fn
    metrics = {"TP": tp, "FP": fp, "FN": fn, "TN": tn, "n_ref": n_ref, "n_pred": n_pred,
               "Dice": 2 * tp / (union + tp) if union else float("nan"),
               "IoU": tp / union if union else float("nan"),
               "volume_difference_ml": (n_pred - n_ref) * float(np.prod(spacing)) / 1000}
    if surface_metrics:
        metrics.update(surface_distance_metrics(reference, prediction, spacing))
    return metrics


def metric_key(label_or_region) -> str:
    """Key of a label (``"1"``) or a region (``"(1, 2)"``) in metric dictionaries."""
    return str(tuple(label_or_region)) if isinstance(label_or_region, (list, tuple)) else str(label_or_region)


def _mask(labels: np.ndarray, label_or_region) -> np.ndarray:
    if isinstance(label_or_region, (list, tuple)):
        return np.isin(labels, list(label_or_region))
    return labels == label_or_region


def case_metrics(reference_labels: np.ndarray, predicted_labels: np.ndarray,
                 labels_or_regions: list[LabelOrRegion], spacing, surface_metrics: bool = True) -> dict[str, dict]:
    """``label_metrics`` of every label or region of two label maps, keyed by ``metric_key``. The background
    (label 0) gets no surface distances: they would cost two distance transforms of the whole image."""
    return {metric_key(item): label_metrics(_mask(reference_labels, item), _mask(predicted_labels, item), spacing,
                                            surface_metrics=surface_metrics and item not in (0, (0,)))
            for item in labels_or_regions}


def _read(case_id: str, path: Path):
    try:
        return read_image(path)
    except BoxunetError as error:
        raise BoxunetError(f"case {case_id!r}: {error}") from None


def _evaluate_case(files: tuple[str, Path, Path], labels_or_regions: list[LabelOrRegion], surface_metrics: bool,
                   kits: dict | None) -> dict:
    case_id, reference_file, prediction_file = files
    reference, reference_geometry = _read(case_id, reference_file)
    prediction, prediction_geometry = _read(case_id, prediction_file)
    difference = reference_geometry.mismatch(prediction_geometry)
    if difference:
        raise BoxunetError(f"case {case_id!r}: prediction {prediction_file} does not match reference "
                           f"{reference_file}: {difference}")
    spacing = reference_geometry.spacing
    if reference_geometry.is_2d:  # evaluate the image plane, not a slab of the placeholder z spacing
        reference, prediction, spacing = reference[0], prediction[0], spacing[1:]
    result = {"reference_file": str(reference_file), "prediction_file": str(prediction_file),
              "metrics": case_metrics(reference, prediction, labels_or_regions, spacing, surface_metrics)}
    if kits is not None:
        masks = {name: (_mask(reference, region), _mask(prediction, region)) for name, region in kits.items()}
        result["kits_composite"] = _nanmean([dice(*masks["kidney_and_masses"]), dice(*masks["tumor"])])
        result["kits"] = kits_case_scores(masks, spacing, surface_metrics)
    return result


def _nanmean(values: list[float]) -> float:
    values = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all NaN -> NaN, silently
        return float(np.nanmean(values)) if values.size else float("nan")


def _mean_of(metric_dicts: list[dict]) -> dict:
    return {name: _nanmean([m[name] for m in metric_dicts]) for name in metric_dicts[0]} if metric_dicts else {}


def evaluate_folders(reference_folder: Path, prediction_folder: Path, labels_or_regions: list[LabelOrRegion],
                     file_ending: str, output_file: Path | None = None, num_processes: int = 1,
                     case_ids: list[str] | None = None, surface_metrics: bool = True,
                     label_names: dict | None = None, case_classification: CaseClassification | None = None) -> dict:
    """Evaluate every ``<case><file_ending>`` of ``reference_folder`` (only ``case_ids`` when given) against
    the same file name in ``prediction_folder``; return (and write to ``output_file`` if given) the summary.

    The summary holds ``metric_per_case``, ``mean`` (per label or region, NaN-skipping mean over cases) and
    ``foreground_mean`` (mean of the per-label means, label 0 excluded). Without ``surface_metrics`` HD95
    and ASSD are neither computed nor reported. When ``label_names`` (dataset.json "labels") are KiTS's,
    every case and the summary also get ``kits_composite`` and ``kits`` (Dice and Surface Dice of the
    HECs, see boxunet.evaluation.kits). With a ``case_classification`` (dataset.json) and case classes in the
    prediction folder's report, the summary gets ``case_classification`` (boxunet.evaluation.case_classification).
    A missing folder, a missing or unreadable file
    or a prediction whose geometry differs from its reference raises a BoxunetError before anything is
    written; predictions without a reference are ignored.
    """
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
    evaluate = functools.partial(_evaluate_case, labels_or_regions=list(labels_or_regions),
                                 surface_metrics=surface_metrics, kits=kits)
    per_case = map_in_processes(evaluate, pairs, num_processes, "evaluation", progress=False)
    keys = [metric_key(item) for item in labels_or_regions]
    mean = {key: _mean_of([case["metrics"][key] for case in per_case]) for key in keys}
    foreground = [mean[metric_key(item)] for item in labels_or_regions if item not in (0, (0,))]
    summary = {"metric_per_case": per_case, "mean": mean, "foreground_mean": _mean_of(foreground)}
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
