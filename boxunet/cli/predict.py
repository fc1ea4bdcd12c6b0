"""``boxunet_predict -i IN -o OUT -d DATASET -c CONFIGURATION``: label maps for a folder of new images."""
import argparse
from dataclasses import replace
from pathlib import Path

import torch

from boxunet.cli.common import run_cli
from boxunet.errors import BoxunetError
from boxunet.inference.model import load_trained_model
from boxunet.inference.precision import PRECISIONS
from boxunet.inference.predictor import (PredictionSettings, check_prediction_inputs, model_postprocessing,
                                         predict_folder)
from boxunet.io.dataset_locator import find_dataset_folder
from boxunet.io.model_folder import find_model_folder, parse_model_folder_name, read_model_files
from boxunet.parallel import default_num_processes
from boxunet.paths import DATASET_JSON, results_root
from boxunet.planning.planner import DEFAULT_PLANS_NAME
from boxunet.planning.plans import Plans
from boxunet.trainers import default_trainer_of, get_trainer
from boxunet.training.run import check_device


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="boxunet_predict", description=__doc__)
    parser.add_argument("-i", "--input", required=True, help="folder of <case>_<XXXX><ending> images")
    parser.add_argument("-o", "--output", required=True, help="folder for <case><ending> label maps (created)")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (1 -> Dataset001_*) or folder name")
    parser.add_argument("-c", "--configuration", required=True, help="e.g. 3d_fullres, 2d, 3d_lowres")
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
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def predict(arguments: argparse.Namespace) -> dict:
    """Resolve the model and predict the folder (every check runs before the first case)."""
    check_device(arguments.device)
    if arguments.num_processes < 0:
        raise BoxunetError(f"-np {arguments.num_processes}: give 0 (everything in this process) or more")
    if not 0 < arguments.step_size <= 1:
        raise BoxunetError(f"--step-size {arguments.step_size}: give a fraction of the patch in (0, 1]")
    device = torch.device("cuda", 0) if arguments.device == "cuda" else torch.device(arguments.device)
    if device.type == "cpu":
        torch.set_num_threads(default_num_processes())
    trainer = arguments.trainer or default_trainer_of(find_dataset_folder(arguments.dataset, results_root()),
                                                      arguments.plans, arguments.configuration)
    folder = find_model_folder(arguments.dataset, arguments.configuration, trainer, arguments.plans)
    plans_json, dataset_json = read_model_files(folder)
    plans = Plans.from_json(plans_json)
    check_prediction_inputs(dataset_json, str(folder / DATASET_JSON), arguments.input, arguments.output,
                            plans.images_are_2d, plans.training_axis_codes)  # fail before any network is loaded
    model = _load_model(folder, arguments.folds, arguments.checkpoint, device)
    settings = PredictionSettings(step_size=arguments.step_size, mirroring=not arguments.disable_tta,
                                  precision=arguments.precision, save_probabilities=arguments.save_probabilities,
                                  postprocessing=not arguments.no_postprocessing, workers=arguments.num_processes,
                                  continue_prediction=arguments.continue_prediction, progress=not arguments.quiet)
    previous_stage = arguments.prev_stage_predictions
    if settings.postprocessing:
        model_postprocessing(model)  # a broken postprocessing.json fails now, not after the previous stage ran
    if model.configuration.previous_stage and previous_stage is None:
        previous_stage = _predict_previous_stage(arguments, model, settings, device)
    if not arguments.quiet:
        print(f"model {folder}, folds {' '.join(model.folds)}")
    return predict_folder(model, arguments.input, arguments.output, settings, device, previous_stage)


def _predict_previous_stage(arguments: argparse.Namespace, model, settings: PredictionSettings,
                            device: torch.device) -> Path:
    """Run the cascade's previous stage (same trainer, plans, folds and checkpoint) into
    ``OUT/previous_stage_<configuration>/``, without postprocessing, as its cross-validation predictions
    that the cascade trained on; return that folder."""
    name = model.configuration.previous_stage
    folder = find_model_folder(arguments.dataset, name, model.trainer_class.__name__, arguments.plans)
    previous = _load_model(folder, model.folds, arguments.checkpoint, device)
    output = Path(arguments.output) / f"previous_stage_{name}"
    if not arguments.quiet:
        print(f"previous stage: model {folder}, folds {' '.join(previous.folds)} -> {output}")
    predict_folder(previous, arguments.input, output, replace(settings, postprocessing=False, save_probabilities=False),
                   device)
    return output


def _load_model(folder: Path, folds: list[str] | None, checkpoint: str, device: torch.device):
    """The model of ``folder``, its networks rebuilt by the trainer its name gives."""
    return load_trained_model(folder, folds, checkpoint, device, get_trainer(parse_model_folder_name(folder)[0]))


def main(argv: list[str] | None = None) -> None:
    arguments = build_parser().parse_args(argv)
    report = run_cli(predict, arguments, interrupted_hint="rerun with --continue to skip the finished cases")
    if not arguments.quiet:
        print(f"{len(report['predicted'])} case(s) predicted, {len(report['skipped'])} skipped; "
              f"label maps in {arguments.output}")


if __name__ == "__main__":
    main()
