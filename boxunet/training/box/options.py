"""``BoxThreeStage``'s options and their command-line arguments (``--k``, ``--group-epochs``, ``--loss``)."""
import argparse
from dataclasses import dataclass
from typing import ClassVar

from boxunet.errors import BoxunetError
from boxunet.training.options import TrainingOptions

BOX_LOSSES = ("wce", "vwce", "wce_dice", "vwce_dice")


@dataclass
class BoxThreeStageOptions(TrainingOptions):
    """The run's options plus stage 2's: ``group_networks`` (K), ``group_epochs`` (each group network's epochs;
    None: the run's, fixed when the run starts) and the final network's ``box_loss``."""

    group_networks: int = 3
    group_epochs: int | None = None
    box_loss: str = "vwce"

    MODEL_DEFINING: ClassVar[tuple[str, ...]] = TrainingOptions.MODEL_DEFINING + ("group_networks", "group_epochs",
                                                                                  "box_loss")

    def __post_init__(self):
        super().__post_init__()
        if self.group_epochs is not None and self.group_epochs < 1:
            raise BoxunetError(f"--group-epochs {self.group_epochs}: give at least 1 (or leave it out: --epochs)")
        if self.group_networks is not None and self.group_networks < 0:
            raise BoxunetError(f"--k {self.group_networks}: give 0 (no stage 2) or more group networks")
        if self.box_loss not in BOX_LOSSES:
            raise BoxunetError(f"--loss {self.box_loss!r}: choose one of {', '.join(BOX_LOSSES)}")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        defaults = cls()
        parser.add_argument("--k", type=int, dest="group_networks",
                            help=f"BoxThreeStage: group networks of stage 2 (default {defaults.group_networks}; "
                                 "0 skips stage 2 and trains on the stage-1 masks)")
        parser.add_argument("--group-epochs", type=int, dest="group_epochs",
                            help="BoxThreeStage: epochs of each stage-2 group network (default: --epochs)")
        parser.add_argument("--loss", choices=BOX_LOSSES, dest="box_loss",
                            help="BoxThreeStage: wce (Eq. 8), vwce (Eq. 9, default; with --k 0 it is wce), or either "
                                 "plus soft Dice (wce_dice, vwce_dice; the group networks use the same loss without "
                                 "voxel weights)")

    @classmethod
    def from_saved(cls, saved: dict) -> dict:
        values = super().from_saved(saved)
        if "group_epochs" in values and values["group_epochs"] is None:  # older checkpoints: the run's epochs
            values["group_epochs"] = values.get("epochs")
        return values
