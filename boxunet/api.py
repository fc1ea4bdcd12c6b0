"""boxunet from Python: predict images held in memory with a trained model, and stage-1 pseudo masks of one case.

    import SimpleITK as sitk
    from boxunet import Predictor
    predictor = Predictor.from_dataset(900, "3d_fullres")   # or Predictor(MODEL_FOLDER), or the cross-validated choice
    labels = predictor.predict(sitk.ReadImage("case_0000.nii.gz"))   # a SimpleITK label image, the input's geometry

The networks are loaded once. Every prediction runs the functions a case of ``boxunet_predict`` runs
(boxunet.inference.in_memory), so a label map is the one the command writes, voxel for voxel at the same precision;
``boxunet_predict`` itself predicts through ``Predictor.predict_folder``. documentation/python_api.md has the whole
interface.
"""
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from boxunet.boxes.case_masks import case_pseudo_masks
from boxunet.boxes.pseudo_masks import METHODS, PseudoMaskParameters
from boxunet.boxes.stage1 import stage1_folder, stage1_settings
from boxunet.ensembling.choice import load_choice
from boxunet.errors import BoxunetError
from boxunet.inference.export import probabilities_to_segmentation
from boxunet.inference.in_memory import check_image_data, predict_preprocessed_case, preprocess_for, with_previous_stage
from boxunet.inference.model import TrainedModel, load_trained_model
from boxunet.inference.onnx_model import ONNX_FILE_NAME, load_onnx_model
from boxunet.inference.predictor import (BackgroundPool, PredictionSettings, model_postprocessing, predict_folder,
                                         preprocess_image)
from boxunet.io.boxes import Box, box_problem, parse_boxes
from boxunet.io.dataset_json import load_dataset_json
from boxunet.io.dataset_locator import DatasetFolders, find_dataset_folder
from boxunet.io.images import Geometry, array_to_image, image_to_array
from boxunet.io.model_folder import find_model_folder, model_folder_name, parse_model_folder_name
from boxunet.nets.precision import PRECISIONS
from boxunet.paths import raw_root, results_root
from boxunet.planning.planner import DEFAULT_PLANS_NAME
from boxunet.postprocessing.apply import apply_postprocessing, load_postprocessing
from boxunet.trainers import default_trainer_of, get_trainer
from boxunet.training.run import check_device

CHECKPOINT = "checkpoint_final.pth"
BACKENDS = ("torch", "onnxruntime")


def _torch_device(device) -> torch.device:
    """``device`` ("cpu", "cuda", "cuda:1", "mps" or a torch.device), checked to exist here."""
    try:
        device = torch.device("cuda", 0) if device == "cuda" else torch.device(device)
    except (RuntimeError, TypeError):
        raise BoxunetError(f"device {device!r}: give cpu, cuda, cuda:N or mps") from None
    check_device(device.type)
    return device


def model_folder_of(dataset, configuration: str, trainer: str | None = None, plans: str = DEFAULT_PLANS_NAME) -> Path:
    """The model folder of ``dataset`` and ``configuration`` trained by ``trainer`` (default: the one boxunet_train
    uses for the dataset), which must exist."""
    dataset = str(dataset)
    trainer = trainer or default_trainer_of(find_dataset_folder(dataset, results_root()), plans, configuration)
    return find_model_folder(dataset, configuration, trainer, plans)


def load_model(folder: Path, folds: list[str] | None, checkpoint: str, device: torch.device) -> TrainedModel:
    """The model of ``folder`` (``<trainer>__<plans>__<configuration>``), its networks rebuilt by the trainer its
    name gives."""
    return load_trained_model(Path(folder), folds, checkpoint, device, get_trainer(parse_model_folder_name(folder)[0]))


