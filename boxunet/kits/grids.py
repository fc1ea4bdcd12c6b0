"""The grids the KiTS pipelines' networks train on, derived from a configuration's preprocessed cases.

``labels`` below is ``kits_label_values``'s mapping (kidney_and_tumor / kidney / tumor label values).

* ``coarse``: the whole case downsampled by ``COARSE_FACTOR`` along every axis (localization, coarse model);
  its label map holds one label, the kidney value, for every kidney label (the coarse networks segment
  their union), so that downsampling leaves no seam between kidney and tumor;
* ``roi``: cropped to the box of every kidney label, expanded by ``ROI_MARGIN_MM`` a side ([Zhang 2019]'s K_T, K);
* ``tumor``: cropped to the tumor's box expanded by ``TUMOR_MARGIN_MM`` ([Zhang 2019]'s T); a case without tumor
  gets its ``roi`` crop, so the tumor network also sees tumor-free kidneys;
* ``sagittal``: a window of ``SAGITTAL_WINDOW_MM`` (z, y) around the kidneys' centroid, over every x (seed
  004's correction model);
* ``kidney``: one derived case per kidney (``<case>_k0``, ``<case>_k1``, ...): a window of
  ``KIDNEY_WINDOW_MM`` in-plane around the kidney's centroid, over its slices plus ``KIDNEY_Z_MARGIN_MM``
  ([KiTS19 coarse-to-fine]'s fine model);
* ``kidney_frame``: cropped to the box of every kidney label with a frame of ``KIDNEY_FRAME_MM`` ([KiTS19 coarse-to-fine]'s
  tumor models).

A case with no kidney label keeps the whole image on the cropped grids. Derived cases are stored like
preprocessed cases (boxunet.preprocessing.storage) in ``boxunet_preprocessed/DatasetXXX/<data
identifier>_kits_<grid>/`` with the crop (``kits_crop``) or the source shape (``kits_source_shape``) in
their properties, and derived again when their source, the labels or the grid's constants changed;
``derived_cases.json`` lists each case's derived cases. One process derives a folder at a time (a lock
file), so folds trained side by side share the work.
"""
import contextlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from boxunet.cropping import mask_bbox
from boxunet.errors import BoxunetError
from boxunet.io.atomic import read_json, write_json
from boxunet.io.stamps import json_digest
from boxunet.kits.kidney_count import kidney_components
from boxunet.kits.localization import ROI_MARGIN_MM, expand_box
from boxunet.planning.patch_size import plan_patch_and_batch
from boxunet.planning.planner import configuration_plan
from boxunet.planning.plans import ConfigurationPlan, Plans
from boxunet.preprocessing.case import class_locations
from boxunet.preprocessing.resampling import resample_channels, resample_segmentation
from boxunet.preprocessing.storage import finished_case_signature, save_case
from boxunet.training.data.dataset import PreprocessedCases

COARSE_FACTOR = 4
# [Zhang 2019] expands tumor boxes by 8 x 16 x 16 voxels at 3 x 0.78 x 0.78 mm, i.e. about 12 / 6 / 6 mm a side
TUMOR_MARGIN_MM = (12.0, 6.0, 6.0)
# [KiTS19 coarse-to-fine] at 3 x 0.78 x 0.78 mm: sagittal crops of 64 x 256 voxels, kidney crops of 160 x 160, a frame of 30
SAGITTAL_WINDOW_MM = (192.0, 200.0)
KIDNEY_WINDOW_MM = 125.0
KIDNEY_Z_MARGIN_MM = 15.0
KIDNEY_FRAME_MM = (23.4, 23.4, 23.4)
DERIVED_INDEX = "derived_cases.json"  # case id -> its derived case ids
GRID_CONSTANTS = {"coarse": COARSE_FACTOR, "roi": ROI_MARGIN_MM, "tumor": (TUMOR_MARGIN_MM, ROI_MARGIN_MM),
                  "sagittal": SAGITTAL_WINDOW_MM, "kidney": (KIDNEY_WINDOW_MM, KIDNEY_Z_MARGIN_MM),
                  "kidney_frame": KIDNEY_FRAME_MM}


def coarse_shape(shape) -> list[int]:
    """The shape of the coarse grid of a case of ``shape``."""
    return [max(1, int(round(s / COARSE_FACTOR))) for s in shape]


