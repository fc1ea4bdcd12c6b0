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
from boxunet.inference.model import DATASET_JSON, read_model_files, write_model_files
from boxunet.planning.plans import Plans, regions_of


@dataclass
class CrossValidation:
    """A model's merged cross-validation folder and its evaluation."""

    model_folder: Path
    folder: Path
    summary: dict
    has_probabilities: bool
    case_ids: list[str]

    @property
    def name(self) -> str:
        return self.model_folder.name

    @property
    def dice(self) -> float:
        return self.summary["foreground_mean"]["Dice"]


def crossval_folder_name(folds: list[str]) -> str:
    return "crossval_results_folds_" + "_".join(str(f) for f in folds)


def evaluated_items(plans: Plans) -> list:
    """The labels (or regions) evaluated for ``plans``."""
    return regions_of(plans.labels) or plans.label_values


def missing_validations(model_folder: Path, folds: list[str]) -> list[str]:
    """The folds of ``model_folder`` whose validation has not finished (no validation/summary.json)."""
    return [str(f) for f in folds if not (Path(model_folder) / f"fold_{f}" / "validation" / "summary.json").is_file()]


def _link_or_copy(source: Path, target: Path) -> None:
    if target.exists():
        target.unlink()
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
    plans, dataset_json = read_model_files(model_folder)
    ending = dataset_json["file_ending"]
    output = model_folder / crossval_folder_name(folds)
    write_model_files(output, plans, model_folder / DATASET_JSON)
    case_ids, has_probabilities = [], True
    for fold in folds:
        validation = model_folder / f"fold_{fold}" / "validation"
        for label_map in sorted(validation.glob(f"*{ending}")):
            case_id = label_map.name[:-len(ending)]
            case_ids.append(case_id)
            _link_or_copy(label_map, output / label_map.name)
            for suffix in (".npz", ".json"):
                extra = validation / f"{case_id}{suffix}"
                if extra.is_file():
                    _link_or_copy(extra, output / extra.name)
                elif suffix == ".npz":
                    has_probabilities = False
    if len(set(case_ids)) != len(case_ids):
        raise BoxunetError(f"model {model_folder.name}: folds {folds} validate some cases twice; the folds must come "
                           "from one splits_final.json")
    summary = evaluate_folders(reference_folder, output, evaluated_items(plans), ending,
                               output_file=output / "summary.json", num_processes=num_processes, case_ids=case_ids,
                               label_names=plans.labels)
    return CrossValidation(model_folder, output, summary, has_probabilities, case_ids)
