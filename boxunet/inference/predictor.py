"""Predict a folder of raw images with a trained model (``boxunet_predict``).

Per case: read and preprocess exactly as in training, sliding-window prediction with every fold's
network (logits averaged, mirroring TTA), export at the input's geometry (optionally with the
cross-validated postprocessing and the probabilities). While the main process predicts one case,
background processes preprocess the next ones and export the previous ones; at most ``workers + 1``
cases wait in each queue, so memory stays bounded however many cases the folder holds.

A case that fails (unreadable voxels, NaN, out of memory in a worker) is reported and the others go on;
outputs are written atomically, so ``continue_prediction`` skips every case that was finished with the same
model and settings from unchanged inputs (boxunet.inference.resume).
"""
import multiprocessing
import sys
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from boxunet.errors import BoxunetError, DatasetError, Problem
from boxunet.inference.export import export_prediction
from boxunet.inference.model import TrainedModel
from boxunet.inference.resume import (case_inputs, earlier_details, kept_cases, made_with, part_files, part_suffix,
                                      report_file, settings_file)
from boxunet.io.atomic import write_json
from boxunet.io.cases import CaseFiles
from boxunet.io.dataset_json import parse_dataset_json
from boxunet.io.images import Geometry, read_channels
from boxunet.io.input_cases import check_output_folder, list_prediction_cases
from boxunet.io.locks import exclusive_folder
from boxunet.io.model_folder import write_model_files
from boxunet.io.verification import (dimension_problems, first_channel_geometries, image_data_problems,
                                     orientation_warnings)
from boxunet.nets.precision import resolve_precision
from boxunet.parallel import share_of
from boxunet.paths import DATASET_JSON
from boxunet.planning.plans import ConfigurationPlan, Plans
from boxunet.postprocessing.apply import load_postprocessing
from boxunet.postprocessing.decision import POSTPROCESSING_FILE_NAME
from boxunet.preprocessing.case import preprocess_case
from boxunet.preprocessing.previous_stage import append_previous_stage, read_previous_stage


@dataclass
class PredictionSettings:
    """How to predict (everything except the model and the folders)."""

    step_size: float = 0.5
    mirroring: bool = True
    precision: str = "auto"
    save_probabilities: bool = False
    postprocessing: bool = True
    workers: int = 1
    continue_prediction: bool = False
    progress: bool = True
    num_parts: int = 1  # --num-parts: this run predicts every num_parts-th case, from part_id on
    part_id: int = 0

    @property
    def part(self) -> tuple[int, int] | None:
        """(part id, number of parts) of a split prediction, else None."""
        return (self.part_id, self.num_parts) if self.num_parts > 1 else None


def preprocess_image(data: np.ndarray, geometry: Geometry, plans: Plans, configuration: ConfigurationPlan,
                     case_id: str = "") -> tuple[np.ndarray, dict]:
    """Preprocess one image held in memory for ``configuration`` exactly as in training: ``data`` (C, *raw shape)
    in raw array order with its ``geometry``; (C, *shape) float32 data and properties. A cascade's network also
    needs the previous stage's channels (``append_previous_stage``)."""
    (_, preprocessed, _, properties), = preprocess_case(data, geometry, plans, [configuration], case_id=case_id)
    return preprocessed.astype(np.float32, copy=False), properties


def read_and_preprocess(case: CaseFiles, plans: Plans, configuration: ConfigurationPlan,
                        previous_stage_file: Path | None = None) -> tuple[np.ndarray, dict]:
    """Read one raw case and preprocess it for ``configuration`` (``preprocess_image``). A cascade's
    ``previous_stage_file`` (the lower stage's segmentation of the case) adds its one-hot channels."""
    data, geometry = read_channels(list(case.images))
    problems = [p for path, channel in zip(case.images, data) for p in image_data_problems(case.case_id, path, channel)]
    if problems:
        raise BoxunetError("; ".join(str(p) for p in problems))
    preprocessed, properties = preprocess_image(data, geometry, plans, configuration, case.case_id)
    if previous_stage_file is not None:
        segmentation = read_previous_stage(previous_stage_file, properties, plans, configuration)
        preprocessed = append_previous_stage(preprocessed, segmentation, plans)
    return preprocessed, properties


