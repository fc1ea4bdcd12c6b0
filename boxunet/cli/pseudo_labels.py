"""``boxunet_pseudo_labels``: stage-1 pseudo masks from the boxes of a raw dataset (see documentation/box_supervision.md)."""
import argparse
import json
from pathlib import Path

import torch

from boxunet.boxes.pseudo_masks import METHODS, PseudoMaskParameters
from boxunet.boxes.region_mining import RegionMiningParameters
from boxunet.boxes.shape_templates import TemplateParameters
from boxunet.boxes.stage1 import PseudoLabelRequest, generate_pseudo_labels
from boxunet.boxes.tuning import tune_parameters
from boxunet.cli.common import run_cli
from boxunet.errors import BoxunetError
from boxunet.parallel import check_part, default_num_processes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boxunet_pseudo_labels",
        description="Turn the boxes of every training case into a pseudo label map (stage 1 of the box trainer) "
                    "with a 3D ConvCRF (optionally on ACoL localization maps), written with the raw geometry to "
                    "$boxunet_preprocessed/DatasetXXX/pseudo_labels/stage1/, with report.json.")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (1 -> Dataset001_*) or folder name")
    parser.add_argument("--method", choices=METHODS, default="convcrf",
                        help="convcrf (default), boxfill (every box voxel not densely labelled is the box label), "
                             "acol ([Fan 2022]: ACoL region mining on slices, refined by the ConvCRF) or template "
                             "(a shape per box label learned from every case, the ConvCRF's prior in place of the "
                             "ellipsoid: for anatomy whose shape in its box is alike across cases)")
    parser.add_argument("--mining-parameters", default="{}",
                        help='with --method acol: JSON overriding the region miner\'s parameters, e.g. '
                             '\'{"epochs": 20, "negatives": 64}\'; the defaults are the "cpu" preset, '
                             '\'{"preset": "fan2022"}\' gives the paper\'s settings (for a GPU; '
                             'documentation/box_supervision.md)')
    parser.add_argument("--template-parameters", default="{}",
                        help='with --method template: JSON overriding the templates\' parameters, e.g. '
                             '\'{"rounds": 2, "network": {"iterations": 400}}\' (documentation/box_supervision.md)')
    parser.add_argument("--parameters", default="{}",
                        help='JSON overriding parameters, e.g. \'{"rounds": 3, "crf": {"pairwise_weight": 6}}\' '
                             "(defaults and meaning: documentation/box_supervision.md)")
    parser.add_argument("--tune", action="store_true",
                        help="pick the CRF parameters on the cases whose label maps hold the box labels "
                             "(a small grid search; the chosen values go into report.json)")
    parser.add_argument("--tune-cases", type=int, default=10, help="at most this many cases for --tune")
    parser.add_argument("-np", "--num-processes", type=int, default=1, help="worker processes (default: 1)")
    parser.add_argument("-device", "--device", choices=("cpu", "cuda"),
                        default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the ConvCRF and the learned methods' networks run, in the precision training "
                             "uses there (default: cuda when there is a GPU, as boxunet_train)")
    parser.add_argument("--overwrite", action="store_true", help="recompute cases that are already written")
    parser.add_argument("--num-parts", type=int, default=1,
                        help="split the cases into this many disjoint parts, e.g. one per machine (default: 1)")
    parser.add_argument("--part-id", type=int, default=0,
                        help="the part this run makes, 0 to --num-parts - 1; afterwards one run without the two flags "
                             "finds every case made and writes report.json (default: 0)")
    parser.add_argument("--no-pictures", action="store_false", dest="pictures",
                        help="no PNG per case in pictures/ (image, boxes and masks on the slices through each box)")
    parser.add_argument("--quiet", action="store_true")
    return parser


def parse_parameters(text: str) -> PseudoMaskParameters:
    """PseudoMaskParameters with the fields given as JSON (``crf`` fields nested) changed."""
    try:
        overrides = json.loads(text)
        values = PseudoMaskParameters().to_json()
        values["crf"].update(overrides.pop("crf", {}))
        values.update(overrides)
        return PseudoMaskParameters.from_json(values)
    except (ValueError, TypeError, AttributeError) as error:
        raise BoxunetError(f"--parameters {text!r}: {error}") from None


def parse_mining_parameters(text: str) -> RegionMiningParameters:
    """RegionMiningParameters with the fields given as JSON changed."""
    try:
        return RegionMiningParameters.from_options(json.loads(text))
    except (ValueError, TypeError) as error:
        raise BoxunetError(f"--mining-parameters {text!r}: {error}") from None


def parse_template_parameters(text: str) -> TemplateParameters:
    """TemplateParameters with the fields given as JSON (``network`` fields nested) changed."""
    try:
        overrides = json.loads(text)
        values = TemplateParameters().to_json()
        values["network"].update(overrides.pop("network", {}))
        values.update(overrides)
        return TemplateParameters.from_json(values)
    except (ValueError, TypeError, AttributeError) as error:
        raise BoxunetError(f"--template-parameters {text!r}: {error}") from None


def _run(arguments) -> dict:
    mining = parse_mining_parameters(arguments.mining_parameters)
    templates = parse_template_parameters(arguments.template_parameters)
    for flag, text, method in (("--mining-parameters", arguments.mining_parameters, "acol"),
                               ("--template-parameters", arguments.template_parameters, "template")):
        if arguments.method != method and text.strip() not in ("", "{}"):
            raise BoxunetError(f"{flag} applies to --method {method} only")
    request = PseudoLabelRequest(arguments.dataset, arguments.method, parse_parameters(arguments.parameters),
                                 max(1, arguments.num_processes), arguments.device, arguments.overwrite,
                                 not arguments.quiet, mining=mining, templates=templates,
                                 num_parts=arguments.num_parts, part_id=arguments.part_id, pictures=arguments.pictures)
    check_part(request.num_parts, request.part_id)  # before any work
    if arguments.tune:
        request = tune_parameters(request, arguments.tune_cases)
    return generate_pseudo_labels(request)


def main(argv: list[str] | None = None) -> None:
    arguments = build_parser().parse_args(argv)
    torch.set_num_threads(default_num_processes())  # this process's cases use every core (workers: their share)
    report = run_cli(_run, arguments, interrupted_hint="finished cases are kept; rerun the same command to resume")
    if not arguments.quiet:
        for label, summary in report["mean"].items():
            text = ", ".join(f"{key} {value}" for key, value in summary.items())
            print(f"label {label}: {text}")
        print(f"pseudo labels and report.json: {report['output_folder']}")
        if arguments.pictures:
            print(f"a picture per case (image, boxes, masks): {Path(report['output_folder']) / 'pictures'}")


if __name__ == "__main__":
    main()
