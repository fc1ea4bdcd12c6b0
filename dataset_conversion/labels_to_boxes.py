"""Make box annotations from the dense label maps of a raw dataset.

For every training case, each connected component of each chosen label becomes one box (grown by a
margin, clipped to the image) in ``boxesTr/<case>.json``; the labels are added to ``box_labels`` of
dataset.json. With ``drop_label`` the label maps are first moved to ``labelsTr_dense/`` and
``labelsTr`` is rewritten without those labels; dataset.json then records them under ``dropped_labels``.
"""
import argparse
from functools import partial
from pathlib import Path

import numpy as np

from boxunet.cli.common import run_cli
from boxunet.errors import BoxunetError
from boxunet.io.atomic import read_json
from boxunet.io.boxes import Box, boxes_from_label_map, read_boxes, write_boxes
from boxunet.io.cases import group_channel_files
from boxunet.io.dataset_json import load_dataset_json
from boxunet.io.dataset_locator import find_dataset_folder
from boxunet.io.images import read_image, write_image
from boxunet.parallel import map_in_processes
from boxunet.paths import raw_root
from dataset_conversion.common import place_file, positive_int, write_dataset_json

DENSE_FOLDER = "labelsTr_dense"
DROPPED_KEY = "dropped_labels"


def labels_to_boxes(dataset_folder: Path, labels: list[int], margin: int, connectivity: int = 26,
                    drop_label: bool = False, min_voxels: int = 1, num_processes: int = 1) -> dict:
    """Write one box per connected component of ``labels`` for every training case; return a report.

    Existing boxes of other labels are kept. The report holds the number of cases, the number of
    boxes per label and the mean box size per label in voxels along (z, y, x).
    """
    folder = Path(dataset_folder)
    labels = sorted({int(label) for label in labels})
    if margin < 0:
        raise BoxunetError(f"margin {margin}: must be >= 0 voxels")
    if connectivity not in (6, 18, 26):
        raise BoxunetError(f"connectivity {connectivity}: must be 6, 18 or 26")
    if min_voxels < 1:
        raise BoxunetError(f"min voxels {min_voxels}: must be >= 1")
    description = load_dataset_json(folder)
    undeclared = [label for label in labels if label not in description.label_set.foreground_values]
    if not labels or undeclared:
        raise BoxunetError(f"file {folder / 'dataset.json'}: label(s) {undeclared or labels} are not among the "
                           f"declared foreground labels {description.label_set.foreground_values}")

    data = read_json(folder / "dataset.json")
    already_dropped = sorted(data.get(DROPPED_KEY, []))
    labels_folder, dense_folder = folder / "labelsTr", folder / DENSE_FOLDER
    if already_dropped and not dense_folder.is_dir():
        raise BoxunetError(f"folder {dense_folder}: missing, but dataset.json says labels {already_dropped} were "
                           "dropped from labelsTr; restore it from a backup")
    if drop_label and dense_folder.exists() and not already_dropped:
        raise BoxunetError(f"folder {dense_folder}: already exists but dataset.json records no dropped labels; "
                           "move it away before using --drop-label")
    source_folder = dense_folder if already_dropped else labels_folder
    cases = _training_cases(folder, description.file_ending, description.num_channels)
    for case_id in cases:
        if not (source_folder / f"{case_id}{description.file_ending}").is_file():
            raise BoxunetError(f"case {case_id}: label file {source_folder / (case_id + description.file_ending)} "
                               "is missing; boxes are made from label maps")

    dropped = sorted(set(already_dropped) | set(labels)) if drop_label else None
    if drop_label and not already_dropped:
        labels_folder.rename(dense_folder)
        labels_folder.mkdir()
        source_folder = dense_folder
    if dropped and dropped != already_dropped:
        data[DROPPED_KEY] = dropped
        write_dataset_json(data, folder)

    work = partial(_case_boxes, labels=labels, margin=margin, connectivity=connectivity, min_voxels=min_voxels,
                   dropped=dropped)
    jobs = [(source_folder / f"{c}{description.file_ending}", labels_folder / f"{c}{description.file_ending}",
             folder / "boxesTr" / f"{c}.json") for c in cases]
    boxes = [box for case_boxes in map_in_processes(work, jobs, num_processes, "boxes") for box in case_boxes]

    data["box_labels"] = sorted(set(data.get("box_labels", [])) | set(labels))
    data["box_margins"] = {**data.get("box_margins", {}), **{str(label): margin for label in labels}}
    write_dataset_json(data, folder)
    return _report(len(cases), labels, boxes)


