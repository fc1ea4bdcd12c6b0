"""Set up and run one training (``boxunet_train``): folders, plans, splits, trainer, devices, processes.

The trainer class comes with the request (the command-line layer resolves names in boxunet.trainers); the
run resolves everything else once (``prepare`` -> ``TrainingSetup``), checks it before any process starts
or any file is written, sets the thread count at each process's entry and builds the trainer there.
"""
import contextlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.multiprocessing as mp

from boxunet.errors import BoxunetError
from boxunet.io.atomic import read_json, write_json
from boxunet.io.checkpoint import load_checkpoint
from boxunet.io.dataset_locator import DatasetFolders, find_dataset_folder
from boxunet.io.locks import exclusive_folder
from boxunet.io.model_folder import write_model_files
from boxunet.parallel import default_num_processes
from boxunet.paths import DATASET_JSON, model_folder_name, preprocessed_root
from boxunet.planning.planner import DEFAULT_PLANS_NAME, plans_file
from boxunet.planning.plans import Plans, load_plans
from boxunet.training.distributed import (ProcessGroupInfo, free_port, init_from_environment, init_process_group,
                                          shutdown)
from boxunet.training.options import TrainingOptions
from boxunet.training.previous_stage import previous_stage_files
from boxunet.training.setup import TrainingSetup
from boxunet.training.splits import SPLITS_FILE, fold_cases, load_or_create_splits
from boxunet.training.trainer import Trainer

RESUME_ORDER = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")
RUN_OPTIONS_FILE = "run_options.json"  # the options a run started with


@dataclass
class TrainingRequest:
    """What ``boxunet_train`` was asked to do."""

    dataset: str
    configuration: str
    fold: str
    trainer: type[Trainer]  # resolved by name in boxunet.trainers
    plans_name: str = DEFAULT_PLANS_NAME
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    num_gpus: int = 1
    continue_training: bool = False
    validation_only: bool = False
    options: TrainingOptions | None = None  # None: the defaults of the trainer's options_class
    explicit_options: tuple[str, ...] = ()  # options given on the command line; they win over a resumed run's

    @property
    def trainer_options(self) -> TrainingOptions:
        return self.trainer.options_class() if self.options is None else self.options


def _parse_fold(fold: str) -> int | str:
    if fold == "all":
        return fold
    if not fold.isdigit():
        raise BoxunetError(f"fold {fold!r}: give 0-4 (or a higher number for an extra random split) or 'all'")
    return int(fold)


def _preprocessed_case_ids(folder: Path, dataset: str, configuration: str) -> list[str]:
    if not folder.is_dir():
        raise BoxunetError(f"no preprocessed data in {folder}; run boxunet_plan_and_preprocess -d {dataset} -c {configuration}")
    ids = sorted(p.name[:-5] for p in folder.glob("*.json") if not p.name.startswith("."))
    if not ids:
        raise BoxunetError(f"{folder} holds no finished case; run boxunet_plan_and_preprocess -d {dataset} -c {configuration}")
    return ids


def check_device(device: str, num_gpus: int = 1) -> None:
    """A clear error when ``device`` (cpu, cuda, mps) cannot run ``num_gpus`` processes here."""
    if device not in ("cpu", "cuda", "mps"):
        raise BoxunetError(f"-device {device!r}: choose cpu, cuda or mps")
    if device == "cuda" and torch.cuda.device_count() < num_gpus:
        raise BoxunetError(f"-device cuda with --num-gpus {num_gpus}, but {torch.cuda.device_count()} CUDA device(s) "
                           "are visible; use -device cpu or fewer GPUs")
    if device == "mps" and not torch.backends.mps.is_available():
        raise BoxunetError("-device mps: MPS is not available on this machine")
    if device == "mps" and num_gpus > 1:
        raise BoxunetError("--num-gpus > 1 needs -device cuda (NCCL) or -device cpu (gloo)")


def dataset_plans(dataset: str, plans_name: str) -> tuple[Path, Plans]:
    """The preprocessed folder of ``dataset`` and its plans ``plans_name``."""
    folder = find_dataset_folder(dataset, preprocessed_root())
    return folder, load_plans(plans_file(folder, plans_name))


