"""Turn predicted logits (in preprocessed space) into files in the geometry of the raw image.

The inverse of ``preprocess_case``: resample to the cropped shape (``probabilities_order``, with the
separate-z rule of the configuration), put the crop back into the full (transposed) image, transpose
back. Voxels outside the crop get a confident background: probability 1 for class 0 and 0 for every
other class (and every region), or, as logits, 0 for class 0 and ``BACKGROUND_LOGIT`` for the others,
which softmax and sigmoid turn into exactly those probabilities.

Export works one class at a time: besides the preprocessed logits it holds two float32 volumes of the
cropped size (the running maximum and the class being resampled), uint8 label maps and the resampler's
slab buffers; saving probabilities adds the float16 (K, *raw shape) array, a float32 softmax
denominator and a float16 copy of the maximum.
"""
from pathlib import Path

import numpy as np
import torch

from boxunet.io.images import Geometry, write_image
from boxunet.io.probabilities import write_probabilities
from boxunet.planning.plans import ConfigurationPlan, Plans
from boxunet.postprocessing.apply import apply_postprocessing
from boxunet.preprocessing.resampling import resample_volume, separate_z_axis

BACKGROUND_LOGIT = -1e4  # exp and sigmoid give exactly 0 in float32; representable in float16


def background_fill(plans: Plans, num_channels: int, logits: bool = False) -> list[float]:
    """Per-channel value of a confident background voxel, as probabilities or as logits."""
    foreground = BACKGROUND_LOGIT if logits else 0.0
    if plans.label_set.region_based:
        return [foreground] * num_channels
    return [0.0 if logits else 1.0] + [foreground] * (num_channels - 1)


def _label_dtype(plans: Plans):
    return np.uint8 if max(plans.label_set.values) < 256 else np.uint16


def _as_numpy(array) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def _scores_to_segmentation(scores, plans: Plans, region_threshold: float) -> np.ndarray:
    """Argmax of (K, *spatial) scores, or in region mode each region whose score exceeds ``region_threshold``
    painted with its label, in ``regions_class_order`` (later regions overwrite)."""
    scores = _as_numpy(scores)
    if not plans.label_set.region_based:
        return np.argmax(scores, axis=0).astype(_label_dtype(plans))
    segmentation = np.zeros(scores.shape[1:], dtype=_label_dtype(plans))
    for channel, label in zip(scores, plans.regions_class_order):
        segmentation[channel > region_threshold] = label
    return segmentation


def logits_to_segmentation(logits, plans: Plans) -> np.ndarray:
    """Label map of (K, *spatial) logits: argmax of the softmax (which keeps the order of the logits), or in
    region mode each region whose sigmoid exceeds 0.5 (logit > 0) painted in ``regions_class_order``."""
    return _scores_to_segmentation(logits, plans, region_threshold=0.0)


def probabilities_to_segmentation(probabilities, plans: Plans) -> np.ndarray:
    """Label map of (K, *spatial) probabilities: argmax, or in region mode each region whose probability
    exceeds 0.5 painted in ``regions_class_order`` (later regions overwrite)."""
    return _scores_to_segmentation(probabilities, plans, region_threshold=0.5)


def _check_shape(array: np.ndarray, properties: dict) -> None:
    if list(array.shape[1:]) != list(properties["shape_after_resampling"]):
        raise ValueError(f"prediction of shape {list(array.shape[1:])} does not match the preprocessed shape "
                         f"{properties['shape_after_resampling']} of case {properties.get('case_id', '')!r}")


def _resample_channel(volume: np.ndarray, properties: dict, configuration: ConfigurationPlan,
                      order: int) -> np.ndarray:
    """One channel resampled back to the cropped shape before resampling (float32, transposed order)."""
    resampling = configuration.resampling
    axis = separate_z_axis(properties["spacing"], properties["spacing_after_transpose"],
                           resampling.anisotropy_threshold)
    return resample_volume(volume, properties["shape_after_cropping_and_before_resampling"], order, axis,
                           resampling.order_z)


def _raw_shape(properties: dict) -> tuple[int, ...]:
    return tuple(properties["geometry"]["shape"])


def _transposed(raw: np.ndarray, plans: Plans) -> np.ndarray:
    """A view of a (..., *raw shape) array in the transposed axis order that preprocessing uses."""
    leading = list(range(raw.ndim - 3))
    return raw.transpose(leading + [a + len(leading) for a in plans.transpose_forward])


def _crop(properties: dict) -> tuple[slice, ...]:
    return tuple(slice(lo, hi) for lo, hi in properties["bbox_used_for_cropping"])


def revert_preprocessing(array, properties: dict, plans: Plans, configuration: ConfigurationPlan,
                         order: int | None = None, logits: bool = False) -> np.ndarray:
    """(K, *shape_after_resampling) probabilities (or ``logits``) to (K, *raw shape) float32 in raw array
    order: resampled with ``order`` (default the configuration's probabilities order), uncropped with the
    background of ``background_fill`` and transposed back."""
    array = _as_numpy(array)
    _check_shape(array, properties)
    order = configuration.resampling.probabilities_order if order is None else order
    raw = np.empty((len(array),) + _raw_shape(properties), dtype=np.float32)
    transposed, crop = _transposed(raw, plans), _crop(properties)
    for channel, volume, fill in zip(transposed, array, background_fill(plans, len(array), logits)):
        channel.fill(fill)
        channel[crop] = _resample_channel(volume, properties, configuration, order)
    return raw


