"""Stage-1 pseudo masks on real KiTS23 tumor shapes with painted CT-like intensities.

The shared calibration set (../shared/data/kits23_labels, 50 expert label maps without CT) gives real
kidney / tumor / cyst geometry. Each case is cropped to its labels plus 30 mm, painted with CT-like
values (a fat / soft-tissue background, contrast-enhanced kidney, heterogeneous tumor, cysts, partial
volume blur and noise; every case draws its own contrasts), given one tight box per tumor component
(26-connected, margin 0) and its kidney mask as the dense label, and turned into a stage-1 pseudo mask.
Reported per case and as means: tumor Dice of the boxes, of the boxes minus the kidney (boxfill) and
of the ConvCRF pseudo masks, and the ConvCRF seconds. ``--modality mri`` paints four MRI-like channels
instead and gives boxes only (the multi-channel lesion setting). ``--write-dataset FOLDER`` also writes the
painted cases as a boxunet raw dataset (images, the dense labels plus the tumor as reference, boxes), for
methods that learn across cases: ``boxunet_pseudo_labels -d ... --method template``.

    python benchmarks/kits23_pseudo_masks.py ../shared/data/kits23_labels [--cases 50] [--margin 0]
        [--modality ct|mri] [--dense kidney|kidney+cyst|none] [--tumor-hu 35 120] [--noise-hu 12]
        [--parameters '{"crf": {"pairwise_weight": 4}}'] [--spacing MM] [-o report.json] [--write-dataset FOLDER]
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from boxunet.boxes.pseudo_masks import PseudoMaskParameters, pseudo_masks
from boxunet.cli.pseudo_labels import parse_parameters
from boxunet.evaluation.metrics import dice
from boxunet.io.boxes import box_mask, boxes_from_label_map, write_boxes
from boxunet.io.images import Geometry, write_image

KIDNEY, TUMOR, CYST = 1, 2, 3


def _smooth_field(rng, shape, spacing, sigma_mm: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32),
                                    [sigma_mm / s for s in spacing])
    return field / max(float(field.std()), 1e-6)


def paint_ct(labels: np.ndarray, spacing, rng: np.random.Generator, tumor_hu=(35, 120), noise_hu: float = 12.0) -> np.ndarray:
    """CT-like HU values for a KiTS label map (z, y, x): every case draws its own contrasts (tumor mean
    uniform in ``tumor_hu``; soft tissue is about 45 HU, fat -95 HU, kidney 140-220 HU)."""
    tissue = _smooth_field(rng, labels.shape, spacing, 6.0) > rng.uniform(-0.6, 0.6)
    image = np.where(tissue, rng.normal(45, 8), rng.normal(-95, 10)).astype(np.float32)
    image += 8 * _smooth_field(rng, labels.shape, spacing, 3.0)
    kidney_hu = rng.uniform(140, 220)
    image[labels == KIDNEY] = kidney_hu + 15 * _smooth_field(rng, labels.shape, spacing, 4.0)[labels == KIDNEY]
    tumor = labels == TUMOR
    tumor_mean = rng.uniform(*tumor_hu)
    texture = rng.uniform(8, 25) * _smooth_field(rng, labels.shape, spacing, 3.0)
    image[tumor] = tumor_mean + texture[tumor]
    if rng.random() < 0.3:  # a necrotic (darker) core in large tumors
        core = ndimage.binary_erosion(tumor, iterations=3) & (_smooth_field(rng, labels.shape, spacing, 5.0) > 0.5)
        image[core] = rng.uniform(10, 30)
    image[labels == CYST] = rng.normal(10, 4)
    image = ndimage.gaussian_filter(image, [0.4, 0.7, 0.7])
    image += rng.normal(0, noise_hu, labels.shape).astype(np.float32)
    return image


def paint_mri(labels: np.ndarray, spacing, rng: np.random.Generator, channels: int = 4,
              noise: float = 0.3) -> np.ndarray:
    """MRI-like multi-channel intensities: three tissue classes with random per-channel values, the
    KiTS kidney and cyst as two more tissues, the tumor as a lesion whose contrast differs per channel
    (normal with sigma 1.2 tissue units: weak in some channels, strong in others), texture, blur, noise."""
    field_a, field_b = _smooth_field(rng, labels.shape, spacing, 8.0), _smooth_field(rng, labels.shape, spacing, 5.0)
    tissue = (field_a > 0).astype(np.int8) + (field_b > 0.7)
    tissue[labels == KIDNEY], tissue[labels == CYST] = 3, 4
    image = np.empty((channels,) + labels.shape, dtype=np.float32)
    lesion = labels == TUMOR
    for channel in range(channels):
        values = rng.normal(0, 1, 5).astype(np.float32)
        painted = values[tissue] + 0.3 * _smooth_field(rng, labels.shape, spacing, 3.0)
        contrast = rng.normal(0, 1.2)
        painted[lesion] = values[0] + contrast + 0.4 * _smooth_field(rng, labels.shape, spacing, 3.0)[lesion]
        image[channel] = ndimage.gaussian_filter(painted, [0.4, 0.7, 0.7]) + rng.normal(0, noise, labels.shape)
    return image


def read_case(path: Path, context_mm: float = 30.0, spacing_mm: float | None = None) -> tuple[np.ndarray, tuple]:
    """The label map (z, y, x order of the SimpleITK array) cropped to its labels plus ``context_mm``; with
    ``spacing_mm``, resampled (nearest neighbour) to that isotropic spacing."""
    image = sitk.ReadImage(str(path))
    labels = sitk.GetArrayFromImage(image).astype(np.uint8)
    spacing = tuple(reversed(image.GetSpacing()))
    found = np.argwhere(labels > 0)
    lower = [max(0, int(v) - int(np.ceil(context_mm / s))) for v, s in zip(found.min(0), spacing)]
    upper = [min(n, int(v) + 1 + int(np.ceil(context_mm / s))) for v, s, n in zip(found.max(0), spacing, labels.shape)]
    labels = labels[tuple(slice(lo, hi) for lo, hi in zip(lower, upper))]
    if spacing_mm is None:
        return labels, spacing
    return ndimage.zoom(labels, [s / spacing_mm for s in spacing], order=0), (spacing_mm,) * 3


def evaluate_case(path: Path, seed: int, margin: int, dense_values: list[int], parameters: PseudoMaskParameters,
                  arguments) -> dict:
    labels, spacing = read_case(path, spacing_mm=arguments.spacing)
    reference = labels == TUMOR
    rng = np.random.default_rng(seed)
    if arguments.modality == "mri":
        image = paint_mri(labels, spacing, rng)
    else:
        image = paint_ct(labels, spacing, rng, arguments.tumor_hu, arguments.noise_hu)[None]
    boxes = boxes_from_label_map(labels, TUMOR, margin=margin)
    dense = np.where(np.isin(labels, dense_values), labels, 0)
    boxfill = pseudo_masks(image, spacing, boxes, [TUMOR], dense, method="boxfill") == TUMOR
    start = time.perf_counter()
    crf = pseudo_masks(image, spacing, boxes, [TUMOR], dense, parameters=parameters) == TUMOR
    seconds = time.perf_counter() - start
    if arguments.write_dataset:
        _write_case(arguments.write_dataset, path.name.split(".")[0], image, spacing,
                    np.where(np.isin(labels, dense_values + [TUMOR]), labels, 0), boxes)
    return {"case": path.name, "shape": list(labels.shape), "spacing": [round(s, 3) for s in spacing],
            "boxes": len(boxes), "dice_boxes": dice(box_mask(labels.shape, boxes), reference),
            "dice_boxfill": dice(boxfill, reference), "dice_convcrf": dice(crf, reference),
            "convcrf_seconds": round(seconds, 2)}


def _write_case(folder: Path, case: str, image: np.ndarray, spacing, labels: np.ndarray, boxes) -> None:
    geometry = Geometry(tuple(float(s) for s in spacing), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), labels.shape)
    for channel, values in enumerate(image):
        write_image(values.astype(np.float32), geometry, folder / "imagesTr" / f"{case}_{channel:04d}.nii.gz")
    write_image(labels.astype(np.uint8), geometry, folder / "labelsTr" / f"{case}.nii.gz")
    write_boxes(boxes, folder / "boxesTr" / f"{case}.json")


def _write_description(folder: Path, channels: int, dense_values: list[int], cases: int) -> None:
    names = {KIDNEY: "kidney", TUMOR: "tumor", CYST: "cyst"}
    labels = {"background": 0, **{names[value]: value for value in sorted(dense_values + [TUMOR])}}
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {str(c): ("CT" if channels == 1 else f"MRI{c}") for c in range(channels)}, "labels": labels,
        "numTraining": cases, "file_ending": ".nii.gz", "box_labels": [TUMOR]}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labels", type=Path)
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--margin", type=int, default=0)
    parser.add_argument("--modality", choices=("ct", "mri"), default="ct",
                        help="ct: one painted CT channel; mri: four MRI-like channels, boxes only (no dense labels)")
    parser.add_argument("--dense", choices=("kidney", "kidney+cyst", "none"), default="kidney",
                        help="dense labels given beside the boxes (ignored with --modality mri: none)")
    parser.add_argument("--parameters", default="{}", help="JSON overriding PseudoMaskParameters fields")
    parser.add_argument("--tumor-hu", type=float, nargs=2, default=(35.0, 120.0),
                        help="range of the tumor's mean HU (soft tissue ~45, kidney 140-220; default: %(default)s)")
    parser.add_argument("--noise-hu", type=float, default=12.0, help="image noise sigma (default: %(default)s)")
    parser.add_argument("--spacing", type=float, help="resample every case to this isotropic spacing in mm first")
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--write-dataset", type=Path, help="also write the painted cases as a raw dataset here")
    arguments = parser.parse_args()
    parameters = parse_parameters(arguments.parameters)
    dense = "none" if arguments.modality == "mri" else arguments.dense
    dense_values = {"kidney": [KIDNEY], "kidney+cyst": [KIDNEY, CYST], "none": []}[dense]
    rows = []
    for index, path in enumerate(sorted(arguments.labels.glob("*.nii.gz"))[:arguments.cases]):
        row = evaluate_case(path, 1000 + index, arguments.margin, dense_values, parameters, arguments)
        rows.append(row)
        print(f"{row['case']}: boxes {row['dice_boxes']:.3f}  box-minus-dense {row['dice_boxfill']:.3f}  "
              f"convcrf {row['dice_convcrf']:.3f}  ({row['convcrf_seconds']} s)", flush=True)
    if arguments.write_dataset:
        _write_description(arguments.write_dataset, 4 if arguments.modality == "mri" else 1, dense_values, len(rows))
    keys = ("dice_boxes", "dice_boxfill", "dice_convcrf", "convcrf_seconds")
    means = {key: round(float(np.nanmean([row[key] for row in rows])), 4) for key in keys}
    print("mean:", json.dumps(means))
    if arguments.output:
        arguments.output.write_text(json.dumps({"parameters": parameters.to_json(), "margin": arguments.margin,
                                                "modality": arguments.modality, "dense": dense, "mean": means,
                                                "cases": rows}, indent=2))


if __name__ == "__main__":
    main()
