"""Dataset fingerprint: what planning needs to know about a raw dataset -> ``dataset_fingerprint.json``.

Per case: spacing, shape before and after crop to nonzero, class volumes (ml) and box sizes (mm).
Per channel: foreground intensity statistics, where foreground is every voxel of a dense (non-box)
label and every voxel inside a box of a box label. The pass reads every voxel, so it also checks voxel data (NaN/inf,
undeclared label values); nothing is written unless every case is clean.
"""
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from boxunet.cropping import nonzero_bbox
from boxunet.errors import DatasetError, Problem
from boxunet.io.boxes import box_mask
from boxunet.io.cases import CaseFiles
from boxunet.io.dataset_json import DatasetDescription
from boxunet.io.images import axis_codes, read_image
from boxunet.io.verification import case_header_problems, image_data_problems, label_data_problems
from boxunet.parallel import map_in_processes

INTENSITY_SAMPLE_BUDGET = 10_000_000  # foreground voxels sampled over the whole dataset, per channel
SAMPLING_SEED = 1234


@dataclass
class _CaseJob:
    case: CaseFiles
    description: DatasetDescription
    samples_per_case: int
    seed: int


def _intensity_summary(values: np.ndarray) -> dict:
    if values.size == 0:
        return {k: float("nan") for k in ("mean", "median", "std", "min", "max", "percentile_00_5", "percentile_99_5")}
    low, median, high = np.percentile(values, [0.5, 50.0, 99.5])
    return {"mean": float(values.mean()), "median": float(median), "std": float(values.std()),
            "min": float(values.min()), "max": float(values.max()),
            "percentile_00_5": float(low), "percentile_99_5": float(high)}


def fingerprint_case(job: _CaseJob) -> dict:
    """Fingerprint one case; the result holds ``problems`` instead of statistics when its data is bad."""
    case, description = job.case, job.description
    header_problems, boxes = case_header_problems(case, description)
    if header_problems:
        return {"problems": header_problems}
    problems = []
    channels = []
    geometry = None
    for path in case.images:
        array, geometry = read_image(path)
        problems += image_data_problems(case.case_id, path, array)
        channels.append(array)
    label = None
    if case.label is not None:
        label, _ = read_image(case.label)
        problems += label_data_problems(case.case_id, case.label, label, description)
    if problems:
        return {"problems": problems}

    warnings = [str(Problem(case.case_id, str(path), "every voxel is 0: the case is cropped to nothing and adds "
                                                     "nothing to training (an empty or failed export?)"))
                for path, array in zip(case.images, channels) if not np.any(array)]
    data = channels[0][None] if len(channels) == 1 else np.stack(channels)
    del channels
    bbox, _ = nonzero_bbox(data)
    shape_after_crop = [hi - lo for lo, hi in bbox]
    voxel_ml = float(np.prod(geometry.spacing)) / 1000.0

    foreground = np.zeros(geometry.shape, dtype=bool)
    class_volumes_ml = {}
    if label is not None:
        for value in description.label_set.foreground_values:
            if value not in description.box_labels:
                voxels = label == value
                class_volumes_ml[str(value)] = float(np.count_nonzero(voxels)) * voxel_ml
                foreground |= voxels
                del voxels
    box_sizes_mm = {str(v): [] for v in description.box_labels}
    for value in description.box_labels:
        inside = box_mask(geometry.shape, boxes, value)
        foreground |= inside
        class_volumes_ml[str(value)] = float(inside.sum()) * voxel_ml
        box_sizes_mm[str(value)] = [[size * spacing for size, spacing in zip(box.size, geometry.spacing)]
                                    for box in boxes if box.label == value]

    rng = np.random.default_rng(job.seed)
    foreground_index = np.flatnonzero(foreground)
    samples, minima, maxima = [], [], []
    for channel in data:
        flat = channel.ravel()
        if foreground_index.size:
            chosen = foreground_index[rng.integers(0, foreground_index.size, job.samples_per_case)]
            samples.append(flat[chosen].astype(np.float32))
            values = flat[foreground_index]
            minima.append(float(values.min()))
            maxima.append(float(values.max()))
        else:
            samples.append(np.empty(0, np.float32))
            minima.append(math.nan)
            maxima.append(math.nan)
    return {
        "case_id": case.case_id,
        "spacing": [float(s) for s in geometry.spacing],
        "shape_before_crop": list(geometry.shape),
        "shape_after_crop": shape_after_crop,
        "relative_size_after_crop": float(np.prod(shape_after_crop) / np.prod(geometry.shape)),
        "foreground_voxels": int(foreground_index.size),
        "class_volumes_ml": class_volumes_ml,
        "box_sizes_mm": box_sizes_mm,
        "samples": samples,
        "minima": minima,
        "maxima": maxima,
        "warnings": warnings,
        "axis_codes": axis_codes(geometry.direction),
    }


