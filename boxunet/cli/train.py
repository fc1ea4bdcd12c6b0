"""``boxunet_train DATASET CONFIGURATION [FOLD]``: train one fold of one configuration and validate it, or,
without a fold, the whole cross-validation (folds 0-4 or ``--folds``), then choose the best model of the
dataset for ``boxunet_predict`` (boxunet.train_folds).

The trainer (``-tr``, else the dataset's default) is resolved first; its options class then adds its own
arguments (``--k``, ``--group-epochs`` and ``--loss`` for BoxThreeStage). ``-h`` lists the options of every
trainer.
"""
import argparse
import functools
import sys

import torch

from boxunet.cli.common import run_cli
from boxunet.errors import BoxunetError
from boxunet.planning.planner import DEFAULT_PLANS_NAME
from boxunet.train_folds import FoldsRequest, check_devices, check_folds, train_folds
from boxunet.trainers import available_trainers, get_trainer, trainer_for_dataset
from boxunet.training.options import TrainingOptions
from boxunet.training.run import TrainingRequest, dataset_plans, run_training
from boxunet.training.trainer import Trainer


def build_parser(options_classes=(TrainingOptions,), add_help: bool = True) -> argparse.ArgumentParser:
    """The arguments of ``boxunet_train`` with those of ``options_classes`` (trainers' options)."""
    parser = argparse.ArgumentParser(prog="boxunet_train", description=__doc__, add_help=add_help,
                                     conflict_handler="resolve")  # options classes repeat their base's arguments
    parser.add_argument("dataset", help="dataset id (1 -> Dataset001_*) or folder name")
    parser.add_argument("configuration", help="2d, 3d_fullres, 3d_lowres, 3d_cascade_fullres or a custom one")
    parser.add_argument("fold", nargs="?", help="0-4, or 'all' to train on every case; without it: every fold of "
                                                "--folds, then model selection")
    parser.add_argument("--folds", nargs="+", help="without FOLD: the folds to train (default: 0 1 2 3 4)")
    parser.add_argument("--devices", type=_device_list,
                        help="without FOLD, with -device cuda: GPUs to train folds on in parallel, one fold per GPU "
                             "at a time, e.g. 0,1,2 (default: the folds one after the other)")
    parser.add_argument("--no-selection", dest="select", action="store_false",
                        help="without FOLD: do not run model selection after the last fold")
    parser.add_argument("-tr", "--trainer", help="trainer name (default: BoxThreeStage when dataset.json has "
                                                  "box_labels, else Trainer)")
    parser.add_argument("-p", "--plans", default=DEFAULT_PLANS_NAME, help="plans identifier (default: %(default)s)")
    parser.add_argument("-device", "--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        choices=["cpu", "cuda", "mps"], help="default: %(default)s")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="data-parallel processes (NCCL on cuda, gloo on cpu); default: %(default)s")
    parser.add_argument("--c", "--continue", dest="continue_training", action="store_true",
                        help="resume from the latest checkpoint (also extends a finished run to a larger --epochs)")
    parser.add_argument("--val-only", action="store_true", help="only rerun validation from checkpoint_final.pth")
    for options_class in options_classes:
        options_class.add_arguments(parser)
    return parser


def _device_list(text: str) -> list[int]:
    try:
        return [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give device numbers separated by commas, e.g. 0,1") from None


def fold_command(argv: list[str], fold: str) -> list[str]:
    """The command that trains ``fold`` alone, as a process of ``--devices``: this command line without
    ``--devices``, for one fold, on CUDA, without model selection (the parent runs it at the end)."""
    kept, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word == "--devices":
            skip = True
        elif not word.startswith("--devices="):
            kept.append(word)
    return [sys.executable, "-m", "boxunet.cli.train", *kept, "--folds", fold, "--no-selection", "-device", "cuda"]


def every_options_class() -> list[type[TrainingOptions]]:
    """The options classes of every available trainer (each once, in the order of the trainers)."""
    classes = []
    for name in available_trainers():
        options_class = get_trainer(name).options_class
        if options_class not in classes:
            classes.append(options_class)
    return classes


class _FlagRecorder(argparse.ArgumentParser):
    """A parser that records the option flags added to it."""

    def __init__(self):
        super().__init__(add_help=False, conflict_handler="resolve")
        self.flags: set[str] = set()

    def add_argument(self, *names, **kwargs):
        self.flags.update(name for name in names if name.startswith("-"))
        return super().add_argument(*names, **kwargs)


def option_flags(options_class: type[TrainingOptions]) -> set[str]:
    """The command-line flags of ``options_class``."""
    recorder = _FlagRecorder()
    options_class.add_arguments(recorder)
    return recorder.flags


def check_trainer_arguments(trainer: type[Trainer], argv: list[str]) -> None:
    """Options of other trainers given to ``trainer`` (``--k`` to BoxFill) are an error that says whose they are."""
    _, unknown = build_parser([trainer.options_class], add_help=False).parse_known_args(argv)
    flags = [flag for flag in unknown if flag.startswith("-")]
    owners = {}
    for name in available_trainers() if flags else ():
        known = option_flags(get_trainer(name).options_class)
        owners.update({flag: name for flag in flags if flag in known and flag not in owners})
    if owners:
        raise BoxunetError(f"{' '.join(owners)}: {trainer.__name__} does not use {'them' if len(owners) > 1 else 'it'} "
                           f"(options of {', '.join(sorted(set(owners.values())))})")


def resolve_trainer(arguments: argparse.Namespace) -> type[Trainer]:
    """The trainer the command line asks for: ``-tr``, or the default of the dataset's plans."""
    return trainer_for_dataset(arguments.trainer, dataset_plans(arguments.dataset, arguments.plans)[1].box_labels)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    every = run_cli(every_options_class)
    if {"-h", "--help"} & set(argv):
        build_parser(every).parse_args(argv)  # the help lists every trainer's options, then exits
    known, _ = build_parser(every, add_help=False).parse_known_args(argv)
    trainer = run_cli(resolve_trainer, known)
    run_cli(check_trainer_arguments, trainer, argv)
    parser = build_parser([trainer.options_class])
    arguments = parser.parse_args(argv)
    options, given = run_cli(trainer.options_class.from_arguments, arguments)
    request = TrainingRequest(arguments.dataset, arguments.configuration, arguments.fold, trainer, arguments.plans,
                              arguments.device, arguments.num_gpus, arguments.continue_training, arguments.val_only,
                              options, explicit_options=given)
    if arguments.fold is None:
        run_cli(check_fold_less_arguments, arguments)
        folds = FoldsRequest(request, arguments.folds, arguments.devices, functools.partial(fold_command, argv),
                             arguments.select)
        run_cli(train_folds, folds, interrupted_hint="rerun the same command: finished folds are skipped and the "
                                                     "interrupted one continues from its last checkpoint")
        return
    if arguments.folds or arguments.devices:
        parser.error("--folds and --devices belong to the form without FOLD (boxunet_train DATASET CONFIGURATION "
                     "--folds 0 1 ...); give either a FOLD or --folds")
    folder = run_cli(run_training, request, interrupted_hint="rerun with --c to continue from the last checkpoint")
    if arguments.progress_bar:
        print(f"results in {folder}")


def check_fold_less_arguments(arguments: argparse.Namespace) -> None:
    """The options of the form without FOLD, before any work: --val-only needs a fold, --devices real GPUs."""
    if arguments.val_only:
        raise BoxunetError("--val-only needs a FOLD (boxunet_train DATASET CONFIGURATION FOLD --val-only); without "
                           "one, folds whose validation is missing are validated anyway")
    if arguments.devices and arguments.num_gpus > 1:
        raise BoxunetError("--devices trains one fold per GPU; --num-gpus > 1 trains one fold on several: choose one")
    check_folds(arguments.folds)
    check_devices(arguments.devices, arguments.device, torch.cuda.device_count())


if __name__ == "__main__":
    main()
