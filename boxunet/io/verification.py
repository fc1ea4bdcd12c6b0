"""Verification of a raw dataset, before anything is written.

``verify_headers`` is cheap (file names, image headers, box files) and always runs first.
``case_data_problems`` checks voxel values (NaN/inf, undeclared label values) on arrays that the
fingerprint pass reads anyway, so the full check costs no extra read.
"""
from pathlib import Path

import numpy as np

from boxunet.errors import BoxunetError, DatasetError, Problem
from boxunet.io.boxes import Box, box_problem, read_boxes
from boxunet.io.cases import CaseFiles, list_training_cases
from boxunet.io.dataset_json import DatasetDescription
from boxunet.io.images import Geometry, axis_codes, read_geometry


def case_header_problems(case: CaseFiles, description: DatasetDescription) -> tuple[list[Problem], list[Box]]:
    """Check one case's headers and box file; return its problems and its boxes."""
    problems: list[Problem] = []
    try:
        reference = read_geometry(case.images[0])
    except BoxunetError as error:
        return [Problem(case.case_id, str(case.images[0]), _strip_file(error))], []
    others = list(case.images[1:]) + ([case.label] if case.label else [])
    for path in others:
        try:
            geometry = read_geometry(path)
        except BoxunetError as error:
            problems.append(Problem(case.case_id, str(path), _strip_file(error)))
            continue
        difference = reference.mismatch(geometry)
        if difference:
            problems.append(Problem(case.case_id, str(path), f"{difference} (channel 0: {case.images[0].name})"))
    boxes: list[Box] = []
    if case.boxes is not None:
        try:
            boxes = read_boxes(case.boxes)
        except BoxunetError as error:
            return problems + [Problem(case.case_id, str(case.boxes), _strip_file(error))], []
        for index, box in enumerate(boxes):
            reason = box_problem(box, reference.shape, description.box_labels)
            if reason:
                problems.append(Problem(case.case_id, str(case.boxes), f"box {index}: {reason}"))
    return problems, boxes


def first_channel_geometries(cases: list[CaseFiles]) -> dict[CaseFiles, Geometry]:
    """The header geometry of each case's first image; unreadable headers are left out (the header checks report
    them)."""
    geometries = {}
    for case in cases:
        try:
            geometries[case] = read_geometry(case.images[0])
        except BoxunetError:
            continue
    return geometries


def dimension_problems(geometries: dict[CaseFiles, Geometry], images_are_2d: bool | None = None) -> list[Problem]:
    """Cases whose images are 2D in a 3D dataset or 3D in a 2D one. The dataset's kind is ``images_are_2d`` (a
    trained model's) or, when None, that of most cases (3D on a tie)."""
    kinds = {case: geometry.is_2d for case, geometry in geometries.items()}
    if images_are_2d is None:
        images_are_2d = sum(kinds.values()) > len(kinds) / 2
        kind = "2D" if images_are_2d else "3D"
        majority = sum(1 for k in kinds.values() if k == images_are_2d)
        reason = f"{majority} of the dataset's {len(kinds)} cases are {kind}"
    else:
        kind = "2D" if images_are_2d else "3D"
        reason = f"the model was trained on {kind} images"
    return [Problem(case.case_id, str(case.images[0]), f"is a {'3D' if images_are_2d else '2D'} image but {reason}; "
                    "every case must have the same dimensionality")
            for case, is_2d in kinds.items() if is_2d != images_are_2d]


def orientation_warnings(geometries: dict[CaseFiles, Geometry], training_axis_codes: list[list[int]]) -> list[str]:
    """Cases whose axes point other ways (permuted or flipped, boxunet.io.images.axis_codes) than those of every
    training image: the network sees them in their own voxel order, as it never saw a training case."""
    return [str(Problem(case.case_id, str(case.images[0]), warning)) for case, geometry in geometries.items()
            if (warning := orientation_warning(geometry, training_axis_codes))]


def orientation_warning(geometry: Geometry, training_axis_codes: list[list[int]]) -> str | None:
    """What is odd about an image oriented unlike every training image (``orientation_warnings``), or None."""
    if not training_axis_codes or axis_codes(geometry.direction) in training_axis_codes:
        return None
    return (f"its axes are oriented {axis_codes(geometry.direction)} (direction cosines "
            f"{[round(d, 3) for d in geometry.direction]}) unlike every training image ({training_axis_codes}); "
            "the model sees it permuted or flipped, so its segmentation may be poor: reorient it like the "
            "training images")


def verify_headers(dataset_folder: Path, description: DatasetDescription) -> list[CaseFiles]:
    """List the training cases and check everything that needs no voxel data; raise DatasetError on problems."""
    cases, problems = list_training_cases(dataset_folder, description)
    for case in cases:
        problems += case_header_problems(case, description)[0]
    problems += dimension_problems(first_channel_geometries(cases))
    if problems:
        raise DatasetError(problems)
    return cases


def image_data_problems(case_id: str, path: Path, array: np.ndarray) -> list[Problem]:
    """NaN or inf voxels in one image channel."""
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            return [Problem(case_id, str(path), f"{bad} voxel(s) are NaN or infinite")]
    return []


def label_data_problems(case_id: str, path: Path, label: np.ndarray, description: DatasetDescription) -> list[Problem]:
    """Label values that are not declared integer labels."""
    if np.issubdtype(label.dtype, np.floating):
        if not np.all(np.isfinite(label)):
            return [Problem(case_id, str(path), "label map contains NaN or infinite values")]
        if not np.all(label == np.round(label)):
            return [Problem(case_id, str(path), "label map contains non-integer values")]
    values = np.unique(label).astype(np.int64).tolist()
    undeclared = [v for v in values if v not in description.label_set.values]
    if undeclared:
        return [Problem(case_id, str(path),
                        f"label values {undeclared} are not declared in dataset.json labels {description.label_set.values}")]
    return []


def _strip_file(error: BoxunetError) -> str:
    text = str(error)
    return text.split(": ", 1)[1] if text.startswith("file ") and ": " in text else text