def _training_cases(folder: Path, file_ending: str, num_channels: int) -> list[str]:
    if not (folder / "imagesTr").is_dir():
        raise BoxunetError(f"folder {folder / 'imagesTr'}: missing")
    channels_by_case, _ = group_channel_files(folder / "imagesTr", file_ending, num_channels)
    if not channels_by_case:
        raise BoxunetError(f"folder {folder / 'imagesTr'}: no training images ending in {file_ending}")
    return sorted(channels_by_case)


def _case_boxes(paths: tuple[Path, Path, Path], labels: list[int], margin: int, connectivity: int,
                min_voxels: int, dropped: list[int] | None) -> list[Box]:
    source, labels_target, box_path = paths
    label_map, geometry = read_image(source)
    boxes = [box for label in labels
             for box in boxes_from_label_map(label_map, label, margin, connectivity, min_voxels)]
    kept = [box for box in read_boxes(box_path) if box.label not in labels] if box_path.is_file() else []
    write_boxes(sorted(kept + boxes, key=lambda box: (box.label, box.min, box.max)), box_path)
    if dropped is not None:
        removed = np.isin(label_map, dropped)
        if removed.any():
            label_map[removed] = 0
            write_image(label_map, geometry, labels_target)
        else:
            place_file(source, labels_target, "copy")
    return boxes


def _report(num_cases: int, labels: list[int], boxes: list[Box]) -> dict:
    sizes = {label: [box.size for box in boxes if box.label == label] for label in labels}
    return {"cases": num_cases,
            "boxes_per_label": {label: len(sizes[label]) for label in labels},
            "mean_box_size": {label: [round(float(v), 2) for v in np.mean(sizes[label], axis=0)] if sizes[label] else None
                              for label in labels}}


def main(argv: list[str] | None = None) -> None:
    """Entry point ``boxunet_labels_to_boxes``."""
    parser = argparse.ArgumentParser(prog="boxunet_labels_to_boxes",
                                     description="Make boxesTr/<case>.json from the label maps of a raw dataset: "
                                                 "one box per connected component of each chosen label.")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or DatasetXXX_Name folder name")
    parser.add_argument("--label", dest="labels", type=int, action="append", required=True,
                        help="label value to turn into boxes (repeat for several)")
    parser.add_argument("--margin", type=int, required=True, help="voxels added on every side of each box")
    parser.add_argument("--connectivity", type=int, default=26, choices=(6, 18, 26),
                        help="voxel neighbourhood of connected components (default 26)")
    parser.add_argument("--drop-label", action="store_true",
                        help="remove the labels from labelsTr after moving the originals to labelsTr_dense/")
    parser.add_argument("--min-voxels", type=positive_int, default=1,
                        help="skip components smaller than this (default 1)")
    parser.add_argument("-np", "--num-processes", type=positive_int, default=1, help="worker processes (default 1)")
    args = parser.parse_args(argv)
    root = raw_root()
    folder = run_cli(find_dataset_folder, args.dataset, root)
    report = run_cli(labels_to_boxes, folder, args.labels, args.margin, args.connectivity, args.drop_label,
                     args.min_voxels, args.num_processes)
    print(f"{folder.name}: boxes of label(s) {sorted(set(args.labels))} in {report['cases']} cases "
          f"(margin {args.margin} voxels)")
    for label, count in report["boxes_per_label"].items():
        print(f"  label {label}: {count} boxes, mean size (z, y, x) {report['mean_box_size'][label]} voxels")
