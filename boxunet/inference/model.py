"""A trained model for prediction: the model folder's plans and dataset.json plus one network per fold
(boxunet.io.model_folder describes the folder). The trainer class that trained it is given by the caller
(the command-line layer finds it by the name in the folder's name): it rebuilds the networks of the
checkpoints and predicts a preprocessed case."""
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from boxunet.errors import BoxunetError
from boxunet.io.checkpoint import load_checkpoint
from boxunet.io.model_folder import parse_model_folder_name, read_model_files, trained_folds
from boxunet.io.stamps import file_stamp
from boxunet.paths import PLANS_FILE_NAME
from boxunet.planning.plans import ConfigurationPlan, Plans


@dataclass
class TrainedModel:
    """Everything prediction needs from a model folder."""

    folder: Path
    plans: Plans
    configuration: ConfigurationPlan
    dataset_json: dict
    trainer_class: type
    folds: list[str]
    networks: list[nn.Module]
    mirror_axes: tuple[int, ...]
    num_outputs: int
    checkpoints: dict[str, list[int]]  # "fold_X/<checkpoint name>" -> its stamp (boxunet.io.stamps)


def load_trained_model(folder: Path, folds: list[str] | None, checkpoint_name: str, device: torch.device,
                       trainer_class: type) -> TrainedModel:
    """Load the networks of ``folds`` (default: every fold with ``checkpoint_name``) in eval mode without
    deep supervision, rebuilt by ``trainer_class`` (the trainer named in the folder's name). Every problem
    (missing fold, checkpoint, plans) is reported before any network is built."""
    folder = Path(folder)
    _, _, configuration_name = parse_model_folder_name(folder)
    plans_json, dataset_json = read_model_files(folder)
    plans = Plans.from_json(plans_json)
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
    networks, mirror_axes, num_outputs = [], None, None
    checkpoints = {f"fold_{fold}/{checkpoint_name}": file_stamp(folder / f"fold_{fold}" / checkpoint_name)
                   for fold in folds}  # before they are read
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
        network = trainer_class.build_network(plans, configuration, fold_outputs, state)
        try:
            network.load_state_dict(state["network_weights"])
        except RuntimeError as error:
            raise BoxunetError(f"checkpoint {path} does not fit the network of {folder / PLANS_FILE_NAME} "
                               f"({str(error).splitlines()[0]})") from None
        if hasattr(network, "set_deep_supervision"):
            network.set_deep_supervision(False)
        networks.append(network.to(device).eval())
        del state
    return TrainedModel(folder, plans, configuration, dataset_json, trainer_class, [str(f) for f in folds], networks,
                        mirror_axes, num_outputs, checkpoints)
