"""Decide on cross-validation predictions whether keeping only the largest connected component helps.

nnU-Net's procedure: first try it on the whole foreground (all labels, or the union of the regions,
as one mask) and accept it only if the foreground-mean Dice rises and no label or region gets worse; then,
on top of what was accepted, try it on each label or region alone and accept it if that label's Dice rises.
"""
import shutil
from collections.abc import Callable
from pathlib import Path

from boxunet.errors import BoxunetError
from boxunet.evaluation.metrics import evaluate_folders, metric_key
from boxunet.io.atomic import write_json
from boxunet.postprocessing.apply import label_map_files, postprocess_files

POSTPROCESSING_FILE_NAME = "postprocessing.json"
POSTPROCESSED_FOLDER_NAME = "postprocessed"
TRIAL_FOLDER_NAME = "postprocessing_trial"


def _dice(summary: dict) -> tuple[float, dict[str, float]]:
    """Foreground-mean Dice and mean Dice per label or region of an evaluation summary."""
    return summary["foreground_mean"]["Dice"], {key: value["Dice"] for key, value in summary["mean"].items()}


def _whole_foreground_helps(before: dict, after: dict) -> bool:
    (mean_before, per_label_before), (mean_after, per_label_after) = _dice(before), _dice(after)
    return mean_after > mean_before and not any(per_label_after[key] < value for key, value in per_label_before.items())


def _label_helps(key: str) -> Callable[[dict, dict], bool]:
    return lambda before, after: _dice(after)[1][key] > _dice(before)[1][key]


def _candidates(targets: list) -> list[tuple[dict, Callable[[dict, dict], bool]]]:
    """Each step to try, in order, with its acceptance rule."""
    as_json = [list(item) if isinstance(item, tuple) else item for item in targets]
    candidates = [({"labels": as_json, "name": "whole foreground"}, _whole_foreground_helps)]
    for item, item_json in zip(targets, as_json):
        kind = "region" if isinstance(item, tuple) else "label"
        step = {"labels": [item_json], "name": f"{kind} {metric_key(item)}"}
        candidates.append((step, _label_helps(metric_key(item))))
    return candidates


def determine_postprocessing(reference_folder: Path, prediction_folder: Path, labels_or_regions: list,
                             file_ending: str, output_folder: Path, connectivity: int = 26,
                             num_processes: int = 1, case_ids: list[str] | None = None) -> dict:
    """Decide which keep-largest-component steps improve the Dice of ``prediction_folder`` against
    ``reference_folder`` for the foreground ``labels_or_regions`` (ints, or tuples for regions; background
    entries are ignored); return the decision.

    Writes the decision to ``output_folder/postprocessing.json`` (connectivity, steps, foreground-mean and
    per-label Dice before and after) and the postprocessed predictions with their ``summary.json`` to
    ``output_folder/postprocessed/``. Trials run in ``output_folder/postprocessing_trial/``, removed at the end.
    With ``case_ids`` only those cases are evaluated (e.g. the validation cases of some folds).
    """
    reference_folder, prediction_folder = Path(reference_folder), Path(prediction_folder)
    output_folder = Path(output_folder)
    targets = [item for item in labels_or_regions if item not in (0, (0,))]
    if not targets:
        raise BoxunetError("postprocessing needs at least one foreground label or region")
    final, trial = output_folder / POSTPROCESSED_FOLDER_NAME, output_folder / TRIAL_FOLDER_NAME
    if prediction_folder.resolve() in (final.resolve(), trial.resolve()):
        raise BoxunetError(f"prediction folder {prediction_folder} would be overwritten; choose another output "
                           f"folder than {output_folder}")

    def evaluate(folder: Path, output_file: Path | None = None) -> dict:
        return evaluate_folders(reference_folder=reference_folder, prediction_folder=folder,
                                labels_or_regions=targets, file_ending=file_ending, output_file=output_file,
                                num_processes=num_processes, surface=False, case_ids=case_ids)

    before = evaluate(prediction_folder)
    names = [path.name for path in label_map_files(prediction_folder, file_ending)
             if (reference_folder / path.name).is_file()
             and (case_ids is None or path.name[:-len(file_ending)] in set(case_ids))]
    for folder in (final, trial):
        shutil.rmtree(folder, ignore_errors=True)
    steps, current, source = [], before, prediction_folder
    for step, helps in _candidates(targets):
        postprocess_files([(source / name, trial / name) for name in names],
                          {"connectivity": connectivity, "steps": [step]}, num_processes)
        summary = evaluate(trial)
        if helps(current, summary):
            shutil.rmtree(final, ignore_errors=True)
            trial.rename(final)
            steps.append(step)
            current, source = summary, final
    shutil.rmtree(trial, ignore_errors=True)
    if not steps:
        final.mkdir(parents=True)
        for name in names:
            shutil.copyfile(prediction_folder / name, final / name)
    after = evaluate(final, output_file=final / "summary.json")
    (dice_before, per_label_before), (dice_after, per_label_after) = _dice(before), _dice(after)
    decision = {"connectivity": connectivity, "steps": steps, "dice_before": dice_before, "dice_after": dice_after,
                "per_label_before": per_label_before, "per_label_after": per_label_after}
    write_json(decision, output_folder / POSTPROCESSING_FILE_NAME)
    return decision
