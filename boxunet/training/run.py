"""Set up and run one training (``boxunet_train``): folders, plans, splits, trainer, devices, processes."""
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import torch.multiprocessing as mp

from boxunet.errors import BoxunetError
from boxunet.io.model_folder import write_model_files
from boxunet.io.atomic import read_json
from boxunet.io.checkpoint import load_checkpoint
from boxunet.io.dataset_locator import find_dataset_folder
from boxunet.parallel import default_num_processes
from boxunet.paths import PLANS_FILE_NAME, model_folder, preprocessed_root, raw_root
from boxunet.planning.planner import DEFAULT_PLANS_NAME
from boxunet.planning.plans import Plans, load_plans
from boxunet.training.distributed import (ProcessGroupInfo, free_port, init_from_environment, init_process_group,
                                          shutdown)
from boxunet.training.previous_stage import previous_stage_files
from boxunet.training.splits import fold_cases, load_or_create_splits
from boxunet.training.trainer import RUNTIME_OPTIONS, Trainer, TrainingOptions

RESUME_ORDER = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


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
    options: TrainingOptions = field(default_factory=TrainingOptions)
    explicit_options: tuple[str, ...] = ()  # options given on the command line; they win over a resumed run's


def plans_file(preprocessed_dataset_folder: Path, plans_name: str) -> Path:
    return preprocessed_dataset_folder / (PLANS_FILE_NAME if plans_name == DEFAULT_PLANS_NAME else f"{plans_name}.json")


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


def prepare(request: TrainingRequest) -> dict:
    """Resolve and check everything a training needs, before any process starts or any file is written."""
    folder, plans = dataset_plans(request.dataset, request.plans_name)
    configuration = plans.configuration(request.configuration)
    trainer_class = request.trainer
    trainer_name = trainer_class.__name__
    ignored = [flag for name, flag in Trainer.TRAINER_SPECIFIC_OPTIONS.items()
               if name in request.explicit_options and name not in trainer_class.reads_options]
    if ignored:
        raise BoxunetError(f"{' '.join(ignored)}: {trainer_name} does not use {'them' if len(ignored) > 1 else 'it'} "
                           "(the box options are BoxThreeStage's)")
    fold = _parse_fold(str(request.fold))
    check_device(request.device, request.num_gpus)
    case_ids = _preprocessed_case_ids(folder / configuration.data_identifier, request.dataset, request.configuration)
    raw_folder = raw_root() / folder.name
    splits = load_or_create_splits(folder, case_ids, raw_folder if raw_folder.is_dir() else None)
    train, val = fold_cases(splits, fold, case_ids, str(folder / "splits_final.json"))
    if configuration.previous_stage:  # a cascade: its inputs must exist before anything is written
        previous_stage_files(folder.name, trainer_name, request.plans_name, configuration.name,
                             configuration.previous_stage, train + val, read_json(folder / "dataset.json")["file_ending"],
                             splits)
    output = model_folder(folder.name, trainer_name, request.plans_name, request.configuration) / f"fold_{fold}"
    if request.validation_only and not (output / "checkpoint_final.pth").is_file():
        raise BoxunetError(f"--val-only needs {output / 'checkpoint_final.pth'}; finish the training first")
    return {"folder": folder, "plans": plans, "configuration": configuration, "trainer_class": trainer_class,
            "fold": fold, "train": train, "val": val, "output": output}


def _train_in_process(group: ProcessGroupInfo, request: TrainingRequest, setup: dict) -> None:
    if group.device.type == "cpu":
        torch.set_num_threads(max(1, default_num_processes() // group.world_size))
    setup["output"].mkdir(parents=True, exist_ok=True)
    if group.is_main:
        write_model_files(setup["output"].parent, setup["plans"].to_json(), setup["folder"] / "dataset.json")
    resume_from, saved_options = resume_checkpoint(setup["output"]) if request.continue_training else (None, None)
    options = resumed_options(request, saved_options) if resume_from else request.options
    trainer = setup["trainer_class"](setup["plans"], setup["configuration"], setup["fold"], setup["folder"],
                                     setup["output"], setup["train"], setup["val"], options, group)
    try:
        if request.validation_only:
            trainer.load(setup["output"] / "checkpoint_final.pth", weights_only=True)
        else:
            if resume_from:
                trainer.load(resume_from)
                if trainer.log:
                    trainer.log(f"resuming from {resume_from.name} at epoch {trainer.current_epoch}")
            elif request.continue_training and trainer.log:
                trainer.log("--c: no checkpoint found, starting a new training")
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


# what a model is trained on and how; a resumed run cannot change them (epochs, iterations, lr can)
MODEL_DEFINING_OPTIONS = ("schedule", "group_networks", "group_epochs", "box_loss")


def resumed_options(request: TrainingRequest, saved: dict) -> TrainingOptions:
    """The resumed run's options (``saved``); options given on the command line and runtime-only options win,
    except those that define the model (``MODEL_DEFINING_OPTIONS``): changing one of them is an error."""
    keep = set(request.explicit_options) | set(RUNTIME_OPTIONS)
    known = {f.name for f in fields(TrainingOptions)}
    merged = {k: v for k, v in saved.items() if k in known}
    if "group_epochs" in merged and merged["group_epochs"] is None:  # older checkpoints: the run's epochs
        merged["group_epochs"] = merged.get("epochs")
    changed = [f"{k} {merged[k]!r} -> {getattr(request.options, k)!r}" for k in MODEL_DEFINING_OPTIONS
               if k in keep and k in merged and merged[k] != getattr(request.options, k)]
    if changed:
        raise BoxunetError(f"--c: the checkpoint in this model folder was trained with other settings "
                           f"({', '.join(changed)}); continuing it would mix two models. Train the variant in "
                           "another results root (boxunet_results) or plans identifier, or drop --c to train "
                           "it here from scratch (this replaces the model)")
    merged.update({k: getattr(request.options, k) for k in keep})
    return TrainingOptions(**merged)


def _spawned_worker(rank: int, world_size: int, port: int, request: TrainingRequest, setup: dict) -> None:
    group = init_process_group(rank, world_size, request.device, port)
    try:
        _train_in_process(group, request, setup)
    finally:
        shutdown(group)


def run_training(request: TrainingRequest) -> Path:
    """Train (or resume, or only validate) one fold; return the fold's output folder."""
    setup = prepare(request)
    group = init_from_environment(request.device)
    if group is not None:
        try:
            _train_in_process(group, request, setup)
        finally:
            shutdown(group)
    elif request.num_gpus > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, default_num_processes() // request.num_gpus)))
        mp.spawn(_spawned_worker, args=(request.num_gpus, free_port(), request, setup), nprocs=request.num_gpus, join=True)
    else:
        device = torch.device("cuda", 0) if request.device == "cuda" else torch.device(request.device)
        _train_in_process(ProcessGroupInfo(0, 1, device), request, setup)
    return setup["output"]
