"""Pick the best configuration or pair of configurations from cross-validation (``boxunet_find_best_configuration``).

For every requested model (trainer x configuration) the folds' validations are merged and evaluated;
every pair of models is ensembled from the saved validation probabilities and evaluated; the best
foreground-mean Dice wins. Postprocessing is decided for every model and for the winner (so
``boxunet_predict`` applies a model's own decision automatically), and the instructions to predict
new data with the winner are written to ``inference_instructions.txt`` and ``inference_information.json``.
"""
import itertools
import math
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from boxunet.boxes.stage1 import stage1_folder
from boxunet.ensembling.crossval import (CrossValidation, crossval_folder_name, merge_cross_validation,
                                         missing_probabilities, missing_validations)
from boxunet.errors import BoxunetError
from boxunet.evaluation.metrics import evaluate_folders
from boxunet.inference.ensemble import ensemble_folders
from boxunet.io.atomic import copy_file, read_json, write_json
from boxunet.io.dataset_locator import find_dataset_folder
from boxunet.io.stamps import file_stamp
from boxunet.io.model_folder import parse_model_folder_name, read_model_files
from boxunet.paths import model_folder_name, preprocessed_root, results_root
from boxunet.planning.plans import Plans
from boxunet.postprocessing.components import default_connectivity
from boxunet.postprocessing.decision import POSTPROCESSING_FILE_NAME, determine_postprocessing

DEFAULT_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres")
FINAL_CHECKPOINT = "checkpoint_final.pth"
INSTRUCTIONS_FILE = "inference_instructions.txt"
INFORMATION_FILE = "inference_information.json"
ENSEMBLES_FOLDER = "ensembles"


@dataclass
class SelectionRequest:
    """What to compare."""

    dataset: str
    configurations: list[str] = field(default_factory=lambda: list(DEFAULT_CONFIGURATIONS))
    configurations_given: bool = False
    trainers: list[str] = field(default_factory=list)  # names; boxunet_find_best_configuration fills in the default
    plans_name: str = "boxunetPlans"
    folds: list[str] = field(default_factory=lambda: ["0", "1", "2", "3", "4"])
    ensembling: bool = True
    num_processes: int = 1
    models: list[str] | None = None  # model folder names to compare instead of trainers x configurations


def _candidate_models(request: SelectionRequest, dataset_results: Path) -> tuple[list[Path], list[str]]:
    """The model folders to compare and the (default) configurations that were never trained.

    A configuration named with ``-c`` must exist; of the default list, untrained ones are reported and left
    out. Any model with unfinished folds is an error naming the folds."""
    if request.models is not None:
        return [dataset_results / name for name in request.models], []
    models, untrained, problems = [], [], []
    trainers = request.trainers
    for trainer, configuration in itertools.product(trainers, request.configurations):
        folder = dataset_results / model_folder_name(trainer, request.plans_name, configuration)
        if not folder.is_dir():
            if request.configurations_given:
                problems.append(f"{folder.name}: not trained (no folder {folder})")
            else:
                untrained.append(folder.name)
            continue
        missing = missing_validations(folder, request.folds)
        if missing:
            problems.append(f"{folder.name}: fold(s) {', '.join(missing)} not finished (no validation/summary.json)")
            continue
        models.append(folder)
    if request.ensembling and len(models) > 1:
        for folder in models:
            without = missing_probabilities(folder, request.folds)
            if without:
                problems.append(f"{folder.name}: no validation probabilities for ensembling ({len(without)} case(s), "
                                f"e.g. {without[0]}); rerun its validation with --npz (boxunet_train D C FOLD "
                                "--val-only --npz) or use --disable-ensembling")
    if problems:
        raise BoxunetError("cannot compare the models:\n" + "\n".join(f"  - {p}" for p in problems)
                           + "\ntrain the missing folds (boxunet_train ... --npz) or choose models with -c/-tr/-f")
    if not models:
        raise BoxunetError(f"no trained model in {dataset_results} for configurations {request.configurations} "
                           f"and trainers {trainers}")
    return models, untrained