def _statistics(values: list[float]) -> dict:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return {"n": 0}
    return {"n": int(array.size), "mean": float(array.mean()), "median": float(np.median(array)),
            "std": float(array.std()), "min": float(array.min()), "max": float(array.max())}


def extract_fingerprint(cases: list[CaseFiles], description: DatasetDescription, num_processes: int,
                        progress: bool = True) -> dict:
    """Fingerprint every case in parallel; raise DatasetError (writing nothing) when any case is bad."""
    input_stamps = {case.case_id: case.input_stamps() for case in cases}  # before the files are read
    samples_per_case = max(1, INTENSITY_SAMPLE_BUDGET // max(1, len(cases)))
    jobs = [_CaseJob(case, description, samples_per_case, SAMPLING_SEED + index) for index, case in enumerate(cases)]
    results = map_in_processes(fingerprint_case, jobs, num_processes, "fingerprint", progress)
    problems = [problem for result in results for problem in result.get("problems", [])]
    if problems:
        raise DatasetError(problems)

    per_channel = {}
    for channel in range(description.num_channels):
        values = np.concatenate([r["samples"][channel] for r in results])
        summary = _intensity_summary(values)
        finite_minima = [r["minima"][channel] for r in results if not math.isnan(r["minima"][channel])]
        finite_maxima = [r["maxima"][channel] for r in results if not math.isnan(r["maxima"][channel])]
        if finite_minima:
            summary["min"], summary["max"] = float(min(finite_minima)), float(max(finite_maxima))
        per_channel[str(channel)] = summary

    class_volumes = {str(v): _statistics([r["class_volumes_ml"][str(v)] for r in results
                                          if str(v) in r["class_volumes_ml"]])
                     for v in description.label_set.foreground_values}
    box_statistics = {}
    for value in description.box_labels:
        sizes = [size for r in results for size in r["box_sizes_mm"][str(value)]]
        counts = [len(r["box_sizes_mm"][str(value)]) for r in results]
        axes = np.asarray(sizes, dtype=np.float64).reshape(-1, 3)
        box_statistics[str(value)] = {
            "box_count": int(sum(counts)),
            "boxes_per_case": _statistics(counts),
            "cases_without_boxes": int(sum(1 for c in counts if c == 0)),
            "size_mm_per_axis": [_statistics(axes[:, axis].tolist()) for axis in range(3)],
        }
    return {
        "case_ids": [r["case_id"] for r in results],
        "spacings": [r["spacing"] for r in results],
        "shapes_before_crop": [r["shape_before_crop"] for r in results],
        "shapes_after_crop": [r["shape_after_crop"] for r in results],
        "median_relative_size_after_cropping": float(np.median([r["relative_size_after_crop"] for r in results])),
        "foreground_definition": "dense labels and box interiors" if description.box_labels else "dense labels",
        "foreground_intensity_properties_per_channel": per_channel,
        "class_volume_ml": class_volumes,
        "box_statistics": box_statistics,
        "cases": {r["case_id"]: {k: r[k] for k in ("spacing", "shape_before_crop", "shape_after_crop",
                                                    "foreground_voxels", "class_volumes_ml", "box_sizes_mm")}
                  for r in results},
        "warnings": [warning for r in results for warning in r["warnings"]],
        "axis_codes": [list(codes) for codes in sorted({tuple(r["axis_codes"]) for r in results})],
        "made_from": {"dataset_json": description.to_json(), "input_stamps": input_stamps},
    }


def fingerprint_matches(fingerprint: dict, cases: list[CaseFiles], description: DatasetDescription) -> bool:
    """True when a stored fingerprint was made from exactly these files, unchanged (boxunet.io.stamps), and this
    dataset.json; otherwise every case is fingerprinted and its voxels checked again."""
    made_from = {"dataset_json": description.to_json(),
                 "input_stamps": {case.case_id: case.input_stamps() for case in cases}}
    return fingerprint.get("made_from") == json.loads(json.dumps(made_from))  # as stored


def fingerprint_path(preprocessed_dataset_folder: Path) -> Path:
    return Path(preprocessed_dataset_folder) / "dataset_fingerprint.json"