def resampled_spacing(spacing, shape, new_shape) -> list[float]:
    """The spacing of an image of ``shape`` at ``spacing`` resampled to ``new_shape`` (same extent)."""
    return [float(s) * old / new for s, old, new in zip(spacing, shape, new_shape)]


def expanded_box(mask: np.ndarray, spacing, margin_mm) -> list[list[int]]:
    """Bounding box of a non-empty mask expanded by ``margin_mm`` per side (ceil to voxels), clipped."""
    return expand_box(mask_bbox(mask), spacing, margin_mm, mask.shape)


def centred_window(centre: float, size_mm: float, spacing: float, length: int) -> list[int]:
    """``[lo, hi]`` of a window of ``size_mm`` centred on ``centre`` (voxels), shifted inside ``[0, length]``."""
    size = min(length, int(np.ceil(size_mm / spacing)))
    lo = min(max(0, int(round(centre - size / 2))), length - size)
    return [lo, lo + size]


def sagittal_window(mask: np.ndarray, spacing) -> list[list[int]]:
    """The sagittal grid's crop around the centroid (z, y) of a mask (the image centre when it is empty)."""
    centre = np.argwhere(mask).mean(axis=0) if mask.any() else np.array(mask.shape) / 2
    return [centred_window(centre[axis], SAGITTAL_WINDOW_MM[axis], spacing[axis], mask.shape[axis])
            for axis in (0, 1)] + [[0, mask.shape[2]]]


def kidney_window(kidney: np.ndarray, spacing) -> list[list[int]]:
    """The kidney grid's crop of one kidney mask: its slices plus a margin, an in-plane window on its centroid."""
    (z_lo, z_hi), _, _ = expanded_box(kidney, spacing, (KIDNEY_Z_MARGIN_MM, 0, 0))
    centre = np.argwhere(kidney).mean(axis=0)
    return [[z_lo, z_hi]] + [centred_window(centre[axis], KIDNEY_WINDOW_MM, spacing[axis], kidney.shape[axis])
                             for axis in (1, 2)]


def crop_boxes(seg: np.ndarray, spacing, grid: str, labels: dict[str, list[int]]) -> list[list[list[int]]]:
    """The crops of a cropped grid for a label map ``(z, y, x)``: one box, or one per kidney on ``kidney``."""
    kidney = np.isin(seg, labels["kidney_and_tumor"])
    if not kidney.any():
        return [[[0, s] for s in seg.shape]]
    tumor = np.isin(seg, labels["tumor"])
    if grid == "tumor" and tumor.any():
        return [expanded_box(tumor, spacing, TUMOR_MARGIN_MM)]
    if grid in ("roi", "tumor"):
        return [expanded_box(kidney, spacing, ROI_MARGIN_MM)]
    if grid == "kidney_frame":
        return [expanded_box(kidney, spacing, KIDNEY_FRAME_MM)]
    if grid == "sagittal":
        return [sagittal_window(kidney, spacing)]
    if grid == "kidney":
        return [kidney_window(component, spacing) for component in kidney_components(kidney, spacing)]
    raise ValueError(f"unknown grid {grid!r}")


def derive_case(data: np.ndarray, seg: np.ndarray, properties: dict, grid: str,
                labels: dict[str, list[int]]) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    """One preprocessed case (data ``(c, z, y, x)``, seg ``(1, z, y, x)``) on ``grid``: a list of
    ``(data, seg, properties)`` (one entry, or one per kidney on the kidney grid)."""
    spacing = properties["spacing"]
    if grid == "coarse":
        shape = coarse_shape(data.shape[1:])
        union = np.where(np.isin(seg[0], labels["kidney_and_tumor"]), labels["kidney"][0], np.minimum(seg[0], 0))
        derived = [(resample_channels(data, shape, order=1), resample_segmentation(union, shape, order=1)[None],
                    {"spacing": resampled_spacing(spacing, data.shape[1:], shape),
                     "kits_source_shape": list(data.shape[1:])})]
    else:
        derived = []
        for box in crop_boxes(seg[0], spacing, grid, labels):
            region = (slice(None), *(slice(lo, hi) for lo, hi in box))
            derived.append((data[region], seg[region], {"spacing": list(spacing), "kits_crop": box}))
    results = []
    for new_data, new_seg, new_properties in derived:
        present = [int(v) for v in np.unique(new_seg) if v > 0]
        new_properties = dict(properties, **new_properties, shape_after_resampling=list(new_seg.shape[1:]),
                              class_locations=class_locations(new_seg[0], present))
        results.append((np.ascontiguousarray(new_data, dtype=np.float32), np.ascontiguousarray(new_seg),
                        new_properties))
    return results


