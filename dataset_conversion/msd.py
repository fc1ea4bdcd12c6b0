"""Convert a Medical Segmentation Decathlon task (``TaskXX_Name``) into a boxunet raw dataset.

4D images are split into one 3D file per channel carrying the geometry of the first three axes;
3D images and label maps are copied byte for byte. macOS ``._*`` files of the MSD archives are skipped.
"""
import argparse
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from boxunet.cli.common import run_cli
from boxunet.errors import BoxunetError
from boxunet.io.atomic import read_json
from boxunet.io.cases import case_id_problem
from boxunet.io.dataset_json import parse_dataset_json
from boxunet.io.images import Geometry, write_image
from boxunet.io.nifti_integrity import check_nifti_whole
from boxunet.parallel import map_in_processes
from boxunet.paths import raw_root
from dataset_conversion.common import new_dataset_folder, place_file, positive_int, replace_folder, write_dataset_json

FILE_ENDING = ".nii.gz"
_TASK_NAME = re.compile(r"^Task(\d+)_([A-Za-z0-9_\-]+)$")
_DESCRIPTIVE_KEYS = ("name", "description", "reference", "licence", "release")


def msd_dataset_json(task_folder: Path, num_training: int) -> dict:
    """Translate the task's MSD dataset.json into a validated boxunet one."""
    path = Path(task_folder) / "dataset.json"
    if not path.is_file():
        raise BoxunetError(f"file {path}: missing; an MSD task folder holds dataset.json, imagesTr and labelsTr")
    msd = read_json(path)
    if not isinstance(msd.get("modality"), dict) or not isinstance(msd.get("labels"), dict):
        raise BoxunetError(f'file {path}: needs "modality" and "labels" (MSD format, e.g. "labels": {{"0": "background"}})')
    labels = {}
    for value, label_name in msd["labels"].items():
        if not str(value).isdigit():
            raise BoxunetError(f"file {path}: label keys must be label values such as \"1\"; got {value!r}")
        if label_name in labels:
            raise BoxunetError(f"file {path}: label name {label_name!r} is used for two values")
        labels[label_name] = int(value)
    data = {"channel_names": {str(k): v for k, v in msd["modality"].items()}, "labels": labels,
            "numTraining": num_training, "file_ending": FILE_ENDING}
    data.update({key: msd[key] for key in _DESCRIPTIVE_KEYS if key in msd})
    parse_dataset_json(data, str(path))
    return data


def list_images(folder: Path) -> dict[str, Path]:
    """Return {case id: path} of the ``.nii.gz`` files of ``folder``, skipping hidden and ``._*`` files."""
    if not Path(folder).is_dir():
        return {}
    images = {}
    for path in sorted(Path(folder).iterdir()):
        if path.name.startswith(".") or not path.name.endswith(FILE_ENDING):
            continue
        case_id = path.name[: -len(FILE_ENDING)]
        problem = case_id_problem(case_id)
        if problem:
            raise BoxunetError(f"file {path}: {problem}")
        images[case_id] = path
    return images


