"""``boxunet_export_onnx -d DATASET -c CONFIGURATION [-f FOLDS] [-o FILE]``: a trained model as one ONNX graph (the
folds' logits averaged) plus ``<name>.json`` with what preprocessing and export need (boxunet.inference.onnx_model;
``boxunet_predict --backend onnxruntime`` predicts with it)."""
import argparse
from pathlib import Path

import torch

from boxunet.api import load_model, model_folder_of
from boxunet.cli.common import run_cli
from boxunet.inference.onnx_model import ONNX_FILE_NAME, export_onnx
from boxunet.planning.planner import DEFAULT_PLANS_NAME


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="boxunet_export_onnx", description=__doc__)
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (1 -> Dataset001_*) or folder name")
    parser.add_argument("-c", "--configuration", required=True, help="e.g. 3d_fullres, 2d, 3d_lowres")
    parser.add_argument("-f", "--folds", nargs="+", default=None,
                        help="folds averaged in the graph (default: every fold of the model with the checkpoint)")
    parser.add_argument("-tr", "--trainer", help="default: the trainer boxunet_train uses for this dataset")
    parser.add_argument("-p", "--plans", default=DEFAULT_PLANS_NAME, help="default: %(default)s")
    parser.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth", help="default: %(default)s")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help=f"the ONNX file (default: {ONNX_FILE_NAME} in the model folder, where boxunet_predict "
                             "--backend onnxruntime looks); its description goes beside it as <name>.json")
    return parser


def export(arguments: argparse.Namespace) -> tuple[Path, Path]:
    """Load the model's folds on the CPU and export them."""
    folder = model_folder_of(arguments.dataset, arguments.configuration, arguments.trainer, arguments.plans)
    model = load_model(folder, arguments.folds, arguments.checkpoint, torch.device("cpu"))
    return export_onnx(model, arguments.output or folder / ONNX_FILE_NAME)


def main(argv: list[str] | None = None) -> None:
    arguments = build_parser().parse_args(argv)
    onnx_file, description = run_cli(export, arguments)
    print(f"wrote {onnx_file} and {description}")


if __name__ == "__main__":
    main()
