"""The grids seed 001's networks train on, derived from a configuration's preprocessed cases.

* ``coarse``: the whole case downsampled by ``COARSE_FACTOR`` along every axis (the localization network);
* ``roi``: the case cropped to the box of every kidney label (kidney, tumor, cyst), expanded by
  ``ROI_MARGIN_MM`` a side (the kidney-and-tumor and kidney networks);
* ``tumor``: the case cropped to the box of the tumor label expanded by ``TUMOR_MARGIN_MM`` a side (the tumor
  network); a case without tumor gets its ``roi`` crop, so the tumor network also sees tumor-free kidneys.

Derived cases are stored like preprocessed cases (boxunet.preprocessing.storage) in
``boxunet_preprocessed/DatasetXXX/<data identifier>_kits_<grid>/``, with the crop box (``kits_crop``) or the
source shape (``kits_source_shape``) in their properties; a case is derived again when its source changed.
"""
from dataclasses import replace
from pathlib import Path

import numpy as np

from boxunet.cropping import mask_bbox
from boxunet.kits.localization import ROI_MARGIN_MM
from boxunet.planning.planner import configuration_plan
from boxunet.planning.patch_size import plan_patch_and_batch
from boxunet.planning.plans import ConfigurationPlan, Plans
from boxunet.preprocessing.case import class_locations
from boxunet.preprocessing.resampling import resample_channels, resample_segmentation
from boxunet.preprocessing.storage import finished_case_signature, save_case
from boxunet.training.data.dataset import PreprocessedCases

GRIDS = ("coarse", "roi", "tumor")
COARSE_FACTOR = 4
# seed 001 expands tumor boxes by 8 x 16 x 16 voxels at 3 x 0.78 x 0.78 mm, i.e. about 12 / 6 / 6 mm a side
TUMOR_MARGIN_MM = (12.0, 6.0, 6.0)


def coarse_shape(shape) -> list[int]:
    """The shape of the coarse grid of a case of ``shape``."""
    return [max(1, int(round(s / COARSE_FACTOR))) for s in shape]


def expanded_box(mask: np.ndarray, spacing, margin_mm) -> list[list[int]]:
    """Bounding box of a non-empty mask expanded by ``margin_mm`` per side (ceil to voxels), clipped."""
    return [[max(0, lo - int(np.ceil(m / s))), min(size, hi + int(np.ceil(m / s)))]
            for (lo, hi), s, m, size in zip(mask_bbox(mask), spacing, margin_mm, mask.shape)]


def crop_box(seg: np.ndarray, spacing, grid: str, kidney_labels: list[int], tumor_label: int) -> list[list[int]]:
    """The crop of the ``roi`` or ``tumor`` grid for a label map ``(z, y, x)`` (the whole case if it has no kidney)."""
    tumor = seg == tumor_label
    if grid == "tumor" and tumor.any():
        return expanded_box(tumor, spacing, TUMOR_MARGIN_MM)
    kidney = np.isin(seg, kidney_labels)
    return expanded_box(kidney, spacing, ROI_MARGIN_MM) if kidney.any() else [[0, s] for s in seg.shape]


def derive_case(data: np.ndarray, seg: np.ndarray, properties: dict, grid: str, kidney_labels: list[int],
                tumor_label: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """One preprocessed case (data ``(c, z, y, x)``, seg ``(1, z, y, x)``) on ``grid``, with its properties."""
    spacing = properties["spacing"]
    if grid == "coarse":
        shape = coarse_shape(data.shape[1:])
        data = resample_channels(data, shape, order=1)
        seg = resample_segmentation(seg[0], shape, order=1)[None]
        derived = {"spacing": [s * old / new for s, old, new in zip(spacing, properties["shape_after_resampling"], shape)],
                   "kits_source_shape": list(properties["shape_after_resampling"])}
    else:
        box = crop_box(seg[0], spacing, grid, kidney_labels, tumor_label)
        region = (slice(None), *(slice(lo, hi) for lo, hi in box))
        data, seg = data[region], seg[region]
        derived = {"spacing": list(spacing), "kits_crop": box}
    labels = [int(v) for v in np.unique(seg) if v > 0]
    properties = dict(properties, **derived, shape_after_resampling=list(seg.shape[1:]),
                      class_locations=class_locations(seg[0], labels))
    return np.ascontiguousarray(data, dtype=np.float32), np.ascontiguousarray(seg), properties


def grid_folder(preprocessed_dataset: Path, configuration: ConfigurationPlan, grid: str) -> Path:
    return Path(preprocessed_dataset) / f"{configuration.data_identifier}_kits_{grid}"


def derive_grid(preprocessed_dataset: Path, configuration: ConfigurationPlan, grid: str, case_ids: list[str],
                kidney_labels: list[int], tumor_label: int) -> Path:
    """Store ``grid``'s version of every case (skipping those already derived from the same source); return the
    folder."""
    source = PreprocessedCases(Path(preprocessed_dataset) / configuration.data_identifier, case_ids)
    folder = grid_folder(preprocessed_dataset, configuration, grid)
    folder.mkdir(parents=True, exist_ok=True)
    for case_id in case_ids:
        data, seg, properties = source.load(case_id)
        signature = f"{properties['preprocessing_signature']}:{grid}:{kidney_labels}:{tumor_label}"
        if finished_case_signature(folder, case_id) == signature:
            continue
        data, seg, properties = derive_case(np.asarray(data[:]), np.asarray(seg[:]), properties, grid,
                                            kidney_labels, tumor_label)
        save_case(folder, case_id, data, seg, dict(properties, preprocessing_signature=signature),
                  configuration.patch_size)
    return folder


def grid_configuration(plans: Plans, configuration: ConfigurationPlan, grid: str, folder: Path,
                       case_ids: list[str]) -> ConfigurationPlan:
    """The configuration of a binary network on ``grid``: its spacing (the coarse grid's median), the median
    shape of the derived cases and the patch, batch and network the planner gives them."""
    cases = PreprocessedCases(folder, case_ids)
    properties = [cases.load(case_id)[2] for case_id in case_ids]
    shapes = np.array([p["shape_after_resampling"] for p in properties], dtype=np.float64)
    spacing = np.median(np.array([p["spacing"] for p in properties], dtype=np.float64), axis=0)
    median_shape = np.median(shapes, axis=0)
    patch = plan_patch_and_batch(spacing.tolist(), median_shape.tolist(), 2, plans.gpu_memory_gb,
                                 float(np.prod(shapes, axis=1).sum()))
    planned = configuration_plan(configuration.name, folder.name, spacing, median_shape, patch, batch_dice=False)
    return replace(planned, resampling=configuration.resampling)
