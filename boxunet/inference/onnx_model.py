"""A trained model as ONNX: export (``boxunet_export_onnx``) and prediction with onnxruntime
(``boxunet_predict --backend onnxruntime``, ``Predictor(..., backend="onnxruntime")``).

The export is one graph: the folds' networks (eval mode, no deep supervision) with their logits averaged, input
``image`` (batch, channels, *patch) float32 with a dynamic batch axis, output ``logits`` (batch, outputs, *patch).
Beside it, ``<name>.json`` holds everything the graph needs around it: the plans (spacing, normalization, patch
size, transposition) and dataset.json (labels, regions, channels) it was trained with, the folds, the stamps of
the checkpoints it was made from, the number of outputs and the mirroring axes. Prediction with it runs boxunet's
own preprocessing, sliding window (mirroring included), trainer decision and export, with the graph in place of
the PyTorch networks; a JSON that does not match the model folder (other plans, labels, configuration, folds, or
checkpoints changed since the export) is refused.

onnx, onnxscript (the exporter) and onnxruntime are an optional extra: ``pip install boxunet[onnx]``. Only models
whose trainer predicts with the standard sliding window (``Trainer.predict_preprocessed``) can be exported; the
KiTS pipelines run several networks of their own.
"""
import contextlib
import importlib.util
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from boxunet.errors import BoxunetError
from boxunet.inference.model import TrainedModel
from boxunet.io.atomic import read_json, write_json
from boxunet.io.model_folder import parse_model_folder_name, read_model_files
from boxunet.io.stamps import file_digest, file_stamp
from boxunet.planning.plans import Plans
from boxunet.preprocessing.previous_stage import network_input_channels

FORMAT = "boxunet-onnx/1"
ONNX_FILE_NAME = "model.onnx"  # in the model folder, the default of export and prediction
OPSET = 18
INSTALL_HINT = "install the optional extra: pip install 'boxunet[onnx]' (onnx, onnxscript, onnxruntime)"


def description_file(onnx_file: Path) -> Path:
    """The JSON beside an ONNX file: ``model.onnx`` -> ``model.json``."""
    onnx_file = Path(onnx_file)
    return onnx_file.with_name(f"{onnx_file.stem}.json")


class FoldAverage(nn.Module):
    """The mean of the folds' logits, as one module to export."""

    def __init__(self, networks: list[nn.Module]):
        super().__init__()
        self.networks = nn.ModuleList(networks)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        outputs = [network(image) for network in self.networks]
        # a network with extra heads returns a tuple: the segmentation logits come first, as the sliding window takes
        outputs = [output[0] if isinstance(output, (list, tuple)) else output for output in outputs]
        return torch.stack(outputs).mean(0)


def check_exportable(model: TrainedModel) -> None:
    """Refuse a model whose trainer predicts with more than the standard sliding window of its networks."""
    definers = [cls for cls in model.trainer_class.__mro__ if "predict_preprocessed" in vars(cls)]
    if len(definers) > 1:  # a subclass replaced the engine's sliding window
        raise BoxunetError(f"trainer {model.trainer_class.__name__} predicts with its own pipeline "
                           f"({model.trainer_class.__name__}.predict_preprocessed); ONNX export covers trainers that "
                           "predict with the standard sliding window of their networks")


def export_onnx(model: TrainedModel, output_file: Path) -> tuple[Path, Path]:
    """Write ``model``'s fold-averaged graph to ``output_file`` and its description beside it (module docstring);
    both atomically. Return the two paths."""
    check_exportable(model)
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise BoxunetError(f"ONNX export needs {' and '.join(missing)}: {INSTALL_HINT}")
    output_file = Path(output_file)
    output_file.parent.mkdir(parents=True, exist_ok=True)
    graph = FoldAverage([network.cpu().float() for network in model.networks]).eval()
    example = torch.zeros((1, network_input_channels(model.plans, model.configuration), *model.configuration.patch_size))
    temporary = output_file.with_name(f".tmp_{os.getpid()}_{output_file.name}")
    try:
        with torch.no_grad(), _quiet_exporter():
            torch.onnx.export(graph, (example,), str(temporary), input_names=["image"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},), opset_version=OPSET,
                              dynamo=True, external_data=False, verbose=False)
        os.replace(temporary, output_file)
    finally:
        temporary.unlink(missing_ok=True)
    plans_json, dataset_json = read_model_files(model.folder)
    checkpoints = {key: file_digest(model.folder / key) for key in model.checkpoints}
    description = {"format": FORMAT, "model": model.folder.name, "dataset": model.folder.parent.name,
                   "configuration": model.configuration.name, "folds": model.folds, "checkpoints": checkpoints,
                   "num_outputs": model.num_outputs, "mirror_axes": list(model.mirror_axes),
                   "input_channels": int(example.shape[1]), "patch_size": list(model.configuration.patch_size),
                   "onnx_file": output_file.name, "onnx_sha256": file_digest(output_file),
                   "plans": plans_json, "dataset_json": dataset_json}
    write_json(description, description_file(output_file))
    return output_file, description_file(output_file)


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's notes that concern no boxunet model (torchvision operators it skips, deprecations) hidden."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