def validation_reference(models: list[Path], folds: list[str], dataset_name: str) -> Path:
    """The label maps the models' fold validations were scored against (``reference_folder`` of their
    summary.json): the dense labels (gt_segmentations), or, for a boxes-only dataset, the stage-1 pseudo
    masks the box trainers fall back to. Cross-validation, ensembles and postprocessing are scored against
    the same; models validated against different references cannot be compared."""
    dense = preprocessed_root() / dataset_name / "gt_segmentations"
    stage1 = stage1_folder(preprocessed_root() / dataset_name)
    used = {}
    for model in models:
        for fold in folds:
            summary = read_json(model / f"fold_{fold}" / "validation" / "summary.json")
            named = Path(summary.get("reference_folder", dense))  # paths as the training machine saw them
            reference = stage1 if (named.parent.name, named.name) == (stage1.parent.name, stage1.name) else dense
            used.setdefault(reference, model.name)
    if len(used) > 1:
        raise BoxunetError("the models were validated against different references and cannot be compared: "
                           + "; ".join(f"{model} against {folder}" for folder, model in used.items()))
    return next(iter(used), dense)


def _ensemble_cross_validations(first: CrossValidation, second: CrossValidation, ensembles_folder: Path,
                                folds: list[str], reference_folder: Path, num_processes: int) -> CrossValidation:
    output = ensembles_folder / f"ensemble___{first.name}___{second.name}___{crossval_folder_name(folds)}"
    shutil.rmtree(output, ignore_errors=True)
    cases = ensemble_folders([first.folder, second.folder], output, num_processes=num_processes)
    plans_json, dataset_json = read_model_files(output, "ensemble folder")
    plans = Plans.from_json(plans_json)
    summary = evaluate_folders(reference_folder, output, plans.label_set.evaluation_targets, dataset_json["file_ending"],
                               output_file=output / "summary.json", num_processes=num_processes, case_ids=cases,
                               label_names=plans.labels)
    return CrossValidation(output, output, summary, cases)


def _decide_postprocessing(result: CrossValidation, reference_folder: Path, num_processes: int) -> dict:
    """Keep-largest-component decision; with 18-connectivity for box datasets ([Yang 2020]), else 26."""
    plans_json, dataset_json = read_model_files(result.folder, "cross-validation folder")
    plans = Plans.from_json(plans_json)
    return determine_postprocessing(reference_folder, result.folder, plans.label_set.evaluation_targets,
                                    dataset_json["file_ending"], result.folder,
                                    connectivity=default_connectivity(dataset_json.get("box_labels")),
                                    num_processes=num_processes, case_ids=result.case_ids)


def _score(dice: float) -> float:
    """Dice for ranking; NaN (nothing to segment anywhere) ranks last."""
    return float("-inf") if math.isnan(dice) else dice


def _predict_command(model_folder: Path, dataset: str, folds: list[str], output: str, extra: str = "") -> str:
    trainer, plans_name, configuration = parse_model_folder_name(model_folder)
    return (f"boxunet_predict -i INPUT_FOLDER -o {output} -d {dataset} -c {configuration} -tr {trainer} "
            f"-p {plans_name} -f {' '.join(folds)}{extra}")


def _instructions(best: CrossValidation, members: list[Path], dataset: str, folds: list[str],
                  decision: dict) -> list[str]:
    """The commands that predict new images like the winner did on cross-validation."""
    if len(members) == 1:
        return [_predict_command(members[0], dataset, folds, "OUTPUT_FOLDER")
                + ("   # applies the postprocessing in the model folder" if decision["steps"] else "")]
    commands = [_predict_command(member, dataset, folds, f"OUTPUT_FOLDER_MODEL_{index + 1}",
                                 " --save-probabilities --no-postprocessing") for index, member in enumerate(members)]
    commands.append(f"boxunet_ensemble -i {' '.join(f'OUTPUT_FOLDER_MODEL_{i + 1}' for i in range(len(members)))} "
                    "-o OUTPUT_FOLDER_ENSEMBLE")
    if decision["steps"]:
        commands.append(f"boxunet_apply_postprocessing -i OUTPUT_FOLDER_ENSEMBLE -o OUTPUT_FOLDER "
                        f"-pp {shlex.quote(str(best.folder / POSTPROCESSING_FILE_NAME))}")
    return commands