def prepare(request: TrainingRequest) -> TrainingSetup:
    """Resolve and check everything a training needs, before any process starts or any file is written."""
    folder, plans = dataset_plans(request.dataset, request.plans_name)
    folders = DatasetFolders.named(folder.name)
    configuration = plans.configuration(request.configuration)
    trainer_name = request.trainer.__name__
    request.trainer.check_options(request.trainer_options)
    fold = _parse_fold(str(request.fold))
    check_device(request.device, request.num_gpus)
    case_ids = _preprocessed_case_ids(folder / configuration.data_identifier, request.dataset, request.configuration)
    splits = load_or_create_splits(folder, case_ids, folders.raw)
    train, val = fold_cases(splits, fold, case_ids, str(folder / SPLITS_FILE))
    file_ending = read_json(folder / DATASET_JSON)["file_ending"]
    if configuration.previous_stage:  # a cascade: its inputs must exist before anything is written
        previous_stage_files(folders.results, trainer_name, request.plans_name, configuration.name,
                             configuration.previous_stage, train + val, file_ending, splits)
    output = folders.results / model_folder_name(trainer_name, request.plans_name, request.configuration) / f"fold_{fold}"
    if request.validation_only and not (output / "checkpoint_final.pth").is_file():
        raise BoxunetError(f"--val-only needs {output / 'checkpoint_final.pth'}; finish the training first")
    return TrainingSetup(folders, plans, configuration, fold, train, val, splits, output)


def _train_in_process(group: ProcessGroupInfo, request: TrainingRequest, setup: TrainingSetup) -> None:
    if group.device.type == "cpu":  # the process's entry: the only place the thread count is set
        torch.set_num_threads(max(1, default_num_processes() // group.local_world_size))
    setup.output.mkdir(parents=True, exist_ok=True)
    if group.is_main:
        write_model_files(setup.output.parent, setup.plans.to_json(), setup.folders.preprocessed / DATASET_JSON)
    options = request.trainer_options
    resume_from, saved_options = resume_checkpoint(setup.output) if request.continue_training else (None, None)
    if request.continue_training and resume_from is None and (setup.output / RUN_OPTIONS_FILE).is_file():
        saved_options = read_json(setup.output / RUN_OPTIONS_FILE)["options"]  # stopped before its first checkpoint
    if saved_options is not None:
        options = options.resumed(saved_options, request.explicit_options)
    if group.is_main and resume_from is None and not request.validation_only:
        # what --c resumes with when the run stops before its first checkpoint (e.g. during stage 2)
        write_json({"trainer": request.trainer.__name__, "options": asdict(options)}, setup.output / RUN_OPTIONS_FILE)
    trainer = request.trainer(setup, options, group)
    try:
        trainer.initialize()
        if request.validation_only:
            trainer.load(setup.output / "checkpoint_final.pth", weights_only=True)
        else:
            if resume_from:
                trainer.load(resume_from)
                if trainer.log:
                    trainer.log(f"resuming from {resume_from.name} at epoch {trainer.current_epoch}")
            elif request.continue_training and trainer.log:
                started = "with the options it was started with" if saved_options is not None else "a new training"
                trainer.log(f"--c: no checkpoint found, starting the run again, {started}")
            trainer.run_training()
        trainer.perform_validation()
    finally:
        trainer.close_iterators()


def resume_checkpoint(output: Path) -> tuple[Path | None, dict | None]:
    """The checkpoint that got furthest (final before latest before best when they tie) and its run
    options, or (None, None)."""
    found = []
    for rank, name in enumerate(RESUME_ORDER):
        if (output / name).is_file():
            state = load_checkpoint(output / name)
            found.append((state["current_epoch"], -rank, output / name, state["options"]))
            del state
    if not found:
        return None, None
    _, _, path, options = max(found, key=lambda item: item[:2])
    return path, options


def _spawned_worker(rank: int, world_size: int, port: int, request: TrainingRequest, setup: TrainingSetup) -> None:
    group = init_process_group(rank, world_size, request.device, port)
    try:
        _train_in_process(group, request, setup)
    finally:
        shutdown(group)


def run_training(request: TrainingRequest, group: ProcessGroupInfo | None = None) -> Path:
    """Train (or resume, or only validate) one fold; return the fold's output folder. The fold folder is held
    for the run (boxunet.io.locks): a second run of the same fold is refused.

    Under torchrun the run joins the group its environment describes (and leaves it at the end), unless the
    caller passes the ``group`` it already joined (several folds in one group: boxunet.train_folds)."""
    setup = prepare(request)
    joined = group is None
    group = init_from_environment(request.device) if group is None else group
    held = exclusive_folder(setup.output, "training") if group is None or group.is_main else contextlib.nullcontext()
    with held:
        if group is not None:
            try:
                _train_in_process(group, request, setup)
            finally:
                if joined:
                    shutdown(group)
        elif request.num_gpus > 1:
            os.environ.setdefault("OMP_NUM_THREADS", str(max(1, default_num_processes() // request.num_gpus)))
            mp.spawn(_spawned_worker, args=(request.num_gpus, free_port(), request, setup), nprocs=request.num_gpus,
                     join=True)
        else:
            device = torch.device("cuda", 0) if request.device == "cuda" else torch.device(request.device)
            _train_in_process(ProcessGroupInfo(0, 1, device), request, setup)
    return setup.output
