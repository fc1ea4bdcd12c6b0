"""What one training run works on, resolved once by the run (boxunet.training.run) and handed to the trainer."""
from dataclasses import dataclass
from pathlib import Path

from boxunet.io.dataset_locator import DatasetFolders
from boxunet.planning.plans import ConfigurationPlan, Plans


@dataclass(frozen=True)
class TrainingSetup:
    """One configuration and fold of a dataset: its folders, plans, cases, splits and output folder."""

    folders: DatasetFolders
    plans: Plans
    configuration: ConfigurationPlan
    fold: int | str
    train_cases: list[str]
    val_cases: list[str]
    splits: list[dict]
    output: Path  # the fold's folder, e.g. <model folder>/fold_0
