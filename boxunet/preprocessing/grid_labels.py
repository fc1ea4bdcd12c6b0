"""Label maps on a configuration's preprocessed grid: training targets of the box trainers and the
previous-stage segmentations of a cascade.

A target store is a folder of ``<case>_target.b2nd`` arrays (1 or 2 channels, int8, chunked like the
training patches): channel 0 is a label map, an optional channel 1 a voxel weight map (0 = no
information, see boxunet.training.data.augmentation). Raw-grid label maps (stage-1 pseudo labels,
reference labels, a lower-resolution stage's predictions) are brought onto the grid exactly as
preprocessing brings labels: transposed, cropped to the case's crop box and resampled per label.
"""
from pathlib import Path

import blosc2
import numpy as np

from boxunet.io.atomic import read_json, write_json
from boxunet.io.images import read_image
from boxunet.io.stamps import file_stamp
from boxunet.planning.plans import ConfigurationPlan, Plans
from boxunet.preprocessing.resampling import resample_segmentation, separate_z_axis
from boxunet.preprocessing.storage import write_array

TARGET_SUFFIX = "_target.b2nd"
SOURCES_FILE = "sources.json"  # what each stored raw label map was made from (store_raw_label_maps)


def raw_labels_to_grid(labels: np.ndarray, properties: dict, plans: Plans, configuration: ConfigurationPlan,
                       order: int | None = None) -> np.ndarray:
    """A raw (z, y, x) label map on the preprocessed grid of one case (int8, shape_after_resampling), resampled
    like preprocessing resamples labels, or with interpolation ``order`` (0: nearest, e.g. for weight maps)."""
    transposed = labels.transpose(plans.transpose_forward)
    cropped = transposed[tuple(slice(lo, hi) for lo, hi in properties["bbox_used_for_cropping"])]
    resampling = configuration.resampling
    axis = separate_z_axis(properties["spacing_after_transpose"], properties["spacing"],
                           resampling.anisotropy_threshold)
    return resample_segmentation(np.ascontiguousarray(cropped), properties["shape_after_resampling"],
                                 resampling.seg_order if order is None else order, axis, resampling.order_z)


def target_path(folder: Path, case_id: str) -> Path:
    return Path(folder) / f"{case_id}{TARGET_SUFFIX}"


def write_target(folder: Path, case_id: str, labels: np.ndarray, weights: np.ndarray | None,
                 patch_size) -> None:
    """Store a (z, y, x) label map and optional weight map of one case (atomic)."""
    channels = [labels] if weights is None else [labels, weights]
    array = np.stack([np.asarray(c, dtype=np.int8) for c in channels])
    write_array(array, target_path(folder, case_id), list(patch_size))


def open_target(folder: Path, case_id: str):
    """The stored target of one case as a memory-mapped blosc2 array (channels, z, y, x)."""
    return blosc2.open(str(target_path(folder, case_id)), mmap_mode="r")


def has_target(folder: Path, case_id: str) -> bool:
    return target_path(folder, case_id).is_file()


def store_raw_label_maps(folder: Path, cases, label_files: dict[str, Path], plans: Plans,
                         configuration: ConfigurationPlan, to_grid=None) -> list[str]:
    """Bring raw label maps (``label_files[case_id]``) onto the grid of ``cases`` (a PreprocessedCases)
    and store them in ``folder``; return the cases stored now. A stored case is kept while its raw label map and
    preprocessed case are the ones it was made from (their stamps, recorded in ``sources.json``). ``to_grid(path,
    properties)`` replaces the default reading and mapping (e.g. one that checks the file first)."""
    index_file = Path(folder) / SOURCES_FILE
    sources = read_json(index_file) if index_file.is_file() else {}
    stored_now = []
    for case_id in cases.case_ids:
        made_from = [file_stamp(label_files[case_id]), file_stamp(cases.folder / f"{case_id}.json")]
        if target_path(folder, case_id).is_file() and sources.get(case_id) == made_from:
            continue
        _, _, properties = cases.load(case_id)
        if to_grid is None:
            grid = raw_labels_to_grid(read_image(label_files[case_id])[0], properties, plans, configuration)
        else:
            grid = to_grid(label_files[case_id], properties)
        write_target(folder, case_id, grid, None, configuration.patch_size)
        sources[case_id] = made_from
        stored_now.append(case_id)
    if stored_now:
        write_json(sources, index_file)
    return stored_now
