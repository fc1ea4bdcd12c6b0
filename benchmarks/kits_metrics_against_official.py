"""boxunet_evaluate against the official KiTS21/23 evaluation on real KiTS label maps: the worst gap per metric and
the wall time of both with the same number of processes (documentation/evaluation.md, benchmarks.md).

Each label map is the reference; four predictions are made from it: every structure dilated by one voxel, eroded by
one voxel, the map shifted by 2 voxels along each axis, and noise on the foreground's boundary (a third of its
surface voxels set to background, a third of the background voxels touching it set to kidney). Both tools
evaluate the same folders:

- the official code: kits23/evaluation/metrics.py's ``compute_metrics_for_case`` from a checkout of neheller/kits23
  (``KITS23_CHECKOUT``), over the cases in a ``multiprocessing.Pool`` as its ``evaluate_predictions`` does;
- boxunet: ``boxunet_evaluate REF PRED -d 220 -np N`` (as ``python -m boxunet.cli.evaluate``, the same interpreter
  as the official code's, no launcher script in between) on a dataset folder with the KiTS23 conversion's labels,
  which also computes HD95 and ASSD; these are compared with surface-distance's robust Hausdorff and the
  area-weighted pooled mean of its directed averages on the same masks.

Times are the median of ``--repeats`` runs of each tool on the first perturbation's folder (whole commands,
interpreter start included), one tool at a time; run it on an otherwise idle machine.

Usage: python benchmarks/kits_metrics_against_official.py KITS_LABELS_FOLDER KITS23_CHECKOUT WORK_FOLDER [-np 2]
       [--repeats 3] [--cases 50]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import surface_distance as deepmind
from scipy import ndimage

from boxunet.parallel import map_in_processes

PERTURBATIONS = ("shifted", "dilated", "eroded", "boundary_noise")
HECS = {"kidney_and_masses": (1, 2, 3), "masses": (2, 3), "tumor": (2,)}
LABELS = {"background": 0, "kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2}
OFFICIAL_RUNNER = """
import json, sys, warnings
from multiprocessing import Pool
warnings.simplefilter("ignore")
from kits23.evaluation.metrics import compute_metrics_for_case
pairs, processes, output = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
with Pool(processes) as pool:
    metrics = pool.starmap(compute_metrics_for_case, pairs)
json.dump([m.tolist() for m in metrics], open(output, "w"))
"""


def perturbed(labels: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """A prediction made from the reference ``labels`` (KiTS values 0-3) by one of ``PERTURBATIONS``."""
    if kind == "shifted":
        return np.roll(labels, (2, 2, 2), axis=(0, 1, 2))
    result = labels.copy()
    if kind == "dilated":  # every structure grows by one voxel, inner structures drawn over outer ones
        for value in (1, 3, 2):
            result[ndimage.binary_dilation(labels == value) & (result == 0 if value == 1 else True)] = value
        return result
    if kind == "eroded":  # every structure loses its surface voxels to the structure around it
        for value, around in ((2, 1), (3, 1), (1, 0)):
            mask = result == value
            result[mask & ~ndimage.binary_erosion(mask)] = around
        return result
    rng = np.random.default_rng(seed)
    foreground = labels > 0
    outer = ndimage.binary_dilation(foreground) & ~foreground
    inner = foreground & ~ndimage.binary_erosion(foreground)
    result[inner & (rng.random(labels.shape) < 1 / 3)] = 0
    result[outer & (rng.random(labels.shape) < 1 / 3)] = 1
    return result


def _write_prediction(item) -> None:
    source, kind, seed, target = item
    image = sitk.ReadImage(str(source))
    prediction = sitk.GetImageFromArray(perturbed(sitk.GetArrayFromImage(image), kind, seed).astype(np.uint8))
    prediction.CopyInformation(image)
    sitk.WriteImage(prediction, str(target), useCompression=True)


def _surface_reference(item) -> dict:
    """surface-distance's HD95 and pooled ASSD of every HEC region of one case (both masks non-empty)."""
    reference_file, prediction_file = item
    reference_image = sitk.ReadImage(str(reference_file))
    spacing = tuple(reference_image.GetSpacing())[::-1]
    reference = sitk.GetArrayFromImage(reference_image)
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(prediction_file)))
    result = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for region in HECS.values():
            expected, predicted = np.isin(reference, region), np.isin(prediction, region)
            if not expected.any() or not predicted.any():
                continue
            distances = deepmind.compute_surface_distances(expected, predicted, spacing)
            averages = deepmind.compute_average_surface_distance(distances)
            areas = distances["surfel_areas_gt"].sum(), distances["surfel_areas_pred"].sum()
            key = str(region) if len(region) > 1 else str(region[0])  # boxunet's keys: "(2, 3)", "2"
            result[key] = {"HD95": float(deepmind.compute_robust_hausdorff(distances, 95)),
                           "ASSD": float((averages[0] * areas[0] + averages[1] * areas[1]) / sum(areas))}
    return result