def image_layout(path: Path) -> tuple[int, int]:
    """Dimension and number of channels of an MSD image from its header (3D: one channel, 4D: the 4th size)."""
    check_nifti_whole(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise BoxunetError(f"file {path}: cannot be read as an image") from None
    size = reader.GetSize()
    if len(size) not in (3, 4) or reader.GetNumberOfComponents() != 1:
        raise BoxunetError(f"file {path}: expected a 3D or 4D scalar image, got size {list(size)} with "
                           f"{reader.GetNumberOfComponents()} component(s) per voxel")
    return len(size), 1 if len(size) == 3 else int(size[3])


def split_channels(path: Path, targets: list[Path]) -> None:
    """Write channel ``c`` of the 4D image ``path`` to ``targets[c]`` with the geometry of its first 3 axes."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    direction = np.asarray(image.GetDirection()).reshape(4, 4)[:3, :3]
    if abs(np.linalg.det(direction)) < 1e-6:
        raise BoxunetError(f"file {path}: the first three axes have a singular direction matrix")
    geometry = Geometry(spacing=tuple(image.GetSpacing()[:3])[::-1], origin=tuple(image.GetOrigin()[:3]),
                        direction=tuple(float(d) for d in direction.ravel()), shape=array.shape[1:])
    for channel, target in enumerate(targets):
        write_image(array[channel], geometry, target)


def convert_msd(task_folder: Path, output_root: Path, dataset_id: int | None = None, name: str | None = None,
                num_processes: int = 1, overwrite: bool = False) -> Path:
    """Convert an MSD task folder into ``output_root/DatasetXXX_Name`` and return that folder.

    The id and name default to those of ``TaskXX_Name``. Everything is checked before anything is written.
    """
    task_folder = Path(task_folder)
    if not task_folder.is_dir():
        raise BoxunetError(f"folder {task_folder}: does not exist")
    match = _TASK_NAME.match(task_folder.name)
    if (dataset_id is None or name is None) and not match:
        raise BoxunetError(f"folder {task_folder}: is not named TaskXX_Name; give the dataset id (-d) and --name")
    dataset_id = int(match.group(1)) if dataset_id is None else dataset_id
    name = match.group(2) if name is None else name
    training = list_images(task_folder / "imagesTr")
    if not training:
        raise BoxunetError(f"folder {task_folder / 'imagesTr'}: no {FILE_ENDING} images found")
    labels = {case_id: task_folder / "labelsTr" / f"{case_id}{FILE_ENDING}" for case_id in training}
    for case_id, label in labels.items():
        if not label.is_file():
            raise BoxunetError(f"case {case_id}: label file {label} is missing")
    data = msd_dataset_json(task_folder, len(training))
    num_channels = len(data["channel_names"])
    sources = [(case_id, path, "imagesTr") for case_id, path in training.items()]
    sources += [(case_id, path, "imagesTs") for case_id, path in list_images(task_folder / "imagesTs").items()]
    layouts = map_in_processes(image_layout, [path for _, path, _ in sources], num_processes, "convert")
    for (case_id, path, _), (_, channels) in zip(sources, layouts):
        if channels != num_channels:
            raise BoxunetError(f"case {case_id}: file {path} has {channels} channel(s) but dataset.json "
                               f"declares {num_channels} modalities")
    folder = new_dataset_folder(output_root, dataset_id, name, overwrite)

    replace_folder(folder)
    jobs = [(path, [folder / images / f"{case_id}_{c:04d}{FILE_ENDING}" for c in range(num_channels)], dimension == 4)
            for (case_id, path, images), (dimension, _) in zip(sources, layouts)]
    jobs += [(label, [folder / "labelsTr" / label.name], False) for label in labels.values()]
    map_in_processes(_convert_file, jobs, num_processes, "convert")
    write_dataset_json(data, folder)
    return folder


def _convert_file(job: tuple[Path, list[Path], bool]) -> None:
    source, targets, split = job
    if split:
        split_channels(source, targets)
    else:
        place_file(source, targets[0], "copy")


def main(argv: list[str] | None = None) -> None:
    """Entry point ``boxunet_convert_msd``."""
    parser = argparse.ArgumentParser(prog="boxunet_convert_msd",
                                     description="Convert a Medical Segmentation Decathlon task into a boxunet raw dataset.")
    parser.add_argument("-i", "--input", required=True, type=Path, help="the TaskXX_Name folder")
    parser.add_argument("-o", "--output-root", type=Path, help="raw data root (default: $boxunet_raw)")
    parser.add_argument("-d", "--dataset-id", type=int, help="dataset id (default: the task number)")
    parser.add_argument("--name", help="dataset name (default: the task name)")
    parser.add_argument("-np", "--num-processes", type=positive_int, default=1, help="worker processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output dataset folder")
    args = parser.parse_args(argv)
    folder = run_cli(convert_msd, args.input, args.output_root or raw_root(), args.dataset_id, args.name,
                     args.num_processes, args.overwrite)
    print(f"wrote {folder}")
