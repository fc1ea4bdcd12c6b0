"""A trained model for prediction: the model folder's plans and dataset.json plus one network per fold.

A model folder is ``boxunet_results/DatasetXXX/<trainer>__<plans>__<configuration>/``. Training copies
the plans and dataset.json into it, so a model folder (with its ``fold_*/checkpoint_*.pth``) predicts on
its own, without the preprocessed data. Every folder of predictions gets the same two files, which is
what ensembling and postprocessing read.
"""
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from boxunet.errors import BoxunetError
from boxunet.io.atomic import read_json
from boxunet.io.dataset_locator import find_dataset_folder
from boxunet.paths import model_folder_name, results_root
from boxunet.planning.plans import PLANS_FILE_NAME, ConfigurationPlan, Plans, load_plans, save_plans
from boxunet.training.checkpoint import load_checkpoint
from boxunet.training.registry import BOX_TRAINER, STANDARD_TRAINER, default_trainer, get_trainer

DATASET_JSON = "dataset.json"
FOLD_PATTERN = re.compile(r"^fold_(?P<fold>\d+|all)$")


def write_model_files(folder: Path, plans: Plans, dataset_json_file: Path) -> None:
    """Put the plans and a copy of ``dataset_json_file`` into ``folder`` (created if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_plans(plans, folder / PLANS_FILE_NAME)
    if Path(dataset_json_file).resolve() != (folder / DATASET_JSON).resolve():
        shutil.copyfile(dataset_json_file, folder / DATASET_JSON)


def read_model_files(folder: Path, what: str = "model folder") -> tuple[Plans, dict]:
    """The plans and dataset.json of a model or prediction ``folder``; a clear error names what is missing."""
    folder = Path(folder)
    for name in (PLANS_FILE_NAME, DATASET_JSON):
        if not (folder / name).is_file():
            raise BoxunetError(f"{what} {folder} has no {name}; it is written by boxunet_train (model folders), "
                               "boxunet_predict and validation (prediction folders)")
    return load_plans(folder / PLANS_FILE_NAME), read_json(folder / DATASET_JSON)


def default_trainer_of(dataset_folder: Path, plans_name: str, configuration: str) -> str:
    """The trainer ``boxunet_train`` uses without ``-tr`` for a results dataset folder: BoxThreeStage when its
    models' dataset.json has box labels (or, before any training, when only that model exists), else Trainer."""
    for name in (STANDARD_TRAINER, BOX_TRAINER):
        candidate = dataset_folder / model_folder_name(name, plans_name, configuration) / DATASET_JSON
        if candidate.is_file():
            return default_trainer(read_json(candidate).get("box_labels"))
    return STANDARD_TRAINER


def find_model_folder(dataset: str, configuration: str, trainer: str | None, plans_name: str) -> Path:
    """``boxunet_results/DatasetXXX/<trainer>__<plans>__<configuration>``, which must exist (``trainer`` None:
    the default trainer of the dataset, see ``default_trainer_of``)."""
    dataset_folder = find_dataset_folder(dataset, results_root())
    trainer = trainer or default_trainer_of(dataset_folder, plans_name, configuration)
    folder = dataset_folder / model_folder_name(trainer, plans_name, configuration)
    if not folder.is_dir():
        trained = sorted(p.name for p in dataset_folder.iterdir() if len(p.name.split("__")) == 3)
        raise BoxunetError(f"no trained model {folder.name} in {dataset_folder} (trained: {trained or 'none'}); "
                           f"train it with boxunet_train {dataset_folder.name} {configuration} FOLD -tr {trainer}")
    return folder


def parse_model_folder_name(folder: Path) -> tuple[str, str, str]:
    """(trainer, plans name, configuration) of a model folder's name."""
    parts = Path(folder).name.split("__")
    if len(parts) != 3 or not all(parts):
        raise BoxunetError(f"{folder} is not a model folder (<trainer>__<plans>__<configuration>)")
    return parts[0], parts[1], parts[2]


def trained_folds(folder: Path, checkpoint_name: str) -> list[str]:
    """Folds of a model folder that have ``checkpoint_name``, sorted (numbers first, then 'all')."""
    folds = [FOLD_PATTERN.match(p.name).group("fold") for p in Path(folder).iterdir()
             if FOLD_PATTERN.match(p.name) and (p / checkpoint_name).is_file()]
    return sorted(folds, key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0))


@dataclass
class TrainedModel:
    """Everything prediction needs from a model folder."""

    folder: Path
    plans: Plans
    configuration: ConfigurationPlan
    dataset_json: dict
    trainer_name: str
    folds: list[str]
    networks: list[nn.Module]
    mirror_axes: tuple[int, ...]
    num_outputs: int


def load_trained_model(folder: Path, folds: list[str] | None, checkpoint_name: str,
                       device: torch.device) -> TrainedModel:
    """Load the networks of ``folds`` (default: every fold with ``checkpoint_name``) in eval mode without
    deep supervision. Every problem (missing fold, checkpoint, plans) is reported before any network is built."""
    folder = Path(folder)
    trainer_name, _, configuration_name = parse_model_folder_name(folder)
    plans, dataset_json = read_model_files(folder)
    configuration = plans.configuration(configuration_name)
    if folds is None:
        folds = trained_folds(folder, checkpoint_name)
        if len(folds) > 1 and "all" in folds:  # as nnU-Net: the cross-validation folds, not the 'all' model
            folds.remove("all")
        if not folds:
            raise BoxunetError(f"model {folder} has no fold with {checkpoint_name}; train one with boxunet_train, "
                               "or choose another checkpoint with -chk")
    missing = [str(folder / f"fold_{fold}" / checkpoint_name) for fold in folds
               if not (folder / f"fold_{fold}" / checkpoint_name).is_file()]
    if missing:
        raise BoxunetError(f"missing checkpoint(s): {', '.join(missing)}; train these folds or choose the folds with -f")
    trainer_class = get_trainer(trainer_name)
    networks, mirror_axes, num_outputs = [], None, None
    for fold in folds:
        path = folder / f"fold_{fold}" / checkpoint_name
        state = load_checkpoint(path)
        if state["configuration"] != configuration_name:
            raise BoxunetError(f"checkpoint {path} belongs to configuration {state['configuration']}, "
                               f"not {configuration_name}")
        if "num_outputs" not in state:
            raise BoxunetError(f"checkpoint {path} does not record its number of outputs; it was not written by "
                               "boxunet_train")
        fold_outputs = int(state["num_outputs"])
        fold_axes = tuple(state.get("inference_allowed_mirroring_axes", ()))
        if num_outputs is not None and (fold_outputs, fold_axes) != (num_outputs, mirror_axes):
            raise BoxunetError(f"checkpoint {path} has {fold_outputs} outputs and mirror axes {list(fold_axes)}, "
                               f"unlike fold {folds[0]} ({num_outputs}, {list(mirror_axes)}); the folds are not one model")
        num_outputs, mirror_axes = fold_outputs, fold_axes
        network = trainer_class.network_from_checkpoint(plans, configuration, state)
        try:
            network.load_state_dict(state["network_weights"])
        except RuntimeError as error:
            raise BoxunetError(f"checkpoint {path} does not fit the network of {folder / PLANS_FILE_NAME} "
                               f"({str(error).splitlines()[0]})") from None
        if hasattr(network, "set_deep_supervision"):
            network.set_deep_supervision(False)
        networks.append(network.to(device).eval())
        del state
    return TrainedModel(folder, plans, configuration, dataset_json, trainer_name, [str(f) for f in folds], networks,
                        mirror_axes, num_outputs)
