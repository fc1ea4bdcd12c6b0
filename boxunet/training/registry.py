"""Trainers by name, for ``boxunet_train -tr NAME``.

A trainer is a subclass of ``boxunet.training.trainer.Trainer`` registered with ``@register_trainer``.
Trainers in your own modules are found when the modules are listed (comma-separated) in the
environment variable ``boxunet_trainer_modules``, e.g. ``boxunet_trainer_modules=my_project.trainers``.
"""
import importlib
import os

from boxunet.errors import BoxunetError

_TRAINERS: dict[str, type] = {}
EXTERNAL_MODULES_VARIABLE = "boxunet_trainer_modules"


def register_trainer(cls: type) -> type:
    """Class decorator: make ``cls`` selectable by its class name."""
    _TRAINERS[cls.__name__] = cls
    return cls


def _import_trainer_modules() -> None:
    importlib.import_module("boxunet.training.trainer")
    importlib.import_module("boxunet.training.box_trainers")
    importlib.import_module("boxunet.kits.two_step_trainer")
    importlib.import_module("boxunet.kits.localization_ensemble")
    importlib.import_module("boxunet.kits.coarse_to_fine")
    for module in filter(None, (m.strip() for m in os.environ.get(EXTERNAL_MODULES_VARIABLE, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise BoxunetError(f"{EXTERNAL_MODULES_VARIABLE}: cannot import {module!r} ({error})") from None


STANDARD_TRAINER = "Trainer"
BOX_TRAINER = "BoxThreeStage"


def default_trainer(box_labels) -> str:
    """The trainer used when ``-tr`` is not given: BoxThreeStage for datasets with box labels, else Trainer."""
    return BOX_TRAINER if box_labels else STANDARD_TRAINER


def get_trainer(name: str) -> type:
    """The trainer class registered as ``name``."""
    _import_trainer_modules()
    if name not in _TRAINERS:
        raise BoxunetError(f"unknown trainer {name!r}; available: {sorted(_TRAINERS)} (add your own with "
                           f"@register_trainer and {EXTERNAL_MODULES_VARIABLE}, see documentation/training.md)")
    return _TRAINERS[name]

