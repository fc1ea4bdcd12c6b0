"""Collect the validation predictions of a model's folds into one cross-validation folder and evaluate it.

``<model>/crossval_results_folds_0_1_2_3_4/`` gets every fold's validation files (label maps and, when
validation ran with ``--npz``, probabilities and properties; hard links where possible), the plans and
dataset.json, and ``summary.json`` against the dataset's ``gt_segmentations``.
"""
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from boxunet.errors import BoxunetError
from boxunet.evaluation.metrics import evaluate_folders
from boxunet.io.model_folder import read_model_files, write_model_files
from boxunet.paths import DATASET_JSON
from boxunet.planning.plans import Plans


@dataclass
class CrossValidation:
    """A model's merged cross-validation folder and its evaluation."""

    model_folder: Path
    folder: Path
    summary: dict
    case_ids: list[str]

    @property
    def name(self) -> str:
        return self.model_folder.name

    @property
    def dice(self) -> float:
        return self.summary["foreground_mean"]["Dice"]


def crossval_folder_name(folds: list[str]) -> str:
    return "crossval_results_folds_" + "_".join(str(f) for f in folds)


def missing_validations(model_folder: Path, folds: list[str]) -> list[str]:
    """The folds of ``model_folder`` whose validation has not finished (no validation/summary.json)."""
    return [str(f) for f in folds if not (Path(model_folder) / f"fold_{f}" / "validation" / "summary.json").is_file()]


def _validation_files(model_folder: Path, folds: list[str], ending: str) -> dict[str, Path]:
    """{case id: its fold's validation label map}; a case validated by two folds is an error."""
    found: dict[str, Path] = {}
    for fold in folds:
        for label_map in sorted((Path(model_folder) / f"fold_{fold}" / "validation").glob(f"*{ending}")):
            case_id = label_map.name[:-len(ending)]
            if case_id in found:
                raise BoxunetError(f"model {Path(model_folder).name}: case {case_id!r} is validated by two folds "
                                   f"({found[case_id].parent.parent.name} and fold_{fold}); the folds must come from "
                                   "one splits_final.json")
            found[case_id] = label_map
    return found


def missing_probabilities(model_folder: Path, folds: list[str]) -> list[str]:
    """Validation label maps of ``folds`` that have no saved probabilities (``<case>.npz``)."""
    _, dataset_json = read_model_files(model_folder)
    files = _validation_files(model_folder, folds, dataset_json["file_ending"])
    return [str(path) for case_id, path in files.items() if not (path.parent / f"{case_id}.npz").is_file()]


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def merge_cross_validation(model_folder: Path, folds: list[str], reference_folder: Path,
                           num_processes: int = 1) -> CrossValidation:
    """Merge the folds' validation folders of ``model_folder`` and evaluate them against ``reference_folder``."""
    model_folder = Path(model_folder)
    missing = missing_validations(model_folder, folds)
    if missing:
        raise BoxunetError(f"model {model_folder.name}: fold(s) {', '.join(missing)} have no finished validation "
                           f"(fold_N/validation/summary.json); train them (boxunet_train ... --npz) or leave them out with -f")
    plans_json, dataset_json = read_model_files(model_folder)
    plans = Plans.from_json(plans_json)
    ending = dataset_json["file_ending"]
    files = _validation_files(model_folder, folds, ending)
    output = model_folder / crossval_folder_name(folds)
    shutil.rmtree(output, ignore_errors=True)  # rebuilt from the folds: nothing stale survives a rerun
    write_model_files(output, plans_json, model_folder / DATASET_JSON)
    for case_id, label_map in files.items():
        _link_or_copy(label_map, output / label_map.name)
        for suffix in (".npz", ".json"):
            extra = label_map.parent / f"{case_id}{suffix}"
            if extra.is_file():
                _link_or_copy(extra, output / extra.name)
    case_ids = sorted(files)
    summary = evaluate_folders(reference_folder, output, plans.label_set.evaluation_targets, ending,
                               output_file=output / "summary.json", num_processes=num_processes, case_ids=case_ids,
                               label_names=plans.labels)
    return CrossValidation(model_folder, output, summary, case_ids)