def _channels_of(image, name: str) -> tuple[np.ndarray, Geometry]:
    """(C, z, y, x) array and geometry of a SimpleITK image or a list of one per channel (same geometry)."""
    images = list(image) if isinstance(image, (list, tuple)) else [image]
    if not images:
        raise BoxunetError(f"{name}: no channel image given")
    arrays, geometry = [], None
    for index, channel in enumerate(images):
        array, channel_geometry = image_to_array(channel, f"{name}, channel {index}")
        difference = geometry.mismatch(channel_geometry) if geometry is not None else None
        if difference:
            raise BoxunetError(f"{name}: channel {index} {difference} (channel 0)")
        geometry = geometry or channel_geometry
        arrays.append(array)
    return np.stack(arrays), geometry


def _array_geometry(array, spacing, origin=None, direction=None) -> tuple[np.ndarray, Geometry]:
    """(C, z, y, x) array and geometry of a numpy image (z, y, x) or (C, z, y, x) with its spacing (z, y, x)."""
    array = np.asarray(array)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise BoxunetError(f"array of shape {list(array.shape)}: give (z, y, x) or (channels, z, y, x)")
    if spacing is None:
        raise BoxunetError("a numpy image needs its spacing (z, y, x)")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise BoxunetError(f"spacing {list(spacing)}: give three positive values in (z, y, x) order")
    origin = tuple(float(o) for o in (origin if origin is not None else (0.0, 0.0, 0.0)))
    direction = tuple(float(d) for d in (direction if direction is not None else np.eye(3).ravel()))
    if len(origin) != 3 or len(direction) != 9:
        raise BoxunetError("origin needs 3 values (x, y, z) and direction 9 (row-major, SimpleITK order)")
    return array, Geometry(spacing, origin, direction, tuple(int(n) for n in array.shape[1:]))


