"""The options of a training run that are not in the plans, and their command-line arguments.

``TrainingOptions`` holds what every trainer reads; a trainer with options of its own declares a subclass
as its ``options_class`` (e.g. boxunet.training.box.options), which adds its fields and their arguments.
Options are recorded in debug.json and in every checkpoint; ``--c`` resumes with them (``resumed``).
"""
import argparse
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

from boxunet.errors import BoxunetError
from boxunet.nets.precision import PRECISIONS

SCHEDULES = ("poly", "paper")


@dataclass
class TrainingOptions:
    """Every setting of a run that is not in the plans."""

    epochs: int = 1000
    iterations_per_epoch: int = 250
    validation_iterations: int = 50
    initial_lr: float = 1e-2
    weight_decay: float = 3e-5
    momentum: float = 0.99
    gradient_clip: float = 12.0
    oversample_foreground: float = 0.33
    augmentation_workers: int | None = None
    save_every: int = 10
    seed: int = 12345
    compile: bool = False
    save_probabilities: bool = False
    progress_bar: bool = True
    schedule: str = "poly"  # "poly": SGD + poly decay (nnU-Net); "paper": Adam 1e-3, exponential decay ([Yang 2020])
    precision: str = "auto"  # autocast of the steps (boxunet.nets.precision.resolve_precision)

    # options that change nothing in the result; a resumed run takes them from the command line
    RUNTIME: ClassVar[tuple[str, ...]] = ("augmentation_workers", "save_every", "save_probabilities", "compile",
                                          "progress_bar")
    # options that define the model: a resumed run cannot change them (epochs, iterations, lr can)
    MODEL_DEFINING: ClassVar[tuple[str, ...]] = ("schedule",)

    def __post_init__(self):
        """Counts that would train nothing, or never save, are refused before a run writes anything."""
        at_least = {"--epochs": (self.epochs, 1), "--iters-per-epoch": (self.iterations_per_epoch, 1),
                    "--save-every": (self.save_every, 1), "--val-iters": (self.validation_iterations, 0)}
        wrong = [f"{flag} {value!r} (at least {least})" for flag, (value, least) in at_least.items()
                 if type(value) is not int or value < least]
        if not self.initial_lr > 0:
            wrong.append(f"--initial-lr {self.initial_lr!r} (positive)")
        if wrong:
            raise BoxunetError(f"training options out of range: {', '.join(wrong)}")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The command-line arguments of these options. The result-changing ones default to None, so that
        ``--c`` can tell a given value (which wins) from the resumed run's own."""
        defaults = cls()
        parser.add_argument("--epochs", type=int, help=f"default: {defaults.epochs} (with --c: the resumed run's)")
        parser.add_argument("--iters-per-epoch", type=int, dest="iterations_per_epoch",
                            help=f"default: {defaults.iterations_per_epoch}")
        parser.add_argument("--val-iters", type=int, dest="validation_iterations",
                            help=f"default: {defaults.validation_iterations}")
        parser.add_argument("--initial-lr", type=float, dest="initial_lr", help=f"default: {defaults.initial_lr}")
        parser.add_argument("--save-every", type=int, dest="save_every", default=defaults.save_every,
                            help=f"write checkpoint_latest.pth every N epochs (default: {defaults.save_every})")
        parser.add_argument("--seed", type=int, help=f"default: {defaults.seed}")
        parser.add_argument("--schedule", choices=SCHEDULES,
                            help="poly: SGD + poly decay (default, nnU-Net); paper: Adam 1e-3 with exponential "
                                 "decay ([Yang 2020])")
        parser.add_argument("-np", "--augmentation-workers", type=int, dest="augmentation_workers",
                            help="background augmentation processes (0 = in the main process, for debugging; "
                                 "default: env boxunet_n_proc_DA or the number of CPU cores)")
        parser.add_argument("--compile", action="store_true", help="torch.compile the network (off by default: on a "
                            "CPU it measured no faster, documentation/benchmarks.md)")
        parser.add_argument("--npz", action="store_true", dest="save_probabilities",
                            help="also save validation probabilities (needed for ensembling)")
        parser.add_argument("--precision", choices=PRECISIONS,
                            help="autocast of the training and validation steps; auto: fp16 on CUDA, bf16 on a CPU "
                                 "with native bfloat16 (about 2.6x faster per step than fp32), fp32 elsewhere "
                                 "(default: auto)")
        parser.add_argument("--quiet", action="store_false", dest="progress_bar",
                            help="no progress bars (shown only on a terminal) and no echo of the log (a line per "
                                 "epoch)")

    @classmethod
    def from_arguments(cls, arguments: argparse.Namespace) -> tuple["TrainingOptions", tuple[str, ...]]:
        """The options of parsed ``arguments`` and the names of the result-changing ones that were given."""
        given = {f.name: getattr(arguments, f.name) for f in fields(cls)
                 if f.name not in cls.RUNTIME and getattr(arguments, f.name, None) is not None}
        runtime = {name: getattr(arguments, name) for name in cls.RUNTIME}
        return cls(**given, **runtime), tuple(given)

    @classmethod
    def from_saved(cls, saved: dict) -> dict:
        """The fields of a checkpoint's recorded options that this class knows (subclasses fill in what older
        checkpoints lack)."""
        known = {f.name for f in fields(cls)}
        return {key: value for key, value in saved.items() if key in known}

    def resumed(self, saved: dict, explicit: tuple[str, ...]) -> "TrainingOptions":
        """A resumed run's options: the ``saved`` ones, except those given on the command line (``explicit``)
        and the runtime ones, taken from these; changing one of ``MODEL_DEFINING`` is an error."""
        keep = set(explicit) | set(self.RUNTIME)
        merged = self.from_saved(saved)
        changed = [f"{k} {merged[k]!r} -> {getattr(self, k)!r}" for k in self.MODEL_DEFINING
                   if k in keep and k in merged and merged[k] != getattr(self, k)]
        if changed:
            raise BoxunetError(f"--c: the checkpoint in this model folder was trained with other settings "
                               f"({', '.join(changed)}); continuing it would mix two models. Train the variant in "
                               "another results root (boxunet_results) or plans identifier, or drop --c to train "
                               "it here from scratch (this replaces the model)")
        merged.update({k: getattr(self, k) for k in keep})
        return type(self)(**merged)


def result_options(options: TrainingOptions | dict) -> dict:
    """The options that change a run's result (all but the runtime ones), as a dict."""
    values = asdict(options) if isinstance(options, TrainingOptions) else options
    return {k: v for k, v in values.items() if k not in TrainingOptions.RUNTIME}
