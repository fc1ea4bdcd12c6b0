"""Convert the KiTS19, KiTS21 and KiTS23 kidney tumour challenge data into boxunet raw datasets.

Each case folder ``case_XXXXX/`` holds ``imaging.nii.gz`` and a segmentation; they become
``imagesTr/case_XXXXX_0000.nii.gz`` and ``labelsTr/case_XXXXX.nii.gz`` as hard links, copies or
symlinks of the original bytes (no re-encoding). KiTS19 cases without segmentation go to ``imagesTs``.
"""
import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

from boxunet.cli.common import run_cli
from boxunet.errors import BoxunetError
from boxunet.paths import raw_root
from boxunet.parallel import map_in_processes
from dataset_conversion.common import (new_dataset_folder, place_file, positive_int, replace_folder,
                                       write_dataset_json)

IMAGING_FILE = "imaging.nii.gz"
FILE_ENDING = ".nii.gz"
_CASE_FOLDER = re.compile(r"^case_\d+$")

# nnU-Net's KiTS21/23 convention: overlapping regions, painted kidney (1), then masses (3), then tumor (2).
_REGION_LABELS = {"background": 0, "kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2}
_REGION_EXTRA = {"regions_class_order": [1, 3, 2], "label_names": {"1": "kidney", "2": "tumor", "3": "cyst"}}


@dataclass(frozen=True)
class KitsRelease:
    """Where one KiTS release keeps its cases and what its dataset.json says."""

    name: str
    dataset_id: int
    case_subfolders: tuple[str, ...]
    segmentation_file: str
    labels: dict
    reference: str
    extra: dict = field(default_factory=dict)
    unlabelled_cases_are_test: bool = False


RELEASES = {
    "kits19": KitsRelease("KiTS19", 64, ("data",), "segmentation.nii.gz",
                          {"background": 0, "kidney": 1, "tumor": 2}, "https://github.com/neheller/kits19",
                          unlabelled_cases_are_test=True),
    "kits21": KitsRelease("KiTS2021", 135, ("kits21/data", "data"), "aggregated_MAJ_seg.nii.gz", _REGION_LABELS,
                          "https://github.com/neheller/kits21", _REGION_EXTRA),
    "kits23": KitsRelease("KiTS2023", 220, ("dataset",), "segmentation.nii.gz", _REGION_LABELS,
                          "https://github.com/neheller/kits23", _REGION_EXTRA),
}


def find_case_folders(input_folder: Path, release: KitsRelease) -> list[Path]:
    """Return the ``case_*`` folders of a KiTS repository root or of the folder that holds them."""
    input_folder = Path(input_folder)
    if not input_folder.is_dir():
        raise BoxunetError(f"folder {input_folder}: does not exist")
    for candidate in (input_folder, *(input_folder / sub for sub in release.case_subfolders)):
        cases = sorted(p for p in candidate.iterdir() if p.is_dir() and _CASE_FOLDER.match(p.name)) \
            if candidate.is_dir() else []
        if cases:
            return cases
    places = ", ".join(str(input_folder / sub) for sub in ("", *release.case_subfolders))
    raise BoxunetError(f"folder {input_folder}: no case_XXXXX folders found (looked in {places})")


def convert_kits(release_key: str, input_folder: Path, output_root: Path, dataset_id: int | None = None,
                 name: str | None = None, mode: str = "link", num_processes: int = 1,
                 overwrite: bool = False) -> Path:
    """Convert a KiTS release ("kits19", "kits21", "kits23") into ``output_root/DatasetXXX_Name``; return it.

    Everything is checked before anything is written; ``mode`` is "link", "copy" or "symlink".
    """
    release = RELEASES[release_key]
    cases = find_case_folders(input_folder, release)
    _require_file(cases, IMAGING_FILE, "; download the images with the KiTS repository's download script")
    labelled = {case for case in cases if (case / release.segmentation_file).is_file()}
    if not release.unlabelled_cases_are_test or not labelled:
        _require_file(cases, release.segmentation_file, "")
    name = name or release.name
    dataset_id = release.dataset_id if dataset_id is None else dataset_id
    folder = new_dataset_folder(output_root, dataset_id, name, overwrite)

    transfers = []
    for case in cases:
        images = "imagesTr" if case in labelled else "imagesTs"
        transfers.append((case / IMAGING_FILE, folder / images / f"{case.name}_0000{FILE_ENDING}", mode))
        if case in labelled:
            transfers.append((case / release.segmentation_file, folder / "labelsTr" / f"{case.name}{FILE_ENDING}", mode))
    replace_folder(folder)
    map_in_processes(_place, transfers, num_processes, "convert")
    data = {"channel_names": {"0": "CT"}, "labels": release.labels, "numTraining": len(labelled),
            "file_ending": FILE_ENDING, **release.extra, "name": name, "reference": release.reference}
    write_dataset_json(data, folder)
    return folder


def _require_file(cases: list[Path], file_name: str, hint: str) -> None:
    missing = [case for case in cases if not (case / file_name).is_file()]
    if missing:
        listed = ", ".join(case.name for case in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise BoxunetError(f"case {missing[0].name}: {file_name} is missing in {missing[0]} "
                           f"({len(missing)} case(s) lack it: {listed}){hint}")


def _place(transfer: tuple[Path, Path, str]) -> None:
    place_file(*transfer)


def _main(release_key: str, argv: list[str] | None) -> None:
    release = RELEASES[release_key]
    parser = argparse.ArgumentParser(
        prog=f"boxunet_convert_{release_key}",
        description=f"Convert {release.name} ({release.reference}) into a boxunet raw dataset.")
    parser.add_argument("-i", "--input", required=True, type=Path,
                        help="the KiTS repository root, or the folder holding the case_XXXXX folders")
    parser.add_argument("-o", "--output-root", type=Path, help="raw data root (default: $boxunet_raw)")
    parser.add_argument("-d", "--dataset-id", type=int, default=release.dataset_id,
                        help=f"dataset id (default {release.dataset_id})")
    parser.add_argument("--name", default=release.name, help=f"dataset name (default {release.name})")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--copy", dest="mode", action="store_const", const="copy",
                       help="copy the files (default: hard links, copies across file systems)")
    modes.add_argument("--symlink", dest="mode", action="store_const", const="symlink",
                       help="make symbolic links to the original files")
    parser.add_argument("-np", "--num-processes", type=positive_int, default=1, help="worker processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output dataset folder")
    args = parser.parse_args(argv)
    folder = run_cli(convert_kits, release_key, args.input, args.output_root or raw_root(), args.dataset_id,
                     args.name, args.mode or "link", args.num_processes, args.overwrite)
    print(f"wrote {folder}")


def main_kits19(argv: list[str] | None = None) -> None:
    """Entry point ``boxunet_convert_kits19``."""
    _main("kits19", argv)


def main_kits21(argv: list[str] | None = None) -> None:
    """Entry point ``boxunet_convert_kits21``."""
    _main("kits21", argv)


def main_kits23(argv: list[str] | None = None) -> None:
    """Entry point ``boxunet_convert_kits23``."""
    _main("kits23", argv)