class Predictor:
    """A trained model (one model folder, or the cross-validated choice of a dataset: one model or an ensemble)
    held in memory with how it predicts. See the module docstring and documentation/python_api.md."""

    def __init__(self, model_folder, folds=None, checkpoint: str = CHECKPOINT, device="cpu", *,
                 step_size: float = 0.5, mirroring: bool = True, precision: str = "auto", postprocessing: bool = True,
                 backend: str = "torch", onnx_file=None):
        if not 0 < step_size <= 1:
            raise BoxunetError(f"step size {step_size}: give a fraction of the patch in (0, 1]")
        if backend not in BACKENDS:
            raise BoxunetError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        if precision not in PRECISIONS:
            raise BoxunetError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        if backend == "onnxruntime" and precision not in ("auto", "fp32"):
            raise BoxunetError(f"precision {precision}: an exported graph runs in fp32 (give auto or fp32)")
        self.device = _torch_device(device)
        self.settings = PredictionSettings(step_size=step_size, mirroring=mirroring,
                                           precision="fp32" if backend == "onnxruntime" else precision,
                                           postprocessing=postprocessing)
        self.checkpoint, self.backend = checkpoint, backend
        self.folders = [Path(folder) for folder in
                        (model_folder if isinstance(model_folder, (list, tuple)) else [model_folder])]
        if onnx_file is not None and (backend != "onnxruntime" or len(self.folders) > 1):
            raise BoxunetError("an ONNX file is for backend onnxruntime with a single model (an ensemble's members "
                               f"use the {ONNX_FILE_NAME} of their folders)")
        folds = None if folds is None else [str(fold) for fold in folds]
        self.models = [self._load(folder, folds, onnx_file) for folder in self.folders]
        self._check_members()
        single = len(self.models) == 1
        # a single model's own postprocessing, read now so that a broken file fails before any prediction
        self.postprocessing = model_postprocessing(self.model) if postprocessing and single else None
        self.ensemble_postprocessing = None  # an ensemble's, set by from_dataset
        self._previous_stage = None

    def _check_members(self) -> None:
        """An ensemble's members must predict the same labels and need no previous stage."""
        first = self.model
        for folder, model in zip(self.folders[1:], self.models[1:]):
            if (model.plans.labels, model.plans.regions_class_order) != (first.plans.labels,
                                                                         first.plans.regions_class_order):
                raise BoxunetError(f"ensemble members {self.folders[0].name} and {folder.name} have different labels "
                                   f"({first.plans.labels} vs {model.plans.labels}); only models of the same labels "
                                   "ensemble")
        cascades = [f.name for f, m in zip(self.folders, self.models) if m.configuration.previous_stage]
        if cascades and len(self.models) > 1:
            raise BoxunetError(f"ensemble member(s) {', '.join(cascades)} are cascades: an ensemble with a cascade "
                               "predicts through boxunet_predict (without -c) only")

    def _load(self, folder: Path, folds: list[str] | None, onnx_file) -> TrainedModel:
        if self.backend == "torch":
            return load_model(folder, folds, self.checkpoint, self.device)
        trainer_class = get_trainer(parse_model_folder_name(folder)[0])
        model = load_onnx_model(Path(onnx_file or folder / ONNX_FILE_NAME), folder, trainer_class, self.device)
        if folds is not None and sorted(folds) != sorted(model.folds):
            raise BoxunetError(f"the ONNX graph of {folder.name} averages folds {' '.join(model.folds)}, not "
                               f"{' '.join(folds)}; export those folds (boxunet_export_onnx -f ...)")
        return model

    @classmethod
    def from_dataset(cls, dataset, configuration: str | None = None, trainer: str | None = None,
                     plans: str = DEFAULT_PLANS_NAME, folds=None, **options) -> "Predictor":
        """The model of ``dataset`` (id or name) and ``configuration`` trained by ``trainer`` (default: the one
        ``boxunet_train`` uses for the dataset); without ``configuration`` the cross-validated choice of
        ``boxunet_find_best_configuration`` (a single model or an ensemble, its folds and postprocessing)."""
        dataset = str(dataset)
        if configuration is None:
            if folds is not None or trainer is not None:
                raise BoxunetError("folds and trainer name parts of a model: give a configuration with them, or "
                                   "none of them for the cross-validated choice")
            choice = load_choice(dataset)
            predictor = cls(list(choice.members), list(choice.folds), **options)
            if choice.is_ensemble and choice.postprocessing_file is not None and predictor.settings.postprocessing:
                predictor.ensemble_postprocessing = load_postprocessing(choice.postprocessing_file)
            return predictor
        return cls(model_folder_of(dataset, configuration, trainer, plans), folds, **options)

    @property
    def model(self) -> TrainedModel:
        """The model (the first member of an ensemble)."""
        return self.models[0]

    @property
    def previous_stage(self) -> "Predictor | None":
        """A cascade's previous stage (same trainer, plans, folds and checkpoint, no postprocessing), loaded when
        first needed; None for other models."""
        name = self.model.configuration.previous_stage
        if name is None:
            return None
        if self._previous_stage is None:
            trainer, plans, _ = parse_model_folder_name(self.folders[0])
            folder = self.folders[0].parent / model_folder_name(trainer, plans, name)
            if not folder.is_dir():
                raise BoxunetError(f"{self.folders[0].name} is a cascade: its previous stage {folder} is not trained; "
                                   f"train it with boxunet_train DATASET {name} FOLD -tr {trainer}, or give the "
                                   "previous stage's predictions (--prev-stage-predictions)")
            self._previous_stage = Predictor(folder, self.model.folds, self.checkpoint, self.device,
                                             **{**self._options(), "postprocessing": False})
        return self._previous_stage

    def _options(self) -> dict:
        return {"step_size": self.settings.step_size, "mirroring": self.settings.mirroring,
                "precision": self.settings.precision, "postprocessing": self.settings.postprocessing,
                "backend": self.backend}

    def predict(self, image, return_probabilities: bool = False):
        """The label map of a SimpleITK image (or a list of one image per channel) as a SimpleITK image with the
        input's geometry; with ``return_probabilities`` also the float16 class probabilities (K, z, y, x)."""
        data, geometry = _channels_of(image, "image")
        segmentation, probabilities = self._predict_data(data, geometry, "image", return_probabilities)
        label_image = array_to_image(segmentation, geometry)
        return (label_image, probabilities) if return_probabilities else label_image

    def predict_array(self, array, spacing, origin=None, direction=None, return_probabilities: bool = False):
        """The label map (numpy, the input's shape) of a numpy image (z, y, x) or (C, z, y, x) with its spacing in the
        same (z, y, x) order (origin and direction in SimpleITK's order, default identity); with
        ``return_probabilities`` also the float16 probabilities."""
        data, geometry = _array_geometry(array, spacing, origin, direction)
        segmentation, probabilities = self._predict_data(data, geometry, "array", return_probabilities)
        return (segmentation, probabilities) if return_probabilities else segmentation

    def predict_many(self, images, return_probabilities: bool = False, workers: int = 1) -> list:
        """``predict`` for a list of inputs (SimpleITK images or lists of channel images); ``workers`` background
        processes preprocess the next images while one is predicted, as ``boxunet_predict`` does."""
        if workers < 0:
            raise BoxunetError(f"workers {workers}: give 0 (everything in this process) or more")
        inputs = [_channels_of(image, f"image {index}") for index, image in enumerate(images)]
        for index, (data, geometry) in enumerate(inputs):
            self._check(data, geometry, f"image {index}")
        previous = self._previous_segmentations(inputs)
        plans, configuration = self.model.plans, self.model.configuration
        pool, queued, results = BackgroundPool(workers, len(inputs)), [], []
        try:
            for index, (data, geometry) in enumerate(inputs):
                while len(queued) < workers + 1 and len(queued) + index < len(inputs):
                    ahead = index + len(queued)  # plain arrays and plans go to the workers, never the networks
                    queued.append(pool.submit(preprocess_image, *inputs[ahead], plans, configuration, f"image {ahead}"))
                try:
                    preprocessed, properties = queued.pop(0).result()
                except BrokenProcessPool:  # a worker died (memory; a main module workers cannot import): go on here
                    pool.close()
                    pool, queued = BackgroundPool(0, 0), []
                    preprocessed, properties = preprocess_image(data, geometry, plans, configuration, f"image {index}")
                preprocessed = with_previous_stage(preprocessed, properties, geometry, self.model, previous[index])
                segmentation, probabilities = self._from_preprocessed(data, geometry, (preprocessed, properties),
                                                                      f"image {index}", return_probabilities,
                                                                      previous[index])
                label_image = array_to_image(segmentation, geometry)
                results.append((label_image, probabilities) if return_probabilities else label_image)
        finally:
            pool.close()
        return results

    def _check(self, data: np.ndarray, geometry: Geometry, name: str) -> None:
        for model in self.models:
            check_image_data(data, geometry, model, name)

    def _previous_segmentations(self, inputs: list[tuple[np.ndarray, Geometry]]) -> list[np.ndarray | None]:
        """A cascade's previous-stage label maps of checked ``inputs`` (None each for other models)."""
        previous = self.previous_stage
        if previous is None:
            return [None] * len(inputs)
        return [previous._predict_checked(data, geometry, f"image {index}", False)[0]
                for index, (data, geometry) in enumerate(inputs)]

    def _predict_data(self, data: np.ndarray, geometry: Geometry, name: str, with_probabilities: bool):
        self._check(data, geometry, name)
        return self._predict_checked(data, geometry, name, with_probabilities)

    def _predict_checked(self, data: np.ndarray, geometry: Geometry, name: str, with_probabilities: bool):
        previous = self._previous_segmentations([(data, geometry)])[0]
        preprocessed = preprocess_for(self.model, data, geometry, name, previous)
        return self._from_preprocessed(data, geometry, preprocessed, name, with_probabilities, previous)

    def _from_preprocessed(self, data, geometry, preprocessed, name, with_probabilities, previous):
        """Label map and probabilities from the first model's preprocessed data; an ensemble's other members
        preprocess with their own plans and the probabilities are averaged, as boxunet_predict does."""
        if len(self.models) == 1:
            segmentation, probabilities, _ = predict_preprocessed_case(self.model, *preprocessed, self.settings,
                                                                       self.device, self.postprocessing,
                                                                       with_probabilities)
            return segmentation, probabilities
        total = None
        for index, model in enumerate(self.models):
            if index:
                preprocessed = preprocess_for(model, data, geometry, name, previous)
            _, probabilities, _ = predict_preprocessed_case(model, *preprocessed, self.settings, self.device, None,
                                                            True)
            total = probabilities.astype(np.float32) if total is None else total + probabilities
        total /= len(self.models)
        segmentation = probabilities_to_segmentation(total, self.model.plans)
        if self.ensemble_postprocessing:
            segmentation = apply_postprocessing(segmentation, self.ensemble_postprocessing)
        return segmentation, total.astype(np.float16) if with_probabilities else None

    def predict_folder(self, input_folder, output_folder, *, save_probabilities: bool = False, workers: int = 1,
                       continue_prediction: bool = False, progress: bool = True, num_parts: int = 1,
                       part_id: int = 0, previous_stage_folder=None, log=print) -> dict:
        """Predict every ``<case>_<XXXX><ending>`` of ``input_folder`` into ``output_folder`` as ``boxunet_predict -c``
        does with this (single) model: files, resume, parts, report. A cascade without ``previous_stage_folder``
        predicts its previous stage first into ``OUT/previous_stage_<configuration>/``."""
        if len(self.models) > 1:
            raise BoxunetError("predict_folder predicts with one model; boxunet_predict without -c predicts the "
                               "cross-validated ensemble into a folder")
        settings = replace(self.settings, save_probabilities=save_probabilities, workers=workers,
                           continue_prediction=continue_prediction, progress=progress, num_parts=num_parts,
                           part_id=part_id)
        if self.model.configuration.previous_stage and previous_stage_folder is None:
            previous = self.previous_stage
            previous_stage_folder = Path(output_folder) / f"previous_stage_{self.model.configuration.previous_stage}"
            log(f"previous stage: model {previous.folders[0]}, folds {' '.join(previous.model.folds)} -> "
                f"{previous_stage_folder}")
            predict_folder(previous.model, Path(input_folder), previous_stage_folder,
                           replace(settings, postprocessing=False, save_probabilities=False), self.device)
        log(f"model {self.folders[0]}, folds {' '.join(self.model.folds)}")
        report = predict_folder(self.model, Path(input_folder), Path(output_folder), settings, self.device,
                                previous_stage_folder)
        return {**report, "model": {"folder": str(self.folders[0]), "folds": self.model.folds}}