def grid_folder(preprocessed_dataset: Path, configuration: ConfigurationPlan, grid: str) -> Path:
    return Path(preprocessed_dataset) / f"{configuration.data_identifier}_kits_{grid}"


def _derived_ids(case_id: str, grid: str, count: int) -> list[str]:
    return [f"{case_id}_k{i}" for i in range(count)] if grid == "kidney" else [case_id]


@contextlib.contextmanager
def _folder_lock(folder: Path):
    """Hold an exclusive lock on ``folder`` (POSIX; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(Path(folder) / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def derive_grid(preprocessed_dataset: Path, configuration: ConfigurationPlan, grid: str, case_ids: list[str],
                labels: dict[str, list[int]]) -> None:
    """Store ``grid``'s version of every case, skipping those already derived from the same source, labels and
    grid constants."""
    source = PreprocessedCases(Path(preprocessed_dataset) / configuration.data_identifier, case_ids)
    folder = grid_folder(preprocessed_dataset, configuration, grid)
    folder.mkdir(parents=True, exist_ok=True)
    with _folder_lock(folder):
        index_file = folder / DERIVED_INDEX
        index = read_json(index_file) if index_file.is_file() else {}
        for case_id in case_ids:
            data, seg, properties = source.load(case_id)
            signature = (f"{properties['preprocessing_signature']}:{json_digest(properties.get('input_stamps'))}:"
                         f"{grid}:{GRID_CONSTANTS[grid]}:{sorted(labels.items())}")
            known = index.get(case_id, [])
            if known and all(finished_case_signature(folder, d) == signature for d in known):
                continue
            cases = derive_case(np.asarray(data[:]), np.asarray(seg[:]), properties, grid, labels)
            derived_ids = _derived_ids(case_id, grid, len(cases))
            for stale in set(known) - set(derived_ids):  # e.g. a kidney fewer than before
                for path in (folder / f"{stale}.json", folder / f"{stale}.b2nd", folder / f"{stale}_seg.b2nd"):
                    path.unlink(missing_ok=True)
            for derived_id, (new_data, new_seg, new_properties) in zip(derived_ids, cases):
                save_case(folder, derived_id, new_data, new_seg,
                          dict(new_properties, case_id=derived_id, preprocessing_signature=signature),
                          configuration.patch_size)
            index[case_id] = derived_ids
            write_json(index, index_file)


def derived_case_ids(folder: Path, case_ids: list[str]) -> list[str]:
    """The derived cases of ``case_ids`` in the grid ``folder`` (one per case, or one per kidney)."""
    index = read_json(Path(folder) / DERIVED_INDEX) if (Path(folder) / DERIVED_INDEX).is_file() else {}
    missing = [c for c in case_ids if c not in index]
    if missing:
        raise BoxunetError(f"{folder}: case(s) {', '.join(missing[:5])} not derived yet; train the pipeline again")
    return [derived for case_id in case_ids for derived in index[case_id]]


def grid_configuration(plans: Plans, configuration: ConfigurationPlan, folder: Path, case_ids: list[str],
                       conv_dim: int = 3) -> ConfigurationPlan:
    """The configuration of a binary network on the derived cases ``case_ids`` of ``folder``: their median
    spacing and shape and the patch, batch and network the planner gives them, as wide in its first stage as
    ``configuration``'s network (2D networks on slices with ``conv_dim=2``)."""
    cases = PreprocessedCases(folder, case_ids)
    properties = [cases.load(case_id)[2] for case_id in case_ids]
    shapes = np.array([p["shape_after_resampling"] for p in properties], dtype=np.float64)
    spacing = np.median(np.array([p["spacing"] for p in properties], dtype=np.float64), axis=0)
    median_shape = np.median(shapes, axis=0)
    axes = slice(3 - conv_dim, 3)
    patch = plan_patch_and_batch(spacing[axes].tolist(), median_shape[axes].tolist(), 2, plans.gpu_memory_gb,
                                 float(np.prod(shapes, axis=1).sum()), configuration.architecture.features_per_stage[0])
    planned = configuration_plan(configuration.name, folder.name, spacing[axes], median_shape[axes], patch,
                                 batch_dice=False, resample_out_of_plane=conv_dim == 3)
    return replace(planned, resampling=configuration.resampling)
