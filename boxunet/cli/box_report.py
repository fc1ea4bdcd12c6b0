"""``boxunet_box_report``: how good a box trainer's masks are, and its test Dice, in one table."""
import argparse
from pathlib import Path

from boxunet.cli.common import run_cli
from boxunet.errors import BoxunetError
from boxunet.evaluation.box_report import box_table
from boxunet.io.atomic import read_json
from boxunet.io.dataset_json import load_dataset_json
from boxunet.io.model_folder import find_model_folder
from boxunet.planning.planner import DEFAULT_PLANS_NAME


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boxunet_box_report",
        description="Print the mean Dice of the boxes, stage-1 masks and fusion masks of a box trainer's training "
                    "cases (its fold's box_report.json, against the dense reference labels) and, with --test, the "
                    "test Dice of the trained model (a boxunet_evaluate summary.json).")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or folder name")
    parser.add_argument("-c", "--configuration", default="3d_fullres")
    parser.add_argument("-tr", "--trainer", default="BoxThreeStage")
    parser.add_argument("-p", "--plans", default=DEFAULT_PLANS_NAME)
    parser.add_argument("-f", "--fold", default="0")
    parser.add_argument("--test", type=Path,
                        help="the evaluated test predictions: their folder (holding summary.json) or the summary file")
    return parser


def report_lines(arguments: argparse.Namespace) -> list[str]:
    """The table and the file each figure comes from."""
    fold_folder = find_model_folder(arguments.dataset, arguments.configuration, arguments.trainer,
                                    arguments.plans) / f"fold_{arguments.fold}"
    report_file = fold_folder / "box_report.json"
    if not report_file.is_file():
        raise BoxunetError(f"{report_file} is missing: the box trainer writes it when its masks are ready "
                           f"(boxunet_train {arguments.dataset} {arguments.configuration} {arguments.fold} "
                           f"-tr {arguments.trainer})")
    summary_file = None
    if arguments.test is not None:
        summary_file = arguments.test / "summary.json" if arguments.test.is_dir() else arguments.test
        if not summary_file.is_file():
            raise BoxunetError(f"{summary_file} is missing: run boxunet_evaluate on the test predictions first")
    report = read_json(report_file)
    names = load_dataset_json(fold_folder.parent).label_set.value_names
    lines = box_table(report, names, read_json(summary_file) if summary_file else None)
    cases = len(report["cases"])
    lines.append(f"boxes, stage-1 and fusion masks: the {cases} training cases of fold {arguments.fold}, {report_file}")
    if summary_file:
        lines.append(f"test: {summary_file}")
    return lines


def main(argv: list[str] | None = None) -> None:
    arguments = build_parser().parse_args(argv)
    print("\n".join(run_cli(report_lines, arguments)))


if __name__ == "__main__":
    main()
