"""A cascade's previous stage as network input (3d_lowres -> 3d_cascade_fullres).

The previous stage's segmentation, at the raw image's geometry (an exported prediction), is brought onto
this configuration's grid like a label map (boxunet.preprocessing.grid_labels) and one-hot encoded with
one channel per foreground label value, appended after the image channels. Training (the lower stage's
cross-validation predictions) and prediction (``boxunet_predict`` runs or reads the lower stage) take the
same route from raw-geometry files, so the network sees the same kind of input in both.
"""
from pathlib import Path

import numpy as np

from boxunet.errors import BoxunetError
from boxunet.io.images import Geometry, read_image
from boxunet.planning.plans import ConfigurationPlan, Plans
from boxunet.preprocessing.grid_labels import raw_labels_to_grid


def previous_stage_labels(plans: Plans) -> list[int]:
    """The label values that get an input channel: every foreground label, in increasing order."""
    return plans.label_set.foreground_values


def network_input_channels(plans: Plans, configuration: ConfigurationPlan) -> int:
    """Image channels, plus one per foreground label when ``configuration`` has a previous stage."""
    extra = len(previous_stage_labels(plans)) if configuration.previous_stage else 0
    return plans.num_input_channels + extra


def one_hot(segmentation: np.ndarray, labels: list[int]) -> np.ndarray:
    """``(len(labels), *shape)`` float32 indicators of ``segmentation == label``."""
    return np.stack([segmentation == label for label in labels]).astype(np.float32)


def read_previous_stage(path: Path, properties: dict, plans: Plans, configuration: ConfigurationPlan) -> np.ndarray:
    """The previous stage's segmentation ``path`` (raw geometry of the case) on ``configuration``'s grid.

    Raises a BoxunetError naming the case and the file when it is missing, is not the case's geometry, or
    holds values that are not labels of the dataset.
    """
    if not Path(path).is_file():
        raise BoxunetError(f"case {properties.get('case_id')}: previous-stage ({configuration.previous_stage}) "
                           f"segmentation {path} does not exist")
    segmentation, geometry = read_image(path)
    return previous_stage_to_grid(segmentation, geometry, f"segmentation {path}", properties, plans, configuration)


def previous_stage_to_grid(segmentation: np.ndarray, geometry: Geometry, source: str, properties: dict, plans: Plans,
                           configuration: ConfigurationPlan) -> np.ndarray:
    """A previous stage's label map (``source`` names it in errors) at ``geometry``, the raw geometry of the case
    that ``properties`` describe, on ``configuration``'s grid; a BoxunetError when it is not the case's geometry
    or holds values that are not labels of the dataset."""
    case_id = properties.get("case_id")
    mismatch = Geometry.from_json(properties["geometry"]).mismatch(geometry)
    if mismatch:
        raise BoxunetError(f"case {case_id}: previous-stage {source} does not match the image: {mismatch}")
    unknown = sorted(set(np.unique(segmentation).tolist()) - set(plans.label_set.values))
    if unknown:
        raise BoxunetError(f"case {case_id}: previous-stage {source} holds values {unknown} that are not "
                           f"labels of the dataset ({plans.label_set.values})")
    return raw_labels_to_grid(segmentation, properties, plans, configuration)


def append_previous_stage(data: np.ndarray, segmentation: np.ndarray, plans: Plans) -> np.ndarray:
    """``data`` (C, *shape) with the one-hot channels of ``segmentation`` (same grid) appended."""
    if tuple(segmentation.shape) != tuple(data.shape[1:]):
        raise ValueError(f"previous-stage segmentation {segmentation.shape} is not on the data's grid {data.shape[1:]}")
    return np.concatenate([data, one_hot(segmentation, previous_stage_labels(plans))]).astype(np.float32, copy=False)
