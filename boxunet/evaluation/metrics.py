"""Overlap metrics per label or region, per case and over a folder (nnU-Net-style ``summary.json``).

A region is a tuple of label values evaluated as one mask (voxels whose label is any of them). Dice and
IoU are NaN when reference and prediction are both empty; means skip NaN values.
"""
import functools
import warnings
from pathlib import Path

import numpy as np

from boxunet.errors import BoxunetError
from boxunet.io.atomic import write_json
from boxunet.io.images import read_image
from boxunet.parallel import map_in_processes

LabelOrRegion = int | tuple[int, ...]


def label_metrics(reference: np.ndarray, prediction: np.ndarray, ignore: np.ndarray | None = None) -> dict:
    """Confusion counts, sizes, Dice and IoU of two boolean masks; voxels where ``ignore`` is True are left out."""
    valid = np.ones(reference.shape, dtype=bool) if ignore is None else ~ignore
    tp = int(np.count_nonzero(reference & prediction & valid))
    fp = int(np.count_nonzero(~reference & prediction & valid))
    fn = int(np.count_nonzero(reference & ~prediction & valid))
    tn = int(np.count_nonzero(valid)) - tp - fp - fn
    union = tp + fp + fn
    return {"TP": tp, "FP": fp, "FN": fn, "TN": tn, "n_ref": tp + fn, "n_pred": tp + fp,
            "Dice": 2 * tp / (union + tp) if union else float("nan"),
            "IoU": tp / union if union else float("nan")}


def metric_key(label_or_region) -> str:
    """Key of a label (``"1"``) or a region (``"(1, 2)"``) in metric dictionaries."""
    return str(tuple(label_or_region)) if isinstance(label_or_region, (list, tuple)) else str(label_or_region)


def _mask(labels: np.ndarray, label_or_region) -> np.ndarray:
    if isinstance(label_or_region, (list, tuple)):
        return np.isin(labels, list(label_or_region))
    return labels == label_or_region


def case_metrics(reference_labels: np.ndarray, predicted_labels: np.ndarray,
                 labels_or_regions: list[LabelOrRegion]) -> dict[str, dict]:
    """``label_metrics`` of every label or region of two label maps, keyed by ``metric_key``."""
    return {metric_key(item): label_metrics(_mask(reference_labels, item), _mask(predicted_labels, item))
            for item in labels_or_regions}


def _evaluate_case(files: tuple[str, Path, Path], labels_or_regions: list[LabelOrRegion]) -> dict:
    case_id, reference_file, prediction_file = files
    reference, reference_geometry = read_image(reference_file)
    prediction, prediction_geometry = read_image(prediction_file)
    difference = reference_geometry.mismatch(prediction_geometry)
    if difference:
        raise BoxunetError(f"case {case_id!r}: prediction {prediction_file} does not match reference "
                           f"{reference_file}: {difference}")
    return {"reference_file": str(reference_file), "prediction_file": str(prediction_file),
            "metrics": case_metrics(reference, prediction, labels_or_regions)}


def _nanmean(values: list[float]) -> float:
    values = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all NaN -> NaN, silently
        return float(np.nanmean(values)) if values.size else float("nan")


def _mean_of(metric_dicts: list[dict]) -> dict:
    return {name: _nanmean([m[name] for m in metric_dicts]) for name in metric_dicts[0]} if metric_dicts else {}


def evaluate_folders(reference_folder: Path, prediction_folder: Path, labels_or_regions: list[LabelOrRegion],
                     file_ending: str, output_file: Path | None = None, num_processes: int = 1,
                     case_ids: list[str] | None = None) -> dict:
    """Evaluate every ``<case><file_ending>`` of ``reference_folder`` (only ``case_ids`` when given) against
    the same file name in ``prediction_folder``; return (and write to ``output_file`` if given) the summary.

    The summary holds ``metric_per_case``, ``mean`` (per label or region, NaN-skipping mean over cases) and
    ``foreground_mean`` (mean of the per-label means, label 0 excluded). A missing prediction or a
    prediction whose geometry differs from its reference raises a BoxunetError; predictions without a
    reference are ignored.
    """
    reference_folder, prediction_folder = Path(reference_folder), Path(prediction_folder)
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
    per_case = map_in_processes(functools.partial(_evaluate_case, labels_or_regions=list(labels_or_regions)),
                                pairs, num_processes, "evaluation", progress=False)
    keys = [metric_key(item) for item in labels_or_regions]
    mean = {key: _mean_of([case["metrics"][key] for case in per_case]) for key in keys}
    foreground = [mean[metric_key(item)] for item in labels_or_regions if item not in (0, (0,))]
    summary = {"metric_per_case": per_case, "mean": mean, "foreground_mean": _mean_of(foreground)}
    if output_file is not None:
        write_json(summary, output_file)
    return summary
