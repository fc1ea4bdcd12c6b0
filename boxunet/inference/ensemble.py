"""Ensemble folders of predictions by averaging their saved class probabilities.

Each input folder holds ``<case>.npz`` and ``<case>.json`` per case (``boxunet_predict
--save-probabilities`` or validation with ``boxunet_train --npz``) and copies of the plans and dataset.json.
The averaged probabilities (float32, one folder read at a time) become a label map like a single model's.
"""
import functools
from pathlib import Path

import numpy as np

from boxunet.errors import BoxunetError
from boxunet.inference.export import probabilities_to_segmentation
from boxunet.io.images import Geometry, write_image
from boxunet.io.input_cases import check_output_folder
from boxunet.io.model_folder import read_model_files, write_model_files
from boxunet.io.probabilities import read_probabilities, read_properties, write_probabilities
from boxunet.parallel import map_in_processes
from boxunet.paths import DATASET_JSON
from boxunet.planning.plans import Plans

SAVE_HINT = "probabilities are saved by boxunet_predict --save-probabilities and boxunet_train --npz"


def _cases_of(folder: Path) -> set[str]:
    return {path.name[:-len(".npz")] for path in folder.iterdir()
            if path.name.endswith(".npz") and not path.name.startswith(".")}


def _common_cases(folders: list[Path], case_ids: list[str] | None = None) -> list[str]:
    """The cases every folder holds (of ``case_ids`` when given); cases missing from some folder raise an error
    naming them."""
    cases = {folder: _cases_of(folder) for folder in folders}
    if case_ids is not None:
        cases = {folder: found & set(case_ids) for folder, found in cases.items()}
        every_case = set(case_ids)
    else:
        every_case = set().union(*cases.values())
    if not every_case:
        raise BoxunetError(f"no <case>.npz in {', '.join(map(str, folders))}; {SAVE_HINT}")
    missing = [f"{folder} lacks {', '.join(sorted(every_case - found))}"
               for folder, found in cases.items() if every_case - found]
    if missing:
        raise BoxunetError(f"the input folders must hold the same cases (<case>.npz): {'; '.join(missing)} "
                           f"({SAVE_HINT})")
    absent = sorted(case for case in every_case if not (folders[0] / f"{case}.json").is_file())
    if absent:
        raise BoxunetError(f"folder {folders[0]}: no <case>.json (properties) next to the probabilities of "
                           f"{', '.join(absent)}")
    return sorted(every_case)


def _common_plans(folders: list[Path]) -> tuple[Plans, dict]:
    """The plans and dataset.json of the first folder, after checking that every folder has the same labels."""
    plans_json, dataset_json = read_model_files(folders[0], "prediction folder")
    plans = Plans.from_json(plans_json)
    for folder in folders[1:]:
        other = Plans.from_json(read_model_files(folder, "prediction folder")[0])
        if (other.labels, other.regions_class_order) != (plans.labels, plans.regions_class_order):
            raise BoxunetError(f"prediction folders {folders[0]} and {folder} have different labels "
                               f"({plans.labels} vs {other.labels}); only predictions of the same labels ensemble")
    return plans, dataset_json


def _ensemble_case(case_id: str, folders: list[Path], output_folder: Path, plans: Plans, file_ending: str,
                   save_probabilities: bool) -> str:
    total = None
    for folder in folders:
        probabilities = read_probabilities(folder / case_id)
        if total is None:
            total = probabilities.astype(np.float32)
        elif probabilities.shape != total.shape:
            raise BoxunetError(f"case {case_id!r}: probabilities of shape {list(probabilities.shape)} in {folder} "
                               f"differ from {list(total.shape)} in {folders[0]}")
        else:
            total += probabilities
        del probabilities
    total /= len(folders)
    properties = read_properties(folders[0] / case_id)
    write_image(probabilities_to_segmentation(total, plans), Geometry.from_json(properties["geometry"]),
                output_folder / f"{case_id}{file_ending}")
    if save_probabilities:
        write_probabilities(total, properties, output_folder / case_id)
    return case_id


def ensemble_folders(input_folders: list[Path], output_folder: Path, save_probabilities: bool = False,
                     num_processes: int = 1, case_ids: list[str] | None = None) -> list[str]:
    """Average the probabilities of every case (or only ``case_ids``) over ``input_folders`` and write
    ``<case><file_ending>`` label maps (argmax, or regions above 0.5 painted in ``regions_class_order``) in the
    geometry of the case's properties to ``output_folder``, with copies of the plans and dataset.json; with
    ``save_probabilities`` also the averaged ``<case>.npz`` and ``<case>.json``. Return the case ids."""
    folders, output_folder = [Path(folder) for folder in input_folders], Path(output_folder)
    for folder in folders:
        if not folder.is_dir():
            raise BoxunetError(f"input folder {folder} does not exist")
        check_output_folder(folder, output_folder)
    cases = _common_cases(folders, case_ids)
    plans, dataset_json = _common_plans(folders)
    write_model_files(output_folder, plans.to_json(), folders[0] / DATASET_JSON)
    ensemble = functools.partial(_ensemble_case, folders=folders, output_folder=output_folder, plans=plans,
                                 file_ending=dataset_json["file_ending"], save_probabilities=save_probabilities)
    return map_in_processes(ensemble, cases, num_processes, "ensembling", progress=False)
