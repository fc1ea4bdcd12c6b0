"""``boxunet_predict -i IN -o OUT -d DATASET [-c CONFIGURATION]``: label maps for a folder of new images, with
the model that cross-validation chose (boxunet_train DATASET CONFIGURATION) or the one ``-c`` names."""
import argparse
from pathlib import Path

import torch

from boxunet.cli.common import run_cli
from boxunet.errors import BoxunetError
from boxunet.inference.predictor import PredictionSettings
from boxunet.nets.precision import PRECISIONS
from boxunet.parallel import check_part, default_num_processes
from boxunet.planning.planner import DEFAULT_PLANS_NAME
from boxunet.prediction import PredictionRequest
from boxunet.prediction import predict as run_prediction
from boxunet.training.run import check_device


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="boxunet_predict", description=__doc__)
    parser.add_argument("-i", "--input", required=True, help="folder of <case>_<XXXX><ending> images")
    parser.add_argument("-o", "--output", required=True, help="folder for <case><ending> label maps (created)")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (1 -> Dataset001_*) or folder name")
    parser.add_argument("-c", "--configuration",
                        help="e.g. 3d_fullres, 2d, 3d_lowres (default: the model or ensemble that cross-validation "
                             "chose, with its folds and postprocessing)")
    parser.add_argument("-f", "--folds", nargs="+", default=None,
                        help="folds to ensemble (default: every fold of the model that has the checkpoint)")
    parser.add_argument("-tr", "--trainer", help="default: the trainer boxunet_train uses for this dataset "
                                                  "(BoxThreeStage for box datasets, else Trainer)")
    parser.add_argument("-p", "--plans", default=DEFAULT_PLANS_NAME, help="default: %(default)s")
    parser.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth", help="default: %(default)s")
    parser.add_argument("--step-size", type=float, default=0.5,
                        help="sliding-window step as a fraction of the patch (default: %(default)s)")
    parser.add_argument("--disable-tta", action="store_true", help="no mirroring test-time augmentation (8x faster in 3D)")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write <case>.npz probabilities and <case>.json (needed by boxunet_ensemble)")
    parser.add_argument("--no-postprocessing", action="store_true",
                        help="do not apply the postprocessing chosen by boxunet_find_best_configuration")
    parser.add_argument("-device", "--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        choices=["cpu", "cuda", "mps"], help="default: %(default)s")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="forward-pass precision; auto: fp16 on CUDA, bf16 on CPUs with native bfloat16, "
                             "else fp32 (default: %(default)s)")
    parser.add_argument("-np", "--num-processes", type=int, default=max(1, min(3, default_num_processes() // 2)),
                        help="background processes for preprocessing and for export, each (0: everything in "
                             "the main process; default: %(default)s)")
    parser.add_argument("--prev-stage-predictions", type=Path, default=None,
                        help="cascades (3d_cascade_fullres): a folder with the previous stage's <case><ending> "
                             "segmentations of the same images; without it the previous stage (same trainer, plans "
                             "and folds) predicts them first into OUT/previous_stage_<configuration>/")
    parser.add_argument("--continue", dest="continue_prediction", action="store_true",
                        help="skip cases whose output already exists")
    parser.add_argument("--num-parts", type=int, default=1,
                        help="split the cases into this many disjoint parts, e.g. one per machine or GPU (default: 1)")
    parser.add_argument("--part-id", type=int, default=0,
                        help="the part this run predicts, 0 to --num-parts - 1; afterwards one run without the two "
                             "flags completes the folder and writes its report (default: 0)")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"],
                        help="onnxruntime: run the graph boxunet_export_onnx wrote (fp32) in place of the PyTorch "
                             "networks, with the same preprocessing, sliding window, TTA and export (default: torch)")
    parser.add_argument("--onnx-file", type=Path, default=None,
                        help="with --backend onnxruntime and -c: the exported graph (default: model.onnx in the model "
                             "folder; its description <name>.json beside it)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def predict(arguments: argparse.Namespace) -> dict:
    """Check the arguments, then predict the folder (every check runs before the first case)."""
    check_device(arguments.device)
    if arguments.num_processes < 0:
        raise BoxunetError(f"-np {arguments.num_processes}: give 0 (everything in this process) or more")
    if not 0 < arguments.step_size <= 1:
        raise BoxunetError(f"--step-size {arguments.step_size}: give a fraction of the patch in (0, 1]")
    check_part(arguments.num_parts, arguments.part_id)
    device = torch.device("cuda", 0) if arguments.device == "cuda" else torch.device(arguments.device)
    if device.type == "cpu":
        torch.set_num_threads(default_num_processes())
    settings = PredictionSettings(step_size=arguments.step_size, mirroring=not arguments.disable_tta,
                                  precision=arguments.precision, save_probabilities=arguments.save_probabilities,
                                  postprocessing=not arguments.no_postprocessing, workers=arguments.num_processes,
                                  continue_prediction=arguments.continue_prediction, progress=not arguments.quiet,
                                  num_parts=arguments.num_parts, part_id=arguments.part_id)
    request = PredictionRequest(arguments.input, arguments.output, arguments.dataset, settings, device,
                                arguments.configuration, arguments.folds, arguments.trainer, arguments.plans,
                                arguments.checkpoint, arguments.prev_stage_predictions,
                                log=(lambda message: None) if arguments.quiet else print, backend=arguments.backend,
                                onnx_file=arguments.onnx_file)
    return run_prediction(request)


def main(argv: list[str] | None = None) -> None:
    arguments = build_parser().parse_args(argv)
    report = run_cli(predict, arguments, interrupted_hint="rerun with --continue to skip the finished cases")
    if not arguments.quiet:
        model = report["model"].get("description") or f"{report['model']['folder']}, folds " \
                                                       f"{' '.join(report['model']['folds'])}"
        print(f"{len(report['predicted'])} case(s) predicted, {len(report['skipped'])} skipped, with {model}; "
              f"label maps in {arguments.output}")


if __name__ == "__main__":
    main()
