"""``boxunet_train DATASET CONFIGURATION FOLD``: train one fold of one configuration, then validate it."""
import argparse

import torch

from boxunet.cli.common import run_cli
from boxunet.planning.planner import DEFAULT_PLANS_NAME
from boxunet.trainers import trainer_for_dataset
from boxunet.training.run import TrainingRequest, dataset_plans, run_training
from boxunet.training.box_trainers import BOX_LOSSES
from boxunet.training.trainer import SCHEDULES, TrainingOptions

SCHEDULE_OPTIONS = ("epochs", "iterations_per_epoch", "validation_iterations", "initial_lr", "save_every", "seed",
                    "schedule", "group_networks", "group_epochs", "box_loss")


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainingOptions()
    parser = argparse.ArgumentParser(prog="boxunet_train", description=__doc__)
    parser.add_argument("dataset", help="dataset id (1 -> Dataset001_*) or folder name")
    parser.add_argument("configuration", help="2d, 3d_fullres, 3d_lowres, 3d_cascade_fullres or a custom one")
    parser.add_argument("fold", help="0-4, or 'all' to train on every case")
    parser.add_argument("-tr", "--trainer", help="trainer name (default: BoxThreeStage when dataset.json has "
                                                  "box_labels, else Trainer)")
    parser.add_argument("-p", "--plans", default=DEFAULT_PLANS_NAME, help="plans identifier (default: %(default)s)")
    # these default to None so that --c can tell given values (which win) from the resumed run's own
    parser.add_argument("--epochs", type=int, help=f"default: {defaults.epochs} (with --c: the resumed run's)")
    parser.add_argument("--iters-per-epoch", type=int, dest="iterations_per_epoch",
                        help=f"default: {defaults.iterations_per_epoch}")
    parser.add_argument("--val-iters", type=int, dest="validation_iterations",
                        help=f"default: {defaults.validation_iterations}")
    parser.add_argument("--initial-lr", type=float, dest="initial_lr", help=f"default: {defaults.initial_lr}")
    parser.add_argument("--save-every", type=int, dest="save_every",
                        help=f"write checkpoint_latest.pth every N epochs (default: {defaults.save_every})")
    parser.add_argument("--seed", type=int, help=f"default: {defaults.seed}")
    parser.add_argument("--schedule", choices=SCHEDULES,
                        help="poly: SGD + poly decay (default, nnU-Net); paper: Adam 1e-3 with exponential decay (seed 000)")
    parser.add_argument("--k", type=int, dest="group_networks",
                        help=f"box trainers: group networks of stage 2 (default {defaults.group_networks}; 0 skips "
                             "stage 2 and trains on the stage-1 masks)")
    parser.add_argument("--group-epochs", type=int, dest="group_epochs",
                        help="box trainers: epochs of each stage-2 group network (default: --epochs)")
    parser.add_argument("--loss", choices=BOX_LOSSES, dest="box_loss",
                        help="BoxThreeStage: wce (Eq. 8), vwce (Eq. 9, default; with --k 0 it is wce), or either plus soft Dice "
                             "(wce_dice, vwce_dice; the group networks use the same loss without voxel weights)")
    parser.add_argument("-np", "--augmentation-workers", type=int, default=None,
                        help="background augmentation processes (0 = in the main process, for debugging; default: "
                             "env boxunet_n_proc_DA or the number of CPU cores)")
    parser.add_argument("-device", "--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        choices=["cpu", "cuda", "mps"], help="default: %(default)s")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="data-parallel processes (NCCL on cuda, gloo on cpu); default: %(default)s")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (CUDA only)")
    parser.add_argument("--c", "--continue", dest="continue_training", action="store_true",
                        help="resume from the latest checkpoint (also extends a finished run to a larger --epochs)")
    parser.add_argument("--npz", action="store_true", help="also save validation probabilities (needed for ensembling)")
    parser.add_argument("--val-only", action="store_true", help="only rerun validation from checkpoint_final.pth")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or log echo")
    return parser


def main(argv: list[str] | None = None) -> None:
    arguments = build_parser().parse_args(argv)
    given = {name: getattr(arguments, name) for name in SCHEDULE_OPTIONS if getattr(arguments, name) is not None}
    options = TrainingOptions(**given, augmentation_workers=arguments.augmentation_workers, compile=arguments.compile,
                              save_probabilities=arguments.npz, progress_bar=not arguments.quiet)
    folder = run_cli(_train, arguments, options, tuple(given),
                     interrupted_hint="rerun with --c to continue from the last checkpoint")
    if not arguments.quiet:
        print(f"results in {folder}")


def _train(arguments: argparse.Namespace, options: TrainingOptions, given: tuple[str, ...]):
    trainer = trainer_for_dataset(arguments.trainer, dataset_plans(arguments.dataset, arguments.plans)[1].box_labels)
    request = TrainingRequest(arguments.dataset, arguments.configuration, arguments.fold, trainer, arguments.plans,
                              arguments.device, arguments.num_gpus, arguments.continue_training, arguments.val_only,
                              options, explicit_options=given)
    return run_training(request)


if __name__ == "__main__":
    main()
