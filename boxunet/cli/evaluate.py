"""``boxunet_evaluate``: compare a folder of predictions with a folder of reference segmentations."""
import argparse
import math
from pathlib import Path

from boxunet.cli.common import run_cli
from boxunet.errors import BoxunetError
from boxunet.evaluation.metrics import evaluate_folders, metric_key
from boxunet.io.dataset_json import DatasetDescription, load_dataset_json
from boxunet.io.dataset_locator import find_dataset_folder
from boxunet.parallel import default_num_processes
from boxunet.paths import preprocessed_root, raw_root

DEFAULT_FILE_ENDING = ".nii.gz"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boxunet_evaluate",
        description="Compute Dice, IoU, HD95, ASSD and volume difference per case and label (or region) and "
                    "write an nnU-Net-style summary.json.")
    parser.add_argument("reference_folder", type=Path, help="folder with the reference segmentations")
    parser.add_argument("prediction_folder", type=Path, help="folder with predictions of the same file names")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-d", "--dataset",
                        help="dataset id or folder name; its dataset.json gives labels or regions, file ending and "
                             "label names (raw root, else preprocessed root)")
    source.add_argument("-l", "--labels", type=int, nargs="+", help="label values to evaluate, e.g. -l 1 2")
    parser.add_argument("-o", "--output", type=Path, help="summary file (default: PREDICTION_FOLDER/summary.json)")
    parser.add_argument("-f", "--file-ending",
                        help=f"file ending of the segmentations (default: the dataset's, or {DEFAULT_FILE_ENDING})")
    parser.add_argument("-np", "--num-processes", type=int, default=min(8, default_num_processes()),
                        help="worker processes (default: %(default)s)")
    parser.add_argument("--no-surface", action="store_true", help="skip HD95, ASSD and KiTS Surface Dice (much faster)")
    parser.add_argument("--nsd-tolerance", type=float, nargs="+", metavar="MM",
                        help="also report Surface Dice (normalized surface distance) at this tolerance in mm: one "
                             "value for every foreground label or region, or one each in their order")
    return parser


def dataset_description(dataset: str) -> DatasetDescription:
    """The dataset.json of ``dataset`` from the raw root, or from the preprocessed root if not in the raw one."""
    try:
        folder = find_dataset_folder(dataset, raw_root())
    except BoxunetError as raw_error:
        try:
            folder = find_dataset_folder(dataset, preprocessed_root())
        except BoxunetError:
            raise BoxunetError(f"{raw_error} (nor in the preprocessed root {preprocessed_root()})") from None
    return load_dataset_json(folder)


def format_summary(summary: dict, names: dict[str, str]) -> str:
    """A compact table of the mean Dice and HD95 per label or region, the foreground mean and, for KiTS labels,
    the KiTS19 composite and the Dice and Surface Dice of the KiTS21 HECs."""
    def number(value) -> str:
        return "-" if value is None or math.isnan(value) else f"{value:.4f}"

    rows = [(f"{key} {names[key]}" if key in names else key, metrics) for key, metrics in summary["mean"].items()]
    rows.append(("foreground mean", summary["foreground_mean"]))
    width = max(len(label) for label, _ in rows + [("kidney_and_masses", None)])
    with_nsd = "nsd_tolerance_mm" in summary
    lines = [f"{'label':<{width}}  {'Dice':>8}  {'HD95 mm':>8}" + (f"  {'SD':>8}" if with_nsd else "")]
    lines += [f"{label:<{width}}  {number(m.get('Dice')):>8}  {number(m.get('HD95')):>8}"
              + (f"  {number(m.get('SurfaceDice')):>8}" if with_nsd else "") for label, m in rows]
    if with_nsd:
        tolerances = ", ".join(f"{key} {value:g}" for key, value in summary["nsd_tolerance_mm"].items())
        lines.append(f"(SD: Surface Dice at the tolerance in mm: {tolerances})")
    if "kits_composite" in summary:
        lines.append(f"{'KiTS composite':<{width}}  {number(summary['kits_composite']['mean']):>8}")
        tolerances = summary["kits"]["tolerance_mm"]
        lines.append(f"{'KiTS HEC':<{width}}  {'Dice':>8}  {'SD':>8}  (Surface Dice at the HEC's tolerance in mm)")
        for name, metrics in summary["kits"]["mean"].items():
            lines.append(f"{name:<{width}}  {number(metrics['Dice']):>8}  {number(metrics.get('SurfaceDice')):>8}  "
                         f"({tolerances[name]:.4f} mm)")
    if "case_classification" in summary:
        classification = summary["case_classification"]
        recall = ", ".join(f"{name} {number(value)}" for name, value in classification["recall"].items())
        lines.append(f"{classification['name']}: accuracy {number(classification['accuracy'])} over "
                     f"{classification['cases']} cases (recall {recall})")
    return "\n".join(lines)


def evaluate(arguments: argparse.Namespace) -> tuple[dict, dict[str, str], Path]:
    """Run the evaluation the parsed command line asks for; return the summary, label names and summary file."""
    label_names, file_ending, case_classification = None, DEFAULT_FILE_ENDING, None
    labels = arguments.labels
    if arguments.dataset is not None:
        description = dataset_description(arguments.dataset)
        label_names, file_ending = description.labels, description.file_ending
        case_classification = description.case_classification
        # the trainer's choice: every foreground region, or every label value (background included)
        labels = description.label_set.evaluation_targets
    if arguments.nsd_tolerance and arguments.no_surface:
        raise BoxunetError("--nsd-tolerance needs the surface metrics that --no-surface skips")
    output = arguments.output or arguments.prediction_folder / "summary.json"
    summary = evaluate_folders(arguments.reference_folder, arguments.prediction_folder, labels,
                               arguments.file_ending or file_ending, output,
                               num_processes=max(1, arguments.num_processes),
                               surface=not arguments.no_surface, label_names=label_names,
                               case_classification=case_classification, nsd_tolerance_mm=arguments.nsd_tolerance)
    names = {metric_key(value): name for name, value in (label_names or {}).items()}
    return summary, names, output


def main(argv: list[str] | None = None) -> None:
    arguments = build_parser().parse_args(argv)
    summary, names, output = run_cli(evaluate, arguments)
    print(format_summary(summary, names))
    print(f"summary: {output}")


if __name__ == "__main__":
    main()
