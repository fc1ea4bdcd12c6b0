"""Every trainer by name: the one module that knows them all (``boxunet_train -tr NAME``, prediction).

The built-in trainers are a table of ``"module:Class"`` below, imported only when asked for. Trainers of
other packages are found through the ``boxunet.trainers`` entry-point group of their packaging metadata,
e.g. in their setup.py::

    entry_points={"boxunet.trainers": ["TrainerHalfLR = my_project.trainers:TrainerHalfLR"]}

(documentation/training.md). The engine (boxunet.training) never names a trainer: the command-line layer
resolves a name here and hands the class down.
"""
import importlib
from importlib.metadata import entry_points
from pathlib import Path

from boxunet.errors import BoxunetError
from boxunet.io.atomic import read_json
from boxunet.paths import DATASET_JSON, model_folder_name
from boxunet.training.trainer import Trainer

ENTRY_POINT_GROUP = "boxunet.trainers"
STANDARD_TRAINER = "Trainer"
BOX_TRAINER = "BoxThreeStage"

BUILT_IN_TRAINERS = {
    STANDARD_TRAINER: "boxunet.training.trainer:Trainer",
    BOX_TRAINER: "boxunet.training.box.three_stage:BoxThreeStage",
    "BoxFill": "boxunet.training.box.trainers:BoxFill",
    "BoxIgnore": "boxunet.training.box.trainers:BoxIgnore",
    "PseudoMaskIgnoreBoxBackground": "boxunet.training.box.trainers:PseudoMaskIgnoreBoxBackground",
    "FullySupervised": "boxunet.training.box.trainers:FullySupervised",
    "TwoStepAttention": "boxunet.kits.two_step_trainer:TwoStepAttention",
    "KiTSLocalizationEnsemble": "boxunet.kits.localization_ensemble:KiTSLocalizationEnsemble",
    "KiTSCoarseToFine": "boxunet.kits.coarse_to_fine:KiTSCoarseToFine",
}


def available_trainers() -> dict[str, str]:
    """Name -> ``"module:Class"`` of every trainer: the built-ins, then those of installed packages (an
    installed package may not reuse a built-in name)."""
    found = dict(BUILT_IN_TRAINERS)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in BUILT_IN_TRAINERS:
            raise BoxunetError(f"the {ENTRY_POINT_GROUP} entry point {entry.name} = {entry.value} (package "
                               f"{entry.dist.name if entry.dist else '?'}) reuses the name of a built-in trainer; "
                               "rename it")
        found[entry.name] = entry.value
    return found


def get_trainer(name: str) -> type[Trainer]:
    """The trainer class called ``name``."""
    trainers = available_trainers()
    if name not in trainers:
        raise BoxunetError(f"unknown trainer {name!r}; available: {sorted(trainers)} (add your own through the "
                           f"{ENTRY_POINT_GROUP} entry-point group, see documentation/training.md)")
    module_name, _, class_name = trainers[name].partition(":")
    try:
        trainer = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise BoxunetError(f"trainer {name}: cannot import {trainers[name]} ({error})") from None
    if not (isinstance(trainer, type) and issubclass(trainer, Trainer)):
        raise BoxunetError(f"trainer {name}: {trainers[name]} is not a subclass of boxunet.training.trainer.Trainer")
    if trainer.__name__ != name:  # model folders and checkpoints are named after the class
        raise BoxunetError(f"trainer {name}: the entry point names class {trainer.__name__}; give it the class's name")
    return trainer


def trainer_for_dataset(name: str | None, box_labels) -> type[Trainer]:
    """The trainer ``name``, or without a name the default for a dataset with ``box_labels``."""
    return get_trainer(name or default_trainer(box_labels))


def default_trainer(box_labels) -> str:
    """The trainer used when ``-tr`` is not given: BoxThreeStage for datasets with box labels, else Trainer."""
    return BOX_TRAINER if box_labels else STANDARD_TRAINER


def default_trainer_of(dataset_results: Path, plans_name: str, configuration: str) -> str:
    """The trainer ``boxunet_train`` uses without ``-tr`` for a results dataset folder: BoxThreeStage when its
    models' dataset.json has box labels (or, before any training, when only that model exists), else Trainer."""
    for name in (STANDARD_TRAINER, BOX_TRAINER):
        candidate = dataset_results / model_folder_name(name, plans_name, configuration) / DATASET_JSON
        if candidate.is_file():
            return default_trainer(read_json(candidate).get("box_labels"))
    return STANDARD_TRAINER
