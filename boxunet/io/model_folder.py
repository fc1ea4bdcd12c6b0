"""The files of a model folder and of every folder of predictions.

A model folder is ``boxunet_results/DatasetXXX/<trainer>__<plans>__<configuration>/``. Training puts the
plans and a copy of dataset.json into it, so a model folder (with its ``fold_*/checkpoint_*.pth``) predicts
on its own, without the preprocessed data. Every folder of predictions gets the same two files, which is
what ensembling and postprocessing read.
"""
import re
from pathlib import Path

from boxunet.errors import BoxunetError
from boxunet.io.atomic import copy_file, read_json, write_json
from boxunet.io.dataset_json import file_ending_problem
from boxunet.io.dataset_locator import find_dataset_folder
from boxunet.paths import DATASET_JSON, PLANS_FILE_NAME, model_folder_name, results_root

FOLD_PATTERN = re.compile(r"^fold_(?P<fold>\d+|all)$")


def write_model_files(folder: Path, plans_json: dict, dataset_json_file: Path) -> None:
    """Put the plans (their JSON form) and a copy of ``dataset_json_file`` into ``folder`` (created if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(plans_json, folder / PLANS_FILE_NAME)
    if Path(dataset_json_file).resolve() != (folder / DATASET_JSON).resolve():
        copy_file(dataset_json_file, folder / DATASET_JSON)


def read_model_files(folder: Path, what: str = "model folder") -> tuple[dict, dict]:
    """The plans (JSON form) and dataset.json of a model or prediction ``folder``; a clear error names what is
    missing."""
    folder = Path(folder)
    for name in (PLANS_FILE_NAME, DATASET_JSON):
        if not (folder / name).is_file():
            raise BoxunetError(f"{what} {folder} has no {name}; it is written by boxunet_train (model folders), "
                               "boxunet_predict and validation (prediction folders)")
    dataset_json = read_json(folder / DATASET_JSON)
    problem = file_ending_problem(dataset_json.get("file_ending") if isinstance(dataset_json, dict) else None)
    if problem:
        raise BoxunetError(f"file {folder / DATASET_JSON}: {problem}")
    return read_json(folder / PLANS_FILE_NAME), dataset_json


def find_model_folder(dataset: str, configuration: str, trainer: str, plans_name: str) -> Path:
    """``boxunet_results/DatasetXXX/<trainer>__<plans>__<configuration>``, which must exist."""
    dataset_folder = find_dataset_folder(dataset, results_root())
    folder = dataset_folder / model_folder_name(trainer, plans_name, configuration)
    if not folder.is_dir():
        trained = sorted(p.name for p in dataset_folder.iterdir() if len(p.name.split("__")) == 3)
        raise BoxunetError(f"no trained model {folder.name} in {dataset_folder} (trained: {trained or 'none'}); "
                           f"train it with boxunet_train {dataset_folder.name} {configuration} FOLD -tr {trainer}")
    return folder


def parse_model_folder_name(folder: Path) -> tuple[str, str, str]:
    """(trainer, plans name, configuration) of a model folder's name."""
    parts = Path(folder).name.split("__")
    if len(parts) != 3 or not all(parts):
        raise BoxunetError(f"{folder} is not a model folder (<trainer>__<plans>__<configuration>)")
    return parts[0], parts[1], parts[2]


def trained_folds(folder: Path, checkpoint_name: str) -> list[str]:
    """Folds of a model folder that have ``checkpoint_name``, sorted (numbers first, then 'all')."""
    folds = [FOLD_PATTERN.match(p.name).group("fold") for p in Path(folder).iterdir()
             if FOLD_PATTERN.match(p.name) and (p / checkpoint_name).is_file()]
    return sorted(folds, key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0))