def find_best_configuration(request: SelectionRequest, log=print) -> dict:
    """Compare the models and ensembles of ``request``; write and return the inference information."""
    dataset_results = find_dataset_folder(request.dataset, results_root())
    models, untrained = _candidate_models(request, dataset_results)
    reference_folder = validation_reference(models, request.folds, dataset_results.name)
    if not reference_folder.is_dir():
        raise BoxunetError(f"no reference segmentations in {reference_folder}; run boxunet_plan_and_preprocess "
                           f"-d {request.dataset} first")
    if untrained:
        log(f"not trained, left out: {', '.join(untrained)}")
    results = {}
    for model in models:
        result = merge_cross_validation(model, request.folds, reference_folder, request.num_processes)
        results[result.name] = (result, [model])
        log(f"{result.name}: foreground mean Dice {result.dice:.4f}")
    if request.ensembling and len(models) > 1:
        ensembles_folder = dataset_results / ENSEMBLES_FOLDER
        # named models without probabilities were refused above; found ones (``models``) are only left out here
        singles = [results[m.name][0] for m in models if not missing_probabilities(m, request.folds)]
        for first, second in itertools.combinations(singles, 2):
            result = _ensemble_cross_validations(first, second, ensembles_folder, request.folds, reference_folder,
                                                 request.num_processes)
            results[result.name] = (result, [first.model_folder, second.model_folder])
            log(f"{result.name}: foreground mean Dice {result.dice:.4f}")
    best_name = max(results, key=lambda name: _score(results[name][0].dice))
    best, members = results[best_name]
    decisions = {}
    for model in models:  # every model gets its own decision, which boxunet_predict applies
        crossval = results[model.name][0]
        decisions[model.name] = _decide_postprocessing(crossval, reference_folder, request.num_processes)
        copy_file(crossval.folder / POSTPROCESSING_FILE_NAME, model / POSTPROCESSING_FILE_NAME)
    decision = decisions.get(best_name) or _decide_postprocessing(best, reference_folder, request.num_processes)
    information = {
        "dataset": dataset_results.name, "folds": request.folds,
        "candidates": {name: {"foreground_mean_dice": result.dice, "folder": str(result.folder),
                              "members": [m.name for m in members]} for name, (result, members) in results.items()},
        "not_trained": untrained,
        "best": {"name": best_name, "members": [m.name for m in members], "foreground_mean_dice": best.dice,
                 "postprocessing_file": str(best.folder / POSTPROCESSING_FILE_NAME),
                 "postprocessing_steps": [step["name"] for step in decision["steps"]],
                 "foreground_mean_dice_after_postprocessing": decision["dice_after"],
                 "checkpoints": {m.name: checkpoint_stamps(m, request.folds) for m in members}},
        "commands": _instructions(best, members, request.dataset, request.folds, decision),
    }
    write_json(information, dataset_results / INFORMATION_FILE)
    (dataset_results / INSTRUCTIONS_FILE).write_text(_instructions_text(information))
    return information


def checkpoint_stamps(model_folder: Path, folds: list[str]) -> dict[str, list[int] | None]:
    """{fold: stamp of its checkpoint_final.pth (None when missing)}: what a choice was made from, so that a
    retrained or deleted fold makes it stale (boxunet.ensembling.choice)."""
    stamps = {}
    for fold in folds:
        checkpoint = Path(model_folder) / f"fold_{fold}" / FINAL_CHECKPOINT
        stamps[str(fold)] = file_stamp(checkpoint) if checkpoint.is_file() else None
    return stamps


def complete_models(dataset_results: Path, plans_name: str, folds: list[str]) -> list[str]:
    """The model folders of ``dataset_results`` (``<trainer>__<plans_name>__<configuration>``) whose ``folds``
    all finished their validation, sorted by name."""
    found = []
    for folder in sorted(Path(dataset_results).iterdir()) if Path(dataset_results).is_dir() else ():
        parts = folder.name.split("__")
        if folder.is_dir() and len(parts) == 3 and parts[1] == plans_name and not missing_validations(folder, folds):
            found.append(folder.name)
    return found


def _instructions_text(information: dict) -> str:
    best = information["best"]
    lines = [f"Best: {best['name']} (foreground mean Dice {best['foreground_mean_dice']:.4f}, "
             f"{best['foreground_mean_dice_after_postprocessing']:.4f} after postprocessing: "
             f"{', '.join(best['postprocessing_steps']) or 'none'})", "", "Candidates:"]
    for name, candidate in sorted(information["candidates"].items(), key=lambda item: -item[1]["foreground_mean_dice"]):
        lines.append(f"  {candidate['foreground_mean_dice']:.4f}  {name}")
    if information["not_trained"]:
        lines.append(f"Not trained (left out): {', '.join(information['not_trained'])}")
    lines += ["", "Predict new images (replace the upper-case folders):"] + [f"  {c}" for c in information["commands"]]
    return "\n".join(lines) + "\n"
