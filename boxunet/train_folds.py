"""Cross-validation in one command: ``boxunet_train DATASET CONFIGURATION`` without a fold.

The requested folds (default 0-4) are trained one after the other in this process, or in parallel with one
``boxunet_train`` process per GPU (``--devices``); under torchrun every fold trains in the one process group.
Each fold saves its validation probabilities (what ensembling needs); a finished fold is skipped, an
interrupted one resumes from its last checkpoint, a trained one whose validation is missing is validated.
Afterwards: the cross-validation summary (per-label mean Dice over every validated case, per-fold Dice), and,
once every fold of the model has finished, model selection over every model of the dataset whose folds have
all finished (boxunet.ensembling.find_best). Its choice is what ``boxunet_predict`` uses without ``-c``.
"""
import os
import subprocess
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from boxunet.ensembling.crossval import merge_cross_validation, missing_probabilities, missing_validations
from boxunet.ensembling.find_best import (SelectionRequest, complete_models, find_best_configuration,
                                          validation_reference)
from boxunet.errors import BoxunetError
from boxunet.evaluation.metrics import metric_key
from boxunet.io.atomic import read_json
from boxunet.paths import model_folder_name
from boxunet.training.distributed import init_from_environment, shutdown
from boxunet.training.run import TrainingRequest, prepare, run_training
from boxunet.training.splits import NUM_FOLDS

ALL_FOLDS = tuple(str(fold) for fold in range(NUM_FOLDS))
FINISHED, VALIDATE, TRAIN = "finished", "validate", "train"


@dataclass
class FoldsRequest:
    """What ``boxunet_train DATASET CONFIGURATION`` without a fold was asked to do."""

    training: TrainingRequest  # every fold's request, but for its fold
    folds: list[str] | None = None  # None: 0-4
    devices: list[int] | None = None  # CUDA devices, one fold per device at a time (a process each)
    fold_command: Callable[[str], list[str]] | None = None  # the command that trains one fold (with devices)
    select: bool = True  # run model selection once every fold of the model has finished


def check_folds(folds: list[str] | None) -> list[str]:
    """The folds to train (default 0-4), after refusing duplicates and folds outside 0-4."""
    if folds is None:
        return list(ALL_FOLDS)
    wrong = [fold for fold in folds if fold not in ALL_FOLDS]
    if wrong:
        raise BoxunetError(f"--folds {' '.join(folds)}: {', '.join(wrong)} is not a cross-validation fold; choose "
                           f"from {' '.join(ALL_FOLDS)} (train fold 'all' or an extra split with the explicit form "
                           "boxunet_train DATASET CONFIGURATION FOLD)")
    repeated = sorted({fold for fold in folds if folds.count(fold) > 1})
    if repeated:
        raise BoxunetError(f"--folds {' '.join(folds)}: fold {', '.join(repeated)} is named twice")
    return sorted(folds, key=int)


def check_devices(devices: list[int] | None, device_type: str, visible: int) -> None:
    """``--devices`` must name distinct CUDA devices that exist (``visible`` of them)."""
    if devices is None:
        return
    if device_type != "cuda":
        raise BoxunetError(f"--devices {','.join(map(str, devices))} runs folds on GPUs; it needs -device cuda")
    repeated = sorted({d for d in devices if devices.count(d) > 1})
    missing = [d for d in devices if not 0 <= d < visible]
    if repeated or missing:
        problem = f"device {', '.join(map(str, repeated))} is named twice" if repeated else \
            f"device {', '.join(map(str, missing))} does not exist ({visible} CUDA device(s) visible: 0-{visible - 1})"
        raise BoxunetError(f"--devices {','.join(map(str, devices))}: {problem}")


def fold_state(model_folder: Path, fold: str) -> str:
    """FINISHED (final checkpoint, validation and its probabilities), VALIDATE (trained, validation or its
    probabilities missing) or TRAIN (new or interrupted)."""
    fold_folder = Path(model_folder) / f"fold_{fold}"
    if not (fold_folder / "checkpoint_final.pth").is_file():
        return TRAIN
    if missing_validations(model_folder, [fold]) or missing_probabilities(model_folder, [fold]):
        return VALIDATE
    return FINISHED


def _fold_dice(model_folder: Path, fold: str, names: dict[str, str]) -> str:
    summary = read_json(Path(model_folder) / f"fold_{fold}" / "validation" / "summary.json")
    return ", ".join(f"{names.get(key, key)} {values['Dice']:.4f}" for key, values in summary["mean"].items()
                     if key in names)


def _train_in_this_process(request: FoldsRequest, folds: list[str], model_folder: Path, names: dict, log) -> None:
    group = init_from_environment(request.training.device)  # under torchrun: one group for every fold
    try:
        for index, fold in enumerate(folds):
            state = fold_state(model_folder, fold)
            if state == FINISHED:
                log(f"fold {fold} ({index + 1}/{len(folds)}): finished before, skipped; Dice {_fold_dice(model_folder, fold, names)}")
                continue
            log(f"fold {fold} ({index + 1}/{len(folds)}): {'validating' if state == VALIDATE else 'training'}")
            started = time.perf_counter()
            fold_request = replace(request.training, fold=fold, continue_training=True,
                                   validation_only=state == VALIDATE,
                                   options=replace(request.training.trainer_options, save_probabilities=True))
            run_training(fold_request, group)
            if group is None or group.is_main:
                log(f"fold {fold}: done in {(time.perf_counter() - started) / 60:.1f} min; "
                    f"Dice {_fold_dice(model_folder, fold, names)}")
    finally:
        if group is not None:
            shutdown(group)


