"""``boxunet_predict`` end to end: resolve the model (named with ``-c``, or the dataset's cross-validated
choice), check everything that needs no voxel, then predict the folder.

The choice (boxunet.ensembling.choice) is a single model, predicted like ``-c`` with all its folds and its
own postprocessing, or an ensemble: every member predicts the cases with probabilities into
``OUT/ensemble_members/<model>/``, their probabilities are averaged into OUT and the ensemble's postprocessing
is applied; the members' folders are removed once the whole folder is done.
"""
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from boxunet.api import Predictor, model_folder_of
from boxunet.ensembling.choice import ChosenModel, load_choice
from boxunet.errors import BoxunetError
from boxunet.inference.ensemble import ensemble_folders
from boxunet.inference.predictor import PredictionSettings, check_prediction_inputs
from boxunet.inference.resume import part_files, part_suffix, report_file
from boxunet.io.atomic import write_json
from boxunet.io.locks import exclusive_folder
from boxunet.io.model_folder import read_model_files
from boxunet.paths import DATASET_JSON
from boxunet.planning.plans import Plans
from boxunet.postprocessing.apply import load_postprocessing, postprocess_files

MEMBERS_FOLDER = "ensemble_members"


@dataclass
class PredictionRequest:
    """What ``boxunet_predict`` was asked to do."""

    input: Path
    output: Path
    dataset: str
    settings: PredictionSettings
    device: torch.device
    configuration: str | None = None  # None: the dataset's cross-validated choice
    folds: list[str] | None = None
    trainer: str | None = None
    plans_name: str = "boxunetPlans"
    checkpoint: str = "checkpoint_final.pth"
    previous_stage: Path | None = None
    log: Callable[[str], None] = print
    backend: str = "torch"  # or "onnxruntime": the graph of boxunet_export_onnx in place of the networks
    onnx_file: Path | None = None  # default: the model folder's model.onnx


def predict(request: PredictionRequest) -> dict:
    """Predict ``request.input`` into ``request.output``; return the report (which names the model)."""
    if request.configuration is None:
        return predict_with_choice(request)
    folder = model_folder_of(request.dataset, request.configuration, request.trainer, request.plans_name)
    report = predict_with_model(request, folder, request.folds)
    _write_report(report, request)
    return report


def _write_report(report: dict, request: PredictionRequest) -> None:
    write_json(report, report_file(request.output, request.settings.part))


def _check_inputs(folder: Path, request: PredictionRequest) -> None:
    """Every check of the input and output folders that needs no voxel and no network."""
    plans_json, dataset_json = read_model_files(folder)
    plans = Plans.from_json(plans_json)
    check_prediction_inputs(dataset_json, str(folder / DATASET_JSON), request.input, request.output,
                            plans.images_are_2d, plans.training_axis_codes)


def predict_with_model(request: PredictionRequest, folder: Path, folds: list[str] | None) -> dict:
    """Predict with the model in ``folder`` (every fold with the checkpoint when ``folds`` is None) through the
    Python API's ``Predictor``."""
    _check_inputs(folder, request)  # fail before any network is loaded
    settings = request.settings
    predictor = Predictor(folder, folds, request.checkpoint, request.device, step_size=settings.step_size,
                          mirroring=settings.mirroring, precision=settings.precision,
                          postprocessing=settings.postprocessing, backend=request.backend,
                          onnx_file=request.onnx_file)
    return predictor.predict_folder(request.input, request.output, save_probabilities=settings.save_probabilities,
                                    workers=settings.workers, continue_prediction=settings.continue_prediction,
                                    progress=settings.progress, num_parts=settings.num_parts,
                                    part_id=settings.part_id, previous_stage_folder=request.previous_stage,
                                    log=request.log)


def predict_with_choice(request: PredictionRequest) -> dict:
    """Predict with the dataset's cross-validated choice: a single model or an ensemble of models."""
    if request.folds or request.trainer or request.previous_stage or request.onnx_file:
        raise BoxunetError("-f, -tr, --prev-stage-predictions and --onnx-file name parts of a model: give -c "
                           "CONFIGURATION with them, or none of them to predict with the cross-validated choice")
    choice = load_choice(request.dataset)
    for member in choice.members if choice.is_ensemble else ():  # all members before the first one predicts
        _check_inputs(member, request)
    request.log(f"predicting with the cross-validated choice: {choice.describe()}")
    if not choice.is_ensemble:
        report = predict_with_model(request, choice.members[0], list(choice.folds))
    else:
        report = _predict_ensemble(request, choice)
    report["model"] = {"choice": choice.name, "description": choice.describe(),
                       "members": [member.name for member in choice.members], "folds": list(choice.folds)}
    _write_report(report, request)
    return report


def _predict_ensemble(request: PredictionRequest, choice: ChosenModel) -> dict:
    """Each member predicts this run's cases with probabilities (kept ones are not predicted again), then their
    average is written to the output folder and the ensemble's postprocessing is applied."""
    settings = request.settings
    with exclusive_folder(request.output, "prediction", part=part_suffix(settings.part)[1:] or None):
        return _ensemble_members(request, choice)


def _ensemble_members(request: PredictionRequest, choice: ChosenModel) -> dict:
    settings = request.settings
    members_folder = Path(request.output) / MEMBERS_FOLDER
    member_settings = replace(settings, save_probabilities=True, postprocessing=False)
    reports = [predict_with_model(replace(request, output=members_folder / member.name, settings=member_settings),
                                  member, list(choice.folds)) for member in choice.members]
    cases = sorted(set(reports[0]["predicted"]) | set(reports[0]["skipped"]))
    ensemble_folders([members_folder / member.name for member in choice.members], request.output,
                     settings.save_probabilities, max(1, settings.workers), case_ids=cases)
    if choice.postprocessing_file is not None:
        ending = read_model_files(choice.members[0])[1]["file_ending"]
        files = [Path(request.output) / f"{case}{ending}" for case in cases]
        postprocess_files([(file, file) for file in files], load_postprocessing(choice.postprocessing_file),
                          max(1, settings.workers))
    if settings.part is None:  # the whole folder is done: the members' probabilities and the parts' reports go
        shutil.rmtree(members_folder)
        for path in part_files(request.output):
            path.unlink()
    return {"predicted": cases, "skipped": [], "failed": [],
            "network_seconds": {case: sum(r["network_seconds"].get(case, 0) for r in reports) for case in cases}}