class OnnxNetwork(nn.Module):
    """An exported graph run by onnxruntime, called like the PyTorch networks it replaces (float32 in and out)."""

    def __init__(self, onnx_file: Path, device: torch.device):
        super().__init__()
        try:
            import onnxruntime
        except ImportError:
            raise BoxunetError(f"--backend onnxruntime needs onnxruntime: {INSTALL_HINT}") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda"
                     else ["CPUExecutionProvider"])
        try:
            self.session = onnxruntime.InferenceSession(str(onnx_file), options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types for unreadable graphs
            raise BoxunetError(f"file {onnx_file}: not an ONNX graph onnxruntime can run "
                               f"({str(error).splitlines()[0]})") from None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(image.detach().float().cpu().numpy())
        logits = self.session.run(["logits"], {"image": array})[0]
        return torch.from_numpy(logits).to(image.device)


def load_onnx_model(onnx_file: Path, model_folder: Path, trainer_class: type, device: torch.device) -> TrainedModel:
    """The model of ``model_folder`` with its exported graph ``onnx_file`` in place of its networks, after checking
    that the graph's description matches the folder (a BoxunetError says what differs and to export again)."""
    onnx_file, model_folder = Path(onnx_file), Path(model_folder)
    json_file = description_file(onnx_file)
    if not onnx_file.is_file() or not json_file.is_file():
        missing = onnx_file if not onnx_file.is_file() else json_file
        raise BoxunetError(f"{missing} does not exist; export the model first: boxunet_export_onnx -d DATASET -c "
                           f"{parse_model_folder_name(model_folder)[2]} -tr {parse_model_folder_name(model_folder)[0]}")
    description = read_json(json_file)
    plans_json, dataset_json = read_model_files(model_folder)
    problem = _mismatch(description, onnx_file, model_folder, plans_json, dataset_json)
    if problem:
        raise BoxunetError(f"{json_file} does not match model {model_folder}: {problem}; export it again with "
                           "boxunet_export_onnx")
    plans = Plans.from_json(plans_json)
    configuration = plans.configuration(description["configuration"])
    network = OnnxNetwork(onnx_file, device)
    checkpoints = {**{key: file_stamp(model_folder / key) for key in description["checkpoints"]},
                   onnx_file.name: file_stamp(onnx_file)}
    return TrainedModel(model_folder, plans, configuration, dataset_json, trainer_class, list(description["folds"]),
                        [network], tuple(description["mirror_axes"]), int(description["num_outputs"]), checkpoints)


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _mismatch(description: dict, onnx_file: Path, model_folder: Path, plans_json: dict,
              dataset_json: dict) -> str | None:
    """What in an ONNX file's description disagrees with the model folder, or None."""
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        return f"it is not a boxunet ONNX description (format {FORMAT!r})"
    configuration = parse_model_folder_name(model_folder)[2]
    if description.get("dataset") != model_folder.parent.name:
        return f"it was exported from dataset {description.get('dataset')}, not {model_folder.parent.name}"
    if description.get("model") != model_folder.name or description.get("configuration") != configuration:
        return f"it describes model {description.get('model')}"
    if not _same(description.get("plans"), plans_json):
        return "its plans differ from the model's"
    if not _same(description.get("dataset_json"), dataset_json):
        return "its dataset.json (labels, channels) differs from the model's"
    for key, digest in description.get("checkpoints", {}).items():
        path = model_folder / key
        if not path.is_file() or file_digest(path) != digest:
            return f"{key} changed since the export (retrained or deleted)"
    if description.get("onnx_sha256") != file_digest(onnx_file):
        return f"{onnx_file.name} is not the graph this description was written with"
    return None