def _boxes_of(boxes, shape: tuple[int, ...], box_labels: list[int]) -> tuple[Box, ...]:
    """Boxes given as ``Box`` objects or as the box file's dicts (``{"label", "min", "max"}``), checked against the
    image's ``shape`` and the box labels."""
    if not all(isinstance(box, Box) for box in boxes):
        boxes = parse_boxes({"boxes": [box if isinstance(box, dict) else {} for box in boxes]}, "boxes")
    problems = [f"box {index}: {problem}" for index, box in enumerate(boxes)
                if (problem := box_problem(box, shape, box_labels))]
    if problems:
        raise BoxunetError("; ".join(problems))
    return tuple(boxes)


def pseudo_masks(image, boxes, dense_labels=None, *, dataset=None, box_labels=None, method: str | None = None,
                 parameters: PseudoMaskParameters | None = None, spacing=None, tight_boxes: bool = True,
                 device: str = "cpu"):
    """Stage-1 masks of one case held in memory: the label map ``boxunet_pseudo_labels`` would write for it.

    ``image``: a SimpleITK image, a list of one per channel, or a numpy (z, y, x) / (C, z, y, x) array with
    ``spacing`` (z, y, x). ``boxes``: ``boxunet.io.boxes.Box`` objects or dicts ``{"label": L, "min": [z, y, x],
    "max": [z, y, x]}`` in voxel indices (max exclusive). ``dense_labels``: the labels of other classes (a SimpleITK
    image or an array of the image's shape, 0 where unknown) or None. With ``dataset`` (id or name) the method,
    parameters, box labels, tightness and learned models (shape templates, region miners) are that dataset's from its
    ``boxunet_pseudo_labels`` run; otherwise ``method`` (default ``convcrf``), ``parameters`` (default
    ``PseudoMaskParameters()``), ``box_labels`` (default: the boxes' labels) and ``tight_boxes``. Returns a SimpleITK
    image for a SimpleITK input, else numpy.
    """
    is_image = not isinstance(image, np.ndarray)
    if is_image:
        data, geometry = _channels_of(image, "image")
    else:
        if spacing is None:
            raise BoxunetError("a numpy image needs its spacing (z, y, x)")
        data, geometry = _array_geometry(image, spacing)
    template_file, miner_files = None, ()
    if dataset is not None:
        if method is not None or parameters is not None or box_labels is not None:
            raise BoxunetError("with dataset, the method, parameters and box labels are the dataset's; give them "
                               "without dataset")
        folders = DatasetFolders.named(find_dataset_folder(str(dataset), raw_root()).name)
        description = load_dataset_json(folders.require_raw("pseudo_masks"))
        method, parameters = stage1_settings(folders.preprocessed)
        box_labels = list(description.box_labels)
        parameters = replace(parameters, tightness=parameters.tightness and description.tight_boxes)
        stage1 = stage1_folder(folders.preprocessed)
        template_file = str(stage1 / "shape_templates.json")
        miner_files = tuple((label, str(stage1 / f"region_miner_label{label}.pth")) for label in box_labels
                            if (stage1 / f"region_miner_label{label}.pth").is_file())  # none: a label without boxes
        missing = [template_file] if method == "template" and not Path(template_file).is_file() else \
            [str(stage1 / "region_miner_label*.pth")] if method == "acol" and not miner_files else []
        if missing:
            raise BoxunetError(f"--method {method} of dataset {folders.name}: {', '.join(missing)} missing; run "
                               f"boxunet_pseudo_labels -d {dataset} --method {method} first")
    else:
        method = method or "convcrf"
        if method not in METHODS or method in ("template", "acol"):
            raise BoxunetError(f"method {method!r}: give convcrf or boxfill, or a dataset whose learned "
                               "models (template, acol) make the masks")
        parameters = replace(parameters or PseudoMaskParameters(),
                             tightness=(parameters or PseudoMaskParameters()).tightness and tight_boxes)
    boxes = list(boxes)
    if box_labels is None:
        box_labels = sorted({box.label if isinstance(box, Box) else box.get("label") for box in boxes
                             if isinstance(box, Box) or (isinstance(box, dict) and isinstance(box.get("label"), int))})
    boxes = _boxes_of(boxes, geometry.shape, list(box_labels))
    dense = None
    if dense_labels is not None:
        dense = (np.asarray(dense_labels) if isinstance(dense_labels, np.ndarray)
                 else image_to_array(dense_labels, "dense labels")[0])
        if tuple(dense.shape) != tuple(geometry.shape):
            raise BoxunetError(f"dense labels of shape {list(dense.shape)} differ from the image's "
                               f"{list(geometry.shape)}")
    result, _ = case_pseudo_masks(data, geometry.spacing, boxes, tuple(box_labels), dense, method, parameters, device,
                                  template_file, miner_files)
    result = result.astype(np.uint8)
    return array_to_image(result, geometry) if is_image else result
