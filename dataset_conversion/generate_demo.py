"""Write the synthetic KiTS-like demo dataset (boxunet's default dataset) as a raw dataset with boxes.

Layout: ``imagesTr/<case>_0000<ending>``, ``labelsTr/<case><ending>`` (0 background, 1 kidney, 2 tumor,
3 cyst), ``boxesTr/<case>.json`` (one box per connected tumor component), optional ``imagesTs/`` with ``labelsTs/``, and
``dataset.json`` (written last). Case ``i`` (test cases continue the numbering) is made from seed ``seed + i``.
The dense variant (``--dense``) has no boxes: every label, tumor included, is trained from the label maps.
"""
import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from boxunet.cli.common import run_cli
from boxunet.errors import BoxunetError
from boxunet.io.boxes import boxes_from_label_map, write_boxes
from boxunet.io.images import Geometry, read_geometry, write_image
from boxunet.parallel import map_in_processes
from boxunet.paths import raw_root
from dataset_conversion.common import new_dataset_folder, positive_int, replace_folder, write_dataset_json
from dataset_conversion.phantom import MAX_SIZE_SCALE, MIN_SIZE_SCALE, TUMOR, generate_case

FILE_ENDINGS = (".nii.gz", ".nrrd", ".mha")
DEFAULT_DATASET_ID, DEFAULT_NAME = 900, "KiTSDemo"
DENSE_DATASET_ID, DENSE_NAME = 901, "KiTSDemoDense"


def demo_dataset_json(num_training: int, file_ending: str, name: str, cysts: bool = True, boxes: bool = True) -> dict:
    """The dataset.json of the demo dataset; the tumor label is given as boxes unless ``boxes`` is False."""
    labels = {"background": 0, "kidney": 1, "tumor": 2} | ({"cyst": 3} if cysts else {})
    description = ("Synthetic KiTS-like abdominal CT phantoms (kidney, tumor, cyst); "
                   + ("tumors given as boxes, their dense labels kept in labelsTr for evaluation" if boxes
                      else "every label dense"))
    return {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": num_training, "file_ending": file_ending,
            **({"box_labels": [TUMOR]} if boxes else {}), "name": name, "description": description,
            "reference": "synthetic"}


def crop_to_labels(image: np.ndarray, label: np.ndarray, geometry: Geometry, margin_mm: float
                   ) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """A case cropped to its labelled structures (kidneys, tumors, cysts) plus ``margin_mm`` per side, within the
    volume; the origin moves with the crop, so every voxel keeps its physical position."""
    where = np.argwhere(label > 0)
    margin = np.ceil(margin_mm / np.asarray(geometry.spacing)).astype(int)
    low = np.maximum(where.min(axis=0) - margin, 0)
    high = np.minimum(where.max(axis=0) + 1 + margin, label.shape)
    region = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    offset_xyz = low[::-1] * np.asarray(geometry.spacing[::-1])
    origin = np.asarray(geometry.origin) + np.asarray(geometry.direction).reshape(3, 3) @ offset_xyz
    return (np.ascontiguousarray(image[region]), np.ascontiguousarray(label[region]),
            replace(geometry, origin=tuple(float(o) for o in origin), shape=tuple(int(n) for n in high - low)))


def _write_case(job: tuple) -> None:
    folder, case_id, seed, size_scale, file_ending, cysts, boxes, training, crop_margin = job
    image, label, geometry = generate_case(seed, size_scale, cysts)
    if crop_margin is not None:
        image, label, geometry = crop_to_labels(image, label, geometry, crop_margin)
    if not training:  # the test labels are references for boxunet_evaluate only
        write_image(label, geometry, folder / "labelsTs" / f"{case_id}{file_ending}")
        write_image(image, geometry, folder / "imagesTs" / f"{case_id}_0000{file_ending}")
        return
    write_image(label, geometry, folder / "labelsTr" / f"{case_id}{file_ending}")
    if boxes:
        write_boxes(boxes_from_label_map(label, TUMOR, margin=0), folder / "boxesTr" / f"{case_id}.json")
    write_image(image, geometry, folder / "imagesTr" / f"{case_id}_0000{file_ending}")