def previous_stage_inputs(model: TrainedModel, cases: list[CaseFiles], previous_stage_folder: Path | None,
                          file_ending: str) -> dict[str, Path | None]:
    """Case id -> the previous stage's segmentation file (None for a model without a previous stage); raises
    when a cascade lacks the folder or a case's file."""
    previous = model.configuration.previous_stage
    if previous is None:
        if previous_stage_folder is not None:
            raise BoxunetError(f"configuration {model.configuration.name} has no previous stage; "
                               "--prev-stage-predictions is only for cascades (e.g. 3d_cascade_fullres)")
        return {case.case_id: None for case in cases}
    if previous_stage_folder is None:
        raise BoxunetError(f"configuration {model.configuration.name} needs the {previous} predictions of the same "
                           "images (--prev-stage-predictions)")
    files = {case.case_id: Path(previous_stage_folder) / f"{case.case_id}{file_ending}" for case in cases}
    missing = [case_id for case_id, path in files.items() if not path.is_file()]
    if missing:
        raise BoxunetError(f"--prev-stage-predictions {previous_stage_folder}: no {previous} segmentation for "
                           f"{len(missing)} case(s): {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return files


def output_file(output_folder: Path, case_id: str, file_ending: str) -> Path:
    return Path(output_folder) / f"{case_id}{file_ending}"


def _finished(case_id: str, output_folder: Path, file_ending: str, save_probabilities: bool) -> bool:
    done = output_file(output_folder, case_id, file_ending).is_file()
    return done and (not save_probabilities or (Path(output_folder) / f"{case_id}.npz").is_file())


def model_postprocessing(model: TrainedModel) -> dict | None:
    """The postprocessing that cross-validation chose for this model, if any (``postprocessing.json``)."""
    path = model.folder / POSTPROCESSING_FILE_NAME
    return load_postprocessing(path) if path.is_file() else None


class BackgroundPool:
    """A pool of spawned worker processes, or this process when ``workers`` is 0 or there is one job.
    If a worker dies (e.g. killed for lack of memory), its jobs fail with their case and the remaining
    jobs run in this process."""

    def __init__(self, workers: int, jobs: int):
        self.pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
                     if workers > 0 and jobs > 1 else None)

    @property
    def in_process(self) -> bool:
        return self.pool is None

    def submit(self, function, *args, **kwargs) -> Future:
        if self.pool is not None:
            try:
                return self.pool.submit(function, *args, **kwargs)
            except BrokenProcessPool:
                self.close()
                self.pool = None
        future = Future()
        try:
            future.set_result(function(*args, **kwargs))
        except Exception as error:  # reported per case by the caller
            future.set_exception(error)
        return future

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _failure(case: CaseFiles, error: BaseException) -> Problem:
    message = str(error) if isinstance(error, BoxunetError) else f"{type(error).__name__}: {error}"
    return Problem(case.case_id, str(case.images[0]), message.splitlines()[0] if message else type(error).__name__)


def case_logits(model: TrainedModel, data: np.ndarray, settings: PredictionSettings,
                device: torch.device) -> tuple[np.ndarray, dict]:
    """Logits (K, *shape) of preprocessed ``data`` (C, *shape) by the model's trainer (fold-averaged sliding
    window for most), as float16 (clamped to its range: half what export receives; export resamples in float32),
    and the case's details for the prediction report."""
    logits, details = model.trainer_class.predict_preprocessed(
        model.networks, torch.from_numpy(data), model.configuration, model.num_outputs,
        model.mirror_axes if settings.mirroring else (), settings.step_size, device,
        resolve_precision(device, settings.precision))
    return logits.clamp_(-6e4, 6e4).half().numpy(), details


def check_prediction_inputs(dataset_json: dict, source: str, input_folder: Path, output_folder: Path, images_are_2d: bool,
                            training_axis_codes: list[list[int]]) -> tuple[list[CaseFiles], list[str]]:
    """The cases of ``input_folder``, after every check that needs no voxel data (see list_prediction_cases; their
    dimensionality must be the model's, ``images_are_2d``) and the output folder's position (raises before
    anything is written), and warnings for cases oriented unlike every training image."""
    description = parse_dataset_json(dataset_json, source)
    cases = list_prediction_cases(input_folder, description)
    geometries = first_channel_geometries(cases)
    problems = dimension_problems(geometries, images_are_2d)
    if problems:
        raise DatasetError(problems, header=f"input folder {input_folder} cannot be predicted")
    check_output_folder(input_folder, output_folder)
    return cases, orientation_warnings(geometries, training_axis_codes)


