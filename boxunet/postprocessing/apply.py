"""Apply a postprocessing decision (``postprocessing.json``) to label maps, files and folders.

A decision is ``{"connectivity": 26, "steps": [{"labels": [1, 2], "name": "whole foreground"}, ...]}``:
each step keeps only the largest connected component of the voxels of its labels and regions (a region is
a list of labels) taken together; the steps run in order.
"""
import functools
import json
import shutil
from pathlib import Path

import numpy as np

from boxunet.errors import BoxunetError
from boxunet.io.atomic import atomic_path, read_json
from boxunet.io.dataset_json import parse_dataset_json
from boxunet.io.images import read_image, write_image
from boxunet.io.input_cases import check_output_folder
from boxunet.parallel import map_in_processes
from boxunet.paths import PLANS_FILE_NAME
from boxunet.postprocessing.components import CONNECTIVITIES, remove_all_but_largest

IMAGE_ENDINGS = (".nii.gz", ".nrrd", ".mha", ".nii")
FOLDER_FILES = (PLANS_FILE_NAME, "dataset.json")


def _step_labels(labels_and_regions: list) -> tuple[int, ...]:
    """The label values that a step's labels and regions cover together."""
    return tuple(sorted({value for item in labels_and_regions
                         for value in (item if isinstance(item, (list, tuple)) else [item])}))


def apply_postprocessing(segmentation: np.ndarray, postprocessing: dict) -> np.ndarray:
    """Apply the steps of a postprocessing decision to a label map, in order."""
    for step in postprocessing["steps"]:
        segmentation = remove_all_but_largest(segmentation, _step_labels(step["labels"]),
                                              postprocessing["connectivity"])
    return segmentation


def _is_label(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_label_or_region(value) -> bool:
    return _is_label(value) or (isinstance(value, list) and bool(value) and all(map(_is_label, value)))


def _decision_problem(data) -> str | None:
    if not isinstance(data, dict):
        return "expected a JSON object"
    if data.get("connectivity") not in CONNECTIVITIES[3]:
        return f'"connectivity" must be one of {CONNECTIVITIES[3]}; got {data.get("connectivity")!r}'
    if not isinstance(data.get("steps"), list):
        return '"steps" must be a list'
    for index, step in enumerate(data["steps"]):
        labels = step.get("labels") if isinstance(step, dict) else None
        if not isinstance(labels, list) or not labels or not all(map(_is_label_or_region, labels)):
            return (f'step {index}: "labels" must be a non-empty list of foreground labels and regions '
                    f"(lists of labels); got {labels!r}")
    return None


def load_postprocessing(path: Path) -> dict:
    """Read and check a ``postprocessing.json``; a missing or malformed file raises a BoxunetError."""
    path = Path(path)
    if not path.is_file():
        raise BoxunetError(f"file {path}: postprocessing file not found; boxunet_determine_postprocessing writes it")
    try:
        data = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BoxunetError(f"file {path}: is not valid JSON ({error})") from None
    problem = _decision_problem(data)
    if problem:
        raise BoxunetError(f"file {path}: not a postprocessing file: {problem}")
    return data


def label_map_files(folder: Path, file_ending: str) -> list[Path]:
    """The files of ``folder`` ending with ``file_ending`` (hidden files excluded), sorted."""
    return sorted(path for path in Path(folder).iterdir()
                  if path.name.endswith(file_ending) and not path.name.startswith("."))


def folder_file_ending(folder: Path) -> str:
    """The file ending of the label maps in ``folder``: the one in its dataset.json, else the single image
    ending (``IMAGE_ENDINGS``) that its files share."""
    folder = Path(folder)
    dataset_json = folder / "dataset.json"
    if dataset_json.is_file():
        return parse_dataset_json(read_json(dataset_json), str(dataset_json)).file_ending
    endings = sorted({ending for path in folder.iterdir() if not path.name.startswith(".")
                      for ending in IMAGE_ENDINGS if path.name.endswith(ending)})
    if not endings:
        raise BoxunetError(f"folder {folder}: no images ending with any of {', '.join(IMAGE_ENDINGS)}")
    if len(endings) > 1:
        raise BoxunetError(f"folder {folder}: images with several endings {endings} and no dataset.json; "
                           "give the file ending")
    return endings[0]


def _postprocess_file(files: tuple[Path, Path], postprocessing: dict) -> None:
    source, target = files
    segmentation, geometry = read_image(source)
    write_image(apply_postprocessing(segmentation, postprocessing), geometry, target)


def postprocess_files(files: list[tuple[Path, Path]], postprocessing: dict, num_processes: int = 1) -> None:
    """Postprocess every (source, target) pair of label map files; targets keep their source's geometry."""
    map_in_processes(functools.partial(_postprocess_file, postprocessing=postprocessing), files, num_processes,
                     "postprocessing", progress=False)


def apply_postprocessing_to_folder(input_folder: Path, output_folder: Path, postprocessing_file: Path,
                                   file_ending: str | None = None, num_processes: int = 1) -> list[Path]:
    """Postprocess every label map of ``input_folder`` ending with ``file_ending`` (default:
    ``folder_file_ending``) into ``output_folder`` with the same name and geometry; copy the folder's
    boxunet_plans.json and dataset.json along when present. Return the written files."""
    postprocessing = load_postprocessing(postprocessing_file)
    input_folder, output_folder = Path(input_folder), Path(output_folder)
    if not input_folder.is_dir():
        raise BoxunetError(f"input folder {input_folder} does not exist")
    check_output_folder(input_folder, output_folder)
    file_ending = file_ending or folder_file_ending(input_folder)
    sources = label_map_files(input_folder, file_ending)
    if not sources:
        raise BoxunetError(f"folder {input_folder}: no images ending with {file_ending!r}")
    targets = [output_folder / source.name for source in sources]
    postprocess_files(list(zip(sources, targets)), postprocessing, num_processes)
    for name in FOLDER_FILES:
        if (input_folder / name).is_file():
            with atomic_path(output_folder / name) as temporary:
                shutil.copyfile(input_folder / name, temporary)
    return targets
