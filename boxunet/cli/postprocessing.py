"""``boxunet_determine_postprocessing`` and ``boxunet_apply_postprocessing``: choose keep-largest-component
postprocessing on cross-validation predictions, and apply it to a folder of label maps."""
import argparse
from pathlib import Path

from boxunet.cli.common import run_cli
from boxunet.errors import BoxunetError
from boxunet.io.model_folder import read_model_files
from boxunet.paths import DATASET_JSON
from boxunet.io.dataset_json import load_dataset_json, parse_dataset_json
from boxunet.io.dataset_locator import find_dataset_folder
from boxunet.parallel import default_num_processes
from boxunet.paths import raw_root
from boxunet.postprocessing.apply import apply_postprocessing_to_folder, folder_file_ending, label_map_files
from boxunet.postprocessing.components import CONNECTIVITIES, default_connectivity
from boxunet.postprocessing.decision import POSTPROCESSING_FILE_NAME, determine_postprocessing

DEFAULT_NUM_PROCESSES = min(2, default_num_processes())


def _label_or_region(text: str) -> int | tuple[int, ...]:
    """``2`` -> 2, ``1,2`` -> the region (1, 2)."""
    try:
        values = tuple(int(value) for value in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a label (2) or a region (1,2)") from None
    return values if len(values) > 1 else values[0]


def build_determine_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boxunet_determine_postprocessing",
        description="Decide whether keeping only the largest connected component (of the whole foreground, then of "
                    f"each label or region) raises the Dice of PRED against REF; write OUT/{POSTPROCESSING_FILE_NAME} "
                    "and the postprocessed predictions to OUT/postprocessed/.")
    parser.add_argument("-r", "--reference", required=True, type=Path, help="folder of reference label maps")
    parser.add_argument("-p", "--prediction", required=True, type=Path,
                        help="folder of predicted label maps (e.g. a fold's validation/ folder)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="folder for the decision (created)")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("-d", "--dataset", help="take labels and file ending from this raw dataset's dataset.json "
                                                "(default: the dataset.json in PRED)")
    labels.add_argument("-l", "--labels", nargs="+", type=_label_or_region,
                        help="foreground labels, or regions as comma-separated labels (1,2)")
    parser.add_argument("--connectivity", type=int, choices=CONNECTIVITIES[3],
                        help="6 (faces), 18 (and edges) or 26 (and corners) neighbours (default: 18 for datasets "
                             "with box_labels, as [Yang 2020]'s largest-component step; else 26)")
    parser.add_argument("-np", "--num-processes", type=int, default=DEFAULT_NUM_PROCESSES,
                        help="worker processes (default: %(default)s)")
    return parser


def _targets_ending_connectivity(arguments: argparse.Namespace) -> tuple[list, str, int]:
    """The labels or regions to postprocess, the file ending of the label maps and the connectivity."""
    if arguments.labels:
        described = arguments.prediction / DATASET_JSON  # PRED's dataset.json, when it has one, says box dataset
        box_labels = load_dataset_json(arguments.prediction).box_labels if described.is_file() else []
        return (arguments.labels, folder_file_ending(arguments.prediction),
                arguments.connectivity or default_connectivity(box_labels))
    if arguments.dataset:
        description = load_dataset_json(find_dataset_folder(arguments.dataset, raw_root()))
    else:
        _, dataset_json = read_model_files(arguments.prediction, "prediction folder")
        description = parse_dataset_json(dataset_json, str(arguments.prediction / DATASET_JSON))
    return (description.label_set.evaluation_targets, description.file_ending,
            arguments.connectivity or default_connectivity(description.box_labels))


def determine(arguments: argparse.Namespace) -> dict:
    """Run determine_postprocessing with the labels that the arguments select."""
    for folder in (arguments.reference, arguments.prediction):
        if not folder.is_dir():
            raise BoxunetError(f"folder {folder} does not exist")
    targets, file_ending, connectivity = _targets_ending_connectivity(arguments)
    predicted = [path.name[:-len(file_ending)] for path in label_map_files(arguments.prediction, file_ending)]
    return determine_postprocessing(arguments.reference, arguments.prediction, targets, file_ending, arguments.output,
                                    connectivity=connectivity,
                                    num_processes=max(1, arguments.num_processes), case_ids=predicted)


def main_determine(argv: list[str] | None = None) -> None:
    arguments = build_determine_parser().parse_args(argv)
    decision = run_cli(determine, arguments)
    steps = ", ".join(step["name"] for step in decision["steps"]) or "none"
    print(f"foreground Dice {decision['dice_before']:.4f} -> {decision['dice_after']:.4f}; steps: {steps}; "
          f"written to {arguments.output / POSTPROCESSING_FILE_NAME}")


def build_apply_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boxunet_apply_postprocessing",
        description="Apply a postprocessing.json to every label map of a folder (geometry kept); the folder's "
                    "boxunet_plans.json and dataset.json are copied along.")
    parser.add_argument("-i", "--input", required=True, type=Path, help="folder of label maps")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder (not the input folder)")
    parser.add_argument("-pp", "--postprocessing", required=True, type=Path,
                        help=f"{POSTPROCESSING_FILE_NAME} written by boxunet_determine_postprocessing")
    parser.add_argument("--file-ending", default=None,
                        help="ending of the label maps (default: from the input folder's dataset.json, else inferred)")
    parser.add_argument("-np", "--num-processes", type=int, default=DEFAULT_NUM_PROCESSES,
                        help="worker processes (default: %(default)s)")
    return parser


def main_apply(argv: list[str] | None = None) -> None:
    arguments = build_apply_parser().parse_args(argv)
    written = run_cli(apply_postprocessing_to_folder, arguments.input, arguments.output, arguments.postprocessing,
                      file_ending=arguments.file_ending, num_processes=max(1, arguments.num_processes))
    print(f"{len(written)} label map(s) postprocessed into {arguments.output}")