def predict_folder(model: TrainedModel, input_folder: Path, output_folder: Path, settings: PredictionSettings,
                   device: torch.device, previous_stage_folder: Path | None = None) -> dict:
    """Predict every case of ``input_folder`` into ``output_folder``; return the report (also written to
    ``prediction_report.json``). Raises a BoxunetError listing the failed cases after all others are written.
    A cascade model reads each case's previous-stage segmentation from ``previous_stage_folder``."""
    cases, warnings = check_prediction_inputs(model.dataset_json, str(model.folder / DATASET_JSON), input_folder,
                                              output_folder, model.plans.images_are_2d, model.plans.training_axis_codes)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    cases = share_of(sorted(cases, key=lambda case: case.case_id), settings.num_parts, settings.part_id)
    ending = model.dataset_json["file_ending"]
    previous_stage = previous_stage_inputs(model, cases, previous_stage_folder, ending)
    postprocessing = model_postprocessing(model) if settings.postprocessing else None
    precision = resolve_precision(device, settings.precision)
    outputs_made_with = made_with(model, settings.step_size, settings.mirroring, precision, postprocessing)
    inputs = {c.case_id: case_inputs(c, previous_stage[c.case_id]) for c in cases}
    part = settings.part
    with exclusive_folder(output_folder, "prediction", part=part_suffix(part)[1:] or None):
        kept = kept_cases(output_folder, outputs_made_with, inputs, settings.continue_prediction)
        todo = [c for c in cases if not (c.case_id in kept
                                         and _finished(c.case_id, output_folder, ending, settings.save_probabilities))]
        write_model_files(output_folder, model.plans.to_json(), model.folder / DATASET_JSON)
        record = {**outputs_made_with, "input_folder": str(input_folder), "settings": asdict(settings),
                  "previous_stage_folder": None if previous_stage_folder is None else str(previous_stage_folder),
                  "device": str(device), "inputs": inputs}
        write_json(record, settings_file(output_folder, part))
        skipped = sorted(c.case_id for c in cases if c not in todo)
        report = _predict_cases(model, todo, skipped, output_folder, settings, device, previous_stage, postprocessing)
        if part is None:  # the whole folder is recorded now: the parts' records and reports are merged into it
            for path in part_files(output_folder):
                path.unlink()
        return report


def _predict_cases(model: TrainedModel, todo: list[CaseFiles], skipped: list[str], output_folder: Path,
                   settings: PredictionSettings, device: torch.device, previous_stage: dict[str, Path | None],
                   postprocessing: dict | None) -> dict:
    """Predict and export ``todo`` (preprocessing and export in background workers); write and return the report
    (``skipped``: the cases kept from before)."""
    ending = model.dataset_json["file_ending"]
    failed, seconds, details = [], {}, {}
    preprocessing, exporting = BackgroundPool(settings.workers, len(todo)), BackgroundPool(settings.workers, len(todo))
    try:
        queued = deque()
        waiting_exports: deque[tuple[CaseFiles, Future]] = deque()
        upcoming = iter(todo)

        def fill_queue():
            while len(queued) < settings.workers + 1:
                case = next(upcoming, None)
                if case is None:
                    return
                queued.append((case, preprocessing.submit(read_and_preprocess, case, model.plans, model.configuration,
                                                          previous_stage[case.case_id])))

        fill_queue()
        for _ in tqdm(range(len(todo)), desc="prediction", unit="case", disable=not settings.progress):
            case, future = queued.popleft()
            if not preprocessing.in_process:
                fill_queue()  # workers preprocess the next cases while this one is predicted
            try:
                data, properties = future.result()
                start = time.perf_counter()
                logits, case_details = case_logits(model, data, settings, device)
                if case_details:
                    details[case.case_id] = case_details
                seconds[case.case_id] = round(time.perf_counter() - start, 2)
                del data
            except Exception as error:  # reported with its case; the other cases go on
                failed.append(_failure(case, error))
                fill_queue()
                continue
            while len(waiting_exports) > settings.workers:
                _collect(waiting_exports.popleft(), failed)
            waiting_exports.append((case, exporting.submit(
                export_prediction, logits, properties, model.plans, model.configuration,
                output_file(output_folder, case.case_id, ending), settings.save_probabilities, postprocessing)))
            del logits
            fill_queue()  # in-process preprocessing: only after this case is handed to export
        while waiting_exports:
            _collect(waiting_exports.popleft(), failed)
    finally:
        preprocessing.close()
        exporting.close()
    failed_ids = {p.case for p in failed}
    report = {"predicted": sorted(set(seconds) - failed_ids), "skipped": skipped,
              "failed": [{"case": p.case, "file": p.file, "error": p.message} for p in failed],
              "network_seconds": {case_id: value for case_id, value in seconds.items() if case_id not in failed_ids}}
    details = {**earlier_details(output_folder, set(skipped)), **details}
    if details:
        report["details"] = {case_id: value for case_id, value in sorted(details.items()) if case_id not in failed_ids}
    write_json(report, report_file(output_folder, settings.part))
    if failed:
        lines = "\n".join(f"  - {p}" for p in failed)
        raise BoxunetError(f"{len(failed)} of {len(todo)} case(s) failed (the others were written to {output_folder}; "
                           f"rerun with --continue after fixing them):\n{lines}")
    return report


def _collect(waiting: tuple[CaseFiles, Future], failed: list[Problem]) -> None:
    case, future = waiting
    try:
        future.result()
    except Exception as error:  # a worker's failure belongs to its case; the others go on
        failed.append(_failure(case, error))