def generate_demo_dataset(output_folder: Path, num_cases: int, seed: int = 0, size_scale: float = 1.0,
                          file_ending: str = ".nii.gz", num_test: int = 0, cysts: bool = True,
                          num_processes: int = 2, overwrite: bool = False, boxes: bool = True,
                          crop_margin: float | None = None) -> Path:
    """Write ``num_cases`` training and ``num_test`` test phantoms into the dataset folder ``output_folder``.

    Refused (nothing written) when the folder exists and is not empty, unless ``overwrite``, which
    replaces it. ``size_scale`` scales the voxel counts at constant physical extent; ``boxes=False`` writes the
    dense variant (no boxesTr, no box_labels); with ``crop_margin`` (mm) every case is cropped to its kidneys,
    tumors and cysts plus that margin (``crop_to_labels``). Returns the folder.
    """
    if num_cases < 1 or num_test < 0:
        raise BoxunetError(f"need at least 1 training case and >= 0 test cases; got {num_cases} and {num_test}")
    if seed < 0:
        raise BoxunetError(f"seed {seed}: must be >= 0")
    if file_ending not in FILE_ENDINGS:
        raise BoxunetError(f"file ending {file_ending!r}: choose one of {', '.join(FILE_ENDINGS)}")
    if not MIN_SIZE_SCALE <= size_scale <= MAX_SIZE_SCALE:
        raise BoxunetError(f"size scale {size_scale}: must be between {MIN_SIZE_SCALE} and {MAX_SIZE_SCALE}")
    folder = Path(output_folder)
    if folder.exists() and not folder.is_dir():
        raise BoxunetError(f"folder {folder}: exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise BoxunetError(f"folder {folder}: exists and is not empty; use --overwrite to replace it")
    replace_folder(folder)
    if crop_margin is not None and crop_margin < 0:
        raise BoxunetError(f"crop margin {crop_margin} mm: must be >= 0")
    jobs = [(folder, f"case_{index:05d}", seed + index, size_scale, file_ending, cysts, boxes, index < num_cases,
             crop_margin) for index in range(num_cases + num_test)]
    map_in_processes(_write_case, jobs, num_processes, "generate")
    write_dataset_json(demo_dataset_json(num_cases, file_ending, folder.name, cysts, boxes), folder)
    return folder


def summarize(folder: Path) -> str:
    """Mean shape and spacing (z, y, x) of the training images of a written dataset."""
    geometries = [read_geometry(path) for path in sorted((Path(folder) / "imagesTr").iterdir())]
    shape = np.mean([g.shape for g in geometries], axis=0)
    spacing = np.mean([g.spacing for g in geometries], axis=0)
    return f"mean shape (z, y, x) {np.round(shape, 1).tolist()}, mean spacing {np.round(spacing, 2).tolist()} mm"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="boxunet_generate_demo",
        description="Write the synthetic KiTS-like CT demo dataset (kidney 1, tumor 2 as boxes, cyst 3) into the "
                    "raw data root as DatasetXXX_<name>.")
    parser.add_argument("-d", "--dataset-id", type=positive_int, default=None,
                        help=f"dataset number XXX of the folder DatasetXXX_<name> (default {DEFAULT_DATASET_ID}, "
                             f"{DENSE_DATASET_ID} with --dense)")
    parser.add_argument("-n", "--num-cases", type=positive_int, default=20, help="training cases (default 20)")
    parser.add_argument("--name", default=None,
                        help=f"folder name suffix (default {DEFAULT_NAME}, {DENSE_NAME} with --dense)")
    parser.add_argument("-o", "--output-root", type=Path, default=None,
                        help="folder to write DatasetXXX_<name> into (default: the raw root, $boxunet_raw)")
    parser.add_argument("--seed", type=int, default=0, help="case i is made from seed + i (default 0)")
    parser.add_argument("--size-scale", type=float, default=1.0,
                        help=f"scale of the voxel counts, same physical extent ({MIN_SIZE_SCALE}-{MAX_SIZE_SCALE}, "
                             "default 1.0; 0.5 gives small cases for quick tests)")
    parser.add_argument("--file-ending", choices=FILE_ENDINGS, default=".nii.gz", help="image format (default .nii.gz)")
    parser.add_argument("--num-test", type=int, default=0, help="extra test cases in imagesTs, their labels in labelsTs (default 0)")
    parser.add_argument("--no-cysts", action="store_true", help="no cysts and no cyst label")
    parser.add_argument("--crop-margin", type=float, metavar="MM",
                        help="crop every case to its kidneys, tumors and cysts plus this margin in mm (default: the "
                             "whole abdomen)")
    parser.add_argument("--dense", action="store_true",
                        help="no boxes: the tumor is trained from its label maps like kidney and cyst")
    parser.add_argument("-np", "--num-processes", type=positive_int, default=2, help="worker processes (default 2)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty dataset folder")
    return parser.parse_args(argv)


def _run(args: argparse.Namespace) -> None:
    root = args.output_root if args.output_root is not None else raw_root()
    dataset_id = args.dataset_id or (DENSE_DATASET_ID if args.dense else DEFAULT_DATASET_ID)
    name = args.name or (DENSE_NAME if args.dense else DEFAULT_NAME)
    folder = new_dataset_folder(root, dataset_id, name, args.overwrite)
    start = time.perf_counter()
    generate_demo_dataset(folder, args.num_cases, args.seed, args.size_scale, args.file_ending, args.num_test,
                          not args.no_cysts, args.num_processes, args.overwrite, boxes=not args.dense,
                          crop_margin=args.crop_margin)
    print(f"wrote {args.num_cases} training and {args.num_test} test cases to {folder} "
          f"in {time.perf_counter() - start:.1f} s; {summarize(folder)}")


def main(argv=None) -> None:
    """Console entry point ``boxunet_generate_demo``."""
    run_cli(_run, parse_args(argv))


if __name__ == "__main__":
    main()
