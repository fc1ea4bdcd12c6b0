"""Prediction of one image held in memory: the steps of a case of ``boxunet_predict`` (boxunet.inference.predictor)
without its files. Preprocessing as in training, the trainer's fold-averaged sliding window (``case_logits``), then
back to the input's geometry (``prediction_at_raw_geometry``): the label map a file prediction writes, voxel for
voxel, because both run these functions."""
import warnings

import numpy as np
import torch

from boxunet.errors import BoxunetError
from boxunet.inference.export import prediction_at_raw_geometry
from boxunet.inference.model import TrainedModel
from boxunet.inference.predictor import PredictionSettings, case_logits, preprocess_image
from boxunet.io.images import Geometry
from boxunet.io.verification import image_data_problems, orientation_warning
from boxunet.preprocessing.previous_stage import append_previous_stage, previous_stage_to_grid


def check_image_data(data: np.ndarray, geometry: Geometry, model: TrainedModel, name: str) -> None:
    """Refuse an image the model cannot predict: another number of channels or dimensions, a spacing that is not
    positive, NaN or infinite voxels (``name`` says which image in the error); warn when it is oriented unlike every
    training image."""
    expected = model.plans.num_input_channels  # ``data`` is (C, z, y, x): the callers stack the channels
    if len(data) != expected:
        raise BoxunetError(f"{name}: {len(data)} channel(s), the model expects {expected} channel(s)")
    if geometry.is_2d != model.plans.images_are_2d:
        kind = "2D" if model.plans.images_are_2d else "3D"
        raise BoxunetError(f"{name}: is {'2D' if geometry.is_2d else '3D'}, the model was trained on {kind} images")
    spacing = np.asarray(geometry.spacing, dtype=np.float64)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise BoxunetError(f"{name}: spacing {list(geometry.spacing)} (z, y, x) must be positive")
    problems = [p for index, channel in enumerate(data) for p in image_data_problems(name, f"channel {index}", channel)]
    if problems:
        raise BoxunetError("; ".join(str(p) for p in problems))
    warning = orientation_warning(geometry, model.plans.training_axis_codes)
    if warning:
        warnings.warn(f"{name}: {warning}", stacklevel=3)


def predict_preprocessed_case(model: TrainedModel, data: np.ndarray, properties: dict, settings: PredictionSettings,
                              device: torch.device, postprocessing: dict | None = None,
                              with_probabilities: bool = False) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Label map (raw geometry and array order), float16 probabilities or None, and the trainer's details of one
    preprocessed case (``preprocess_image``)."""
    logits, details = case_logits(model, data, settings, device)
    del data
    segmentation, probabilities = prediction_at_raw_geometry(logits, properties, model.plans, model.configuration,
                                                             with_probabilities, postprocessing)
    return segmentation, probabilities, details


def preprocess_for(model: TrainedModel, data: np.ndarray, geometry: Geometry, case_id: str = "",
                   previous_stage: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """``preprocess_image`` for ``model``, with a cascade's ``previous_stage`` label map appended
    (``with_previous_stage``)."""
    preprocessed, properties = preprocess_image(data, geometry, model.plans, model.configuration, case_id)
    return with_previous_stage(preprocessed, properties, geometry, model, previous_stage), properties


def with_previous_stage(preprocessed: np.ndarray, properties: dict, geometry: Geometry, model: TrainedModel,
                        previous_stage: np.ndarray | None) -> np.ndarray:
    """Preprocessed data with a cascade's ``previous_stage`` label map (raw geometry) appended as its one-hot channels;
    the data unchanged for other models; a cascade without one is refused."""
    if not model.configuration.previous_stage:
        return preprocessed
    if previous_stage is None:
        raise BoxunetError(f"configuration {model.configuration.name} needs the {model.configuration.previous_stage} "
                           "prediction of the same image")
    grid = previous_stage_to_grid(np.asarray(previous_stage), geometry, "label map", properties, model.plans,
                                  model.configuration)
    return append_previous_stage(preprocessed, grid, model.plans)