def _segmentation_in_crop(logits: np.ndarray, properties: dict, plans: Plans, configuration: ConfigurationPlan,
                          order: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The cropped label map, class by class; in softmax mode also the per-voxel maximum logit."""
    segmentation = np.zeros(properties["shape_after_cropping_and_before_resampling"], dtype=_label_dtype(plans))
    if plans.label_set.region_based:
        for volume, label in zip(logits, plans.regions_class_order):
            segmentation[_resample_channel(volume, properties, configuration, order) > 0] = label
        return segmentation, None
    best = None
    for index, volume in enumerate(logits):
        resampled = _resample_channel(volume, properties, configuration, order)
        if best is None:
            best = resampled
            continue
        segmentation[resampled > best] = index  # strict: ties keep the lower class, like argmax
        np.maximum(best, resampled, out=best)
    return segmentation, best


def _probabilities(logits: np.ndarray, shift: np.ndarray | None, properties: dict, plans: Plans,
                   configuration: ConfigurationPlan, order: int) -> np.ndarray:
    """(K, *raw shape) float16 softmax (or, without ``shift``, sigmoid) of the resampled logits, in raw
    array order. ``shift`` is a per-voxel value subtracted before the softmax's exponential."""
    raw = np.empty((len(logits),) + _raw_shape(properties), dtype=np.float16)
    transposed, crop = _transposed(raw, plans), _crop(properties)
    for channel, fill in zip(transposed, background_fill(plans, len(logits))):
        channel.fill(fill)
    if shift is None:
        for channel, volume in zip(transposed, logits):
            resampled = _resample_channel(volume, properties, configuration, order)
            channel[crop] = 0.5 * (1 + np.tanh(0.5 * resampled))  # sigmoid without overflow
        return raw
    total = np.zeros(shift.shape, dtype=np.float32)
    for channel, volume in zip(transposed, logits):
        resampled = _resample_channel(volume, properties, configuration, order)
        resampled -= shift
        np.exp(resampled, out=resampled)
        total += resampled
        channel[crop] = resampled
    for channel in transposed:
        np.divide(channel[crop], total, out=channel[crop])
    return raw


def _case_stem(output_file: Path) -> str:
    name = output_file.name
    return name[:-len(".nii.gz")] if name.endswith(".nii.gz") else output_file.stem


def prediction_at_raw_geometry(logits, properties: dict, plans: Plans, configuration: ConfigurationPlan,
                               with_probabilities: bool = False,
                               postprocessing: dict | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The label map (uint8 or uint16, raw shape and array order) of (K, *shape_after_resampling) ``logits``, and
    with ``with_probabilities`` the float16 (K, *raw shape) probabilities (else None). ``postprocessing`` (a
    decision of boxunet.postprocessing) is applied to the label map only."""
    logits = _as_numpy(logits)
    _check_shape(logits, properties)
    order = configuration.resampling.probabilities_order
    cropped, best = _segmentation_in_crop(logits, properties, plans, configuration, order)
    # Any per-voxel shift leaves the softmax unchanged; the maximum logit in float16 is close enough to
    # prevent overflow and takes half the memory of the float32 one.
    shift = np.clip(best, -6e4, 6e4).astype(np.float16) if with_probabilities and best is not None else None
    del best
    segmentation = np.zeros(_raw_shape(properties), dtype=cropped.dtype)
    _transposed(segmentation, plans)[_crop(properties)] = cropped
    del cropped
    probabilities = None
    if with_probabilities:
        probabilities = _probabilities(logits, shift, properties, plans, configuration, order)
        del shift
    if postprocessing:
        segmentation = apply_postprocessing(segmentation, postprocessing)
    return segmentation, probabilities


def export_prediction(logits, properties: dict, plans: Plans, configuration: ConfigurationPlan, output_file: Path,
                      save_probabilities: bool = False, postprocessing: dict | None = None) -> Path:
    """Write the label map of (K, *shape_after_resampling) logits to ``output_file`` (uint8, the raw
    image's geometry; ``prediction_at_raw_geometry``) and return its path.

    With ``save_probabilities`` also ``<case>.npz`` (key ``probabilities``: float16, (K, *raw shape) in raw
    array order) and ``<case>.json`` (the properties) are written next to it, where ``<case>`` is the file
    name without its ending (``.nii.gz`` or the last suffix). Every file is written atomically.
    """
    output_file = Path(output_file)
    segmentation, probabilities = prediction_at_raw_geometry(logits, properties, plans, configuration,
                                                             save_probabilities, postprocessing)
    if probabilities is not None:
        write_probabilities(probabilities, properties, output_file.parent / _case_stem(output_file))
        del probabilities
    write_image(segmentation, Geometry.from_json(properties["geometry"]), output_file)
    return output_file