def run_official(pairs: list[tuple[str, str]], checkout: Path, processes: int, output: Path) -> float:
    environment = dict(os.environ, PYTHONPATH=str(checkout))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", OFFICIAL_RUNNER, json.dumps(pairs), str(processes), str(output)],
                   check=True, env=environment)
    return time.perf_counter() - start


def run_boxunet(reference: Path, prediction: Path, processes: int, raw_root: Path, output: Path) -> float:
    environment = dict(os.environ, boxunet_raw=str(raw_root))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "boxunet.cli.evaluate", str(reference), str(prediction), "-d", "220",
                    "-np", str(processes), "-o", str(output)], check=True, env=environment, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def worst_gaps(official: list, surface: list[dict], summary: dict, case_ids: list[str]) -> dict:
    """The largest absolute difference per metric over cases and HECs, with where it is."""
    gaps = {}

    def note(metric, value, where):
        if metric not in gaps or value > gaps[metric][0]:
            gaps[metric] = (value, where)

    by_case = {Path(c["prediction_file"]).name[:-len(".nii.gz")]: c for c in summary["metric_per_case"]}
    for case_id, scores, distances in zip(case_ids, official, surface):
        case = by_case[case_id]
        for index, name in enumerate(HECS):
            note("Dice", abs(case["kits"][name]["Dice"] - scores[index][0]), (case_id, name))
            note("SurfaceDice", abs(case["kits"][name]["SurfaceDice"] - scores[index][1]), (case_id, name))
        for region, values in distances.items():
            mine = case["metrics"][region]
            for metric in ("HD95", "ASSD"):
                note(metric, abs(mine[metric] - values[metric]), (case_id, region))
    return {metric: {"max_abs_difference": value, "case": where[0], "region": where[1]}
            for metric, (value, where) in gaps.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("labels", type=Path)
    parser.add_argument("checkout", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("-np", "--processes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", type=int, default=50)
    arguments = parser.parse_args()
    references = sorted(arguments.labels.glob("case_*.nii.gz"))[:arguments.cases]
    case_ids = [path.name[:-len(".nii.gz")] for path in references]
    raw_root = arguments.work / "raw"
    dataset = raw_root / "Dataset220_KiTS2023"
    dataset.mkdir(parents=True, exist_ok=True)
    (dataset / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": LABELS,
                                                      "regions_class_order": [1, 3, 2], "numTraining": len(references),
                                                      "file_ending": ".nii.gz"}))
    reference_folder = arguments.work / "reference"
    reference_folder.mkdir(exist_ok=True)
    for path in references:
        if not (reference_folder / path.name).exists():
            (reference_folder / path.name).symlink_to(path.resolve())
    report = {"cases": len(references), "processes": arguments.processes, "perturbations": {}}
    for index, kind in enumerate(PERTURBATIONS):
        folder = arguments.work / kind
        folder.mkdir(exist_ok=True)
        items = [(path, kind, seed, folder / path.name) for seed, path in enumerate(references)
                 if not (folder / path.name).exists()]
        map_in_processes(_write_prediction, items, arguments.processes, f"predictions, {kind}", progress=False)
        pairs = [(str(folder / path.name), str(path)) for path in references]
        repeats = arguments.repeats if index == 0 else 1
        official_seconds = [run_official(pairs, arguments.checkout, arguments.processes, folder / "official.json")
                            for _ in range(repeats)]
        boxunet_seconds = [run_boxunet(reference_folder, folder, arguments.processes, raw_root,
                                       folder / "summary.json") for _ in range(repeats)]
        official = json.loads((folder / "official.json").read_text())
        summary = json.loads((folder / "summary.json").read_text())
        surface = map_in_processes(_surface_reference, [(path, folder / path.name) for path in references],
                                   arguments.processes, f"surface-distance, {kind}", progress=False)
        entry = {"worst_gap": worst_gaps(official, surface, summary, case_ids),
                 "mean_official": {name: [float(np.mean([c[i][m] for c in official])) for m in (0, 1)]
                                   for i, name in enumerate(HECS)}}
        if index == 0:
            entry.update(official_seconds=official_seconds, boxunet_seconds=boxunet_seconds,
                         official_median=statistics.median(official_seconds),
                         boxunet_median=statistics.median(boxunet_seconds))
        report["perturbations"][kind] = entry
        print(json.dumps({kind: entry}), flush=True)
    (arguments.work / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