def run_on_devices(folds: list[str], devices: list[int], fold_command: Callable[[str], list[str]],
                   model_folder: Path, log, poll_seconds: float = 5.0) -> None:
    """Train ``folds`` with one ``fold_command(fold)`` process per device at a time (CUDA_VISIBLE_DEVICES set
    to the device; output in ``fold_N/console.txt``); a failed fold is reported after the others finished."""
    pending, running, failed = deque(folds), {}, []
    try:
        while pending or running:
            for device in devices:
                if device not in running and pending:
                    fold = pending.popleft()
                    console = Path(model_folder) / f"fold_{fold}" / "console.txt"
                    console.parent.mkdir(parents=True, exist_ok=True)
                    with open(console, "ab") as output:
                        process = subprocess.Popen(fold_command(fold), stdout=output, stderr=subprocess.STDOUT,
                                                   env=dict(os.environ, CUDA_VISIBLE_DEVICES=str(device)))
                    running[device] = (fold, process, console)
                    log(f"fold {fold}: training on GPU {device} (output in {console})")
            time.sleep(poll_seconds if running else 0)
            for device, (fold, process, console) in list(running.items()):
                if process.poll() is not None:
                    del running[device]
                    if process.returncode:
                        failed.append(f"fold {fold} (GPU {device}) exited with code {process.returncode}; see {console}")
                    log(f"fold {fold}: {'failed' if process.returncode else 'done'}")
    finally:
        for _, process, _ in running.values():  # interrupted: stop the folds still training
            process.terminate()
    if failed:
        raise BoxunetError("\n".join(failed) + "\nrerun the same command: finished folds are skipped")


def cross_validation_summary(model_folder: Path, folds: list[str], dataset_name: str, names: dict,
                             num_processes: int = 1) -> list[str]:
    """Merge and evaluate the folds' validations; the summary lines (per-label mean Dice over every validated
    case and per fold)."""
    reference = validation_reference([model_folder], folds, dataset_name)
    merged = merge_cross_validation(model_folder, folds, reference, num_processes)
    per_fold = {fold: read_json(model_folder / f"fold_{fold}" / "validation" / "summary.json") for fold in folds}
    lines = [f"cross-validation of {model_folder.name} ({len(merged.case_ids)} cases, folds {' '.join(folds)}):",
             f"  {'':<16}{'mean':>8}" + "".join(f"{'fold ' + fold:>9}" for fold in folds)]
    rows = [(key, names[key], merged.summary["mean"][key]["Dice"], [s["mean"][key]["Dice"] for s in per_fold.values()])
            for key in merged.summary["mean"] if key in names]
    rows.append(("foreground", "foreground mean", merged.dice, [s["foreground_mean"]["Dice"] for s in per_fold.values()]))
    lines += [f"  {name:<16}{mean:>8.4f}" + "".join(f"{value:>9.4f}" for value in values) for _, name, mean, values in rows]
    lines.append(f"  (summary.json in {merged.folder})")
    return lines


def train_folds(request: FoldsRequest, log=print) -> dict | None:
    """Train the folds of ``request``; return the choice of model selection when it ran, else None."""
    folds = check_folds(request.folds)
    setup = prepare(replace(request.training, fold=folds[0]))  # every check of a training, before any work
    training = request.training
    model_folder = setup.folders.results / model_folder_name(training.trainer.__name__, training.plans_name,
                                                             training.configuration)
    names = {metric_key(value): name for name, value in setup.plans.labels.items() if value not in (0, [0])}
    if request.devices and training.device == "cuda":
        finished = [fold for fold in folds if fold_state(model_folder, fold) == FINISHED]
        if finished:
            log(f"fold(s) {' '.join(finished)}: finished before, skipped")
        run_on_devices([fold for fold in folds if fold not in finished], request.devices, request.fold_command,
                       model_folder, log)
    else:
        _train_in_this_process(request, folds, model_folder, names, log)
    if os.environ.get("RANK", "0") != "0":
        return None  # under torchrun only rank 0 summarizes and selects
    unfinished = [fold for fold in ALL_FOLDS if fold_state(model_folder, fold) != FINISHED]
    if unfinished:
        log(f"folds {' '.join(unfinished)} of {model_folder.name} are not trained yet; cross-validation and model "
            f"selection run when all {len(ALL_FOLDS)} have finished")
        return None
    for line in cross_validation_summary(model_folder, list(ALL_FOLDS), setup.folders.results.name, names):
        log(line)
    if not request.select:
        return None
    return select_model(setup.folders.results, training.dataset, training.plans_name, log)


def select_model(dataset_results: Path, dataset: str, plans_name: str, log=print) -> dict:
    """Model selection over every model in ``dataset_results`` whose folds 0-4 have all finished."""
    models = complete_models(dataset_results, plans_name, list(ALL_FOLDS))
    log(f"model selection over {', '.join(models)}")
    information = find_best_configuration(SelectionRequest(dataset, plans_name=plans_name, models=models), log=log)
    best = information["best"]
    log(f"chosen: {best['name']} (foreground mean Dice {best['foreground_mean_dice']:.4f}); boxunet_predict -i IN "
        f"-o OUT -d {dataset} predicts with it")
    return information
