"""``boxunet_train DATASET CONFIGURATION FOLD``: train one fold of one configuration, then validate it.

The trainer (``-tr``, else the dataset's default) is resolved first; its options class then adds its own
arguments (``--k``, ``--group-epochs`` and ``--loss`` for BoxThreeStage). ``-h`` lists the options of every
trainer.
"""
import argparse
import sys

import torch

from boxunet.cli.common import run_cli
from boxunet.errors import BoxunetError
from boxunet.planning.planner import DEFAULT_PLANS_NAME
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
    parser.add_argument("fold", help="0-4, or 'all' to train on every case")
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
    arguments = build_parser([trainer.options_class]).parse_args(argv)
    options, given = trainer.options_class.from_arguments(arguments)
    request = TrainingRequest(arguments.dataset, arguments.configuration, arguments.fold, trainer, arguments.plans,
                              arguments.device, arguments.num_gpus, arguments.continue_training, arguments.val_only,
                              options, explicit_options=given)
    folder = run_cli(run_training, request, interrupted_hint="rerun with --c to continue from the last checkpoint")
    if arguments.progress_bar:
        print(f"results in {folder}")


if __name__ == "__main__":
    main()
