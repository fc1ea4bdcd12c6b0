"""Convert a dataset in nnU-Net v2's raw layout into a boxunet raw dataset (``boxunet_convert_nnunet``).

The input holds ``imagesTr/<case>_<XXXX><ending>`` and ``labelsTr/<case><ending>`` (optionally ``imagesTs``)
and a dataset.json; a folder without one (e.g. a copy of MSD Task04 Hippocampus as nnU-Net lays it out)
gets one from ``--channel-names`` and ``--labels``. ``--num-test N`` holds out N training cases, drawn with a
fixed seed, as ``imagesTs`` and ``labelsTs`` (the labels only for evaluation). Files are copied byte for byte
(hard links where possible) and everything is checked before anything is written.
"""
import argparse
import random
from pathlib import Path

from boxunet.cli.common import run_cli
from boxunet.errors import BoxunetError, DatasetError
from boxunet.io.atomic import read_json
from boxunet.io.cases import CaseFiles, group_channel_files, list_training_cases
from boxunet.io.dataset_json import parse_dataset_json
from boxunet.io.input_cases import list_prediction_cases
from boxunet.parallel import map_in_processes
from boxunet.paths import DATASET_JSON, raw_root
from dataset_conversion.common import new_dataset_folder, place_file, positive_int, replace_folder, write_dataset_json

TEST_SPLIT_SEED = 12345


def described_dataset_json(input_folder: Path, channel_names: list[str] | None, labels: list[str] | None,
                           file_ending: str) -> dict:
    """The input's dataset.json, or one made from ``channel_names`` and ``labels`` (names in value order, the
    first is the background) for the cases of its imagesTr."""
    path = Path(input_folder) / DATASET_JSON
    if path.is_file():
        if channel_names or labels:
            raise BoxunetError(f"file {path}: the input has a dataset.json; --channel-names and --labels are only for "
                               "folders without one")
        return read_json(path)
    if not channel_names or not labels:
        raise BoxunetError(f"file {path}: missing; give --channel-names (one per channel, e.g. MRI) and --labels "
                           "(the label names in value order, background first)")
    if len(set(labels)) != len(labels):
        raise BoxunetError(f"--labels {' '.join(labels)}: every label needs its own name")
    images = Path(input_folder) / "imagesTr"
    cases = group_channel_files(images, file_ending, len(channel_names))[0] if images.is_dir() else {}
    return {"channel_names": {str(c): name for c, name in enumerate(channel_names)},
            "labels": {name: value for value, name in enumerate(labels)}, "numTraining": len(cases),
            "file_ending": file_ending}


def held_out_cases(case_ids: list[str], num_test: int, seed: int = TEST_SPLIT_SEED) -> list[str]:
    """``num_test`` of ``case_ids`` drawn with ``seed`` (the same cases for the same ids), sorted."""
    if not 0 <= num_test < len(case_ids):
        raise BoxunetError(f"--num-test {num_test}: give 0 up to {len(case_ids) - 1} (the input has {len(case_ids)} "
                           "training cases)")
    return sorted(random.Random(seed).sample(sorted(case_ids), num_test))


def convert_nnunet(input_folder: Path, output_root: Path, dataset_id: int, name: str,
                   channel_names: list[str] | None = None, labels: list[str] | None = None,
                   file_ending: str = ".nii.gz", num_test: int = 0, num_processes: int = 1,
                   overwrite: bool = False) -> Path:
    """Convert ``input_folder`` into ``output_root/DatasetXXX_name`` (see the module docstring); its folder."""
    input_folder = Path(input_folder)
    if not input_folder.is_dir():
        raise BoxunetError(f"folder {input_folder}: does not exist")
    data = described_dataset_json(input_folder, channel_names, labels, file_ending)
    description = parse_dataset_json(data, str(input_folder / DATASET_JSON))
    cases, problems = list_training_cases(input_folder, description)
    if problems:
        raise DatasetError(problems, header=f"{input_folder} cannot be converted")
    if not cases:
        raise BoxunetError(f"folder {input_folder / 'imagesTr'}: no training case")
    test_ids = set(held_out_cases([case.case_id for case in cases], num_test))
    test_images = list_prediction_cases(input_folder / "imagesTs", description) \
        if (input_folder / "imagesTs").is_dir() else []
    folder = new_dataset_folder(output_root, dataset_id, name, overwrite)

    replace_folder(folder)
    transfers = []
    for case in cases:
        images, labels_folder = ("imagesTs", "labelsTs") if case.case_id in test_ids else ("imagesTr", "labelsTr")
        transfers += _case_transfers(case, folder / images, description.file_ending)
        transfers.append((case.label, folder / labels_folder / case.label.name))
    for case in test_images:
        transfers += _case_transfers(case, folder / "imagesTs", description.file_ending)
    map_in_processes(_transfer, transfers, num_processes, "convert")
    write_dataset_json(dict(data, numTraining=len(cases) - len(test_ids)), folder)
    return folder


def _case_transfers(case: CaseFiles, images_folder: Path, file_ending: str) -> list[tuple[Path, Path]]:
    return [(path, images_folder / f"{case.case_id}_{channel:04d}{file_ending}")
            for channel, path in enumerate(case.images)]


def _transfer(transfer: tuple[Path, Path]) -> None:
    place_file(*transfer, mode="link")


def main(argv: list[str] | None = None) -> None:
    """Entry point ``boxunet_convert_nnunet``."""
    parser = argparse.ArgumentParser(prog="boxunet_convert_nnunet", description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--input", required=True, type=Path, help="folder with imagesTr and labelsTr")
    parser.add_argument("-o", "--output-root", type=Path, help="raw data root (default: $boxunet_raw)")
    parser.add_argument("-d", "--dataset-id", required=True, type=int, help="dataset id (1-999)")
    parser.add_argument("--name", required=True, help="dataset name (DatasetXXX_<name>)")
    parser.add_argument("--channel-names", nargs="+", help="without a dataset.json: one name per channel, e.g. MRI")
    parser.add_argument("--labels", nargs="+",
                        help="without a dataset.json: the label names in value order, background first")
    parser.add_argument("--file-ending", default=".nii.gz", help="without a dataset.json (default: %(default)s)")
    parser.add_argument("--num-test", type=int, default=0,
                        help=f"hold out this many training cases as imagesTs/labelsTs (seed {TEST_SPLIT_SEED})")
    parser.add_argument("-np", "--num-processes", type=positive_int, default=1, help="worker processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output dataset folder")
    args = parser.parse_args(argv)
    folder = run_cli(convert_nnunet, args.input, args.output_root or raw_root(), args.dataset_id, args.name,
                     args.channel_names, args.labels, args.file_ending, args.num_test, args.num_processes,
                     args.overwrite)
    print(f"wrote {folder}")
