"""Preprocess one case for one or more configurations: transpose, crop, normalize, resample.

The image is read and cropped once (as views of the raw array); each configuration then resamples it
slab by slab, normalizing every slab as it is read, so no full-size float copy of the input is made.
When the 2d and 3d_fullres configurations share the in-plane spacing, the 2d data is the in-plane pass
of the 3d_fullres resampling and costs nothing extra.
"""
import hashlib
import json
from dataclasses import asdict
from typing import Callable, Iterator

import numpy as np

from boxunet.version import __version__
from boxunet.cropping import OUTSIDE_NONZERO, crop_to_nonzero
from boxunet.io.boxes import Box, box_mask
from boxunet.io.images import Geometry
from boxunet.planning.plans import ConfigurationPlan, Plans
from boxunet.preprocessing.box_mapping import box_to_preprocessed
from boxunet.preprocessing.normalization import channel_normalizer
from boxunet.preprocessing.resampling import resample_channels, resample_segmentation, separate_z_axis, shape_at_spacing

MAX_LOCATIONS_PER_CLASS = 10_000
MIN_LOCATION_FRACTION = 0.01
LOCATION_SEED = 1234


def preprocessing_signature(plans: Plans, configuration: ConfigurationPlan) -> str:
    """A hash of everything that changes a configuration's preprocessed data."""
    relevant = {
        "version": __version__, "transpose_forward": plans.transpose_forward,
        "normalization": [asdict(n) for n in plans.normalization], "labels": plans.labels,
        "box_labels": plans.box_labels, "spacing": configuration.spacing,
        "resampling": asdict(configuration.resampling), "resample_out_of_plane": configuration.resample_out_of_plane,
    }
    return hashlib.sha1(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def target_spacing_3d(configuration: ConfigurationPlan, spacing: list[float]) -> list[float]:
    """The 3D spacing a case of (transposed) ``spacing`` is resampled to; 2d keeps the out-of-plane spacing."""
    if configuration.resample_out_of_plane:
        return list(configuration.spacing)
    return [spacing[0]] + list(configuration.spacing[-2:])


def class_locations(seg: np.ndarray, labels: list[int], seed: int = LOCATION_SEED,
                    extra_masks: dict[int, Callable[[], np.ndarray]] | None = None) -> dict[str, list[list[int]]]:
    """Up to 10,000 sampled voxel positions (z, y, x) per label, for foreground-oversampled patches.

    ``extra_masks`` adds positions for labels known only by a mask (the inside of boxes), given as
    functions that build the mask, so that only one mask exists at a time.
    """
    rng = np.random.default_rng(seed)
    mask_makers = {label: (lambda label=label: seg == label) for label in labels}
    mask_makers.update(extra_masks or {})
    locations = {}
    for label, make_mask in sorted(mask_makers.items()):
        index = np.flatnonzero(make_mask())
        if index.size:
            count = min(index.size, max(MAX_LOCATIONS_PER_CLASS, int(np.ceil(index.size * MIN_LOCATION_FRACTION))))
            index = np.sort(rng.choice(index, count, replace=False))
        locations[str(label)] = np.stack(np.unravel_index(index, seg.shape), axis=1).tolist()
    return locations


def _normalized_reader(channel: np.ndarray, normalizer, inside: np.ndarray | None):
    def read(region):
        return normalizer(channel[region].astype(np.float32), None if inside is None else inside[region])
    return read


def preprocess_case(data: np.ndarray, geometry: Geometry, plans: Plans, configurations: list[ConfigurationPlan],
                    seg: np.ndarray | None = None, boxes: list[Box] | None = None,
                    case_id: str = "") -> Iterator[tuple[ConfigurationPlan, np.ndarray, np.ndarray, dict]]:
    """Yield ``(configuration, data, seg, properties)`` per configuration for one case (3D ones first).

    ``data`` is (c, z, y, x) in raw array order and any numeric dtype, ``seg`` (1, z, y, x) or None. Box labels are removed from ``seg`` (they are known only by their boxes);
    boxes are mapped to each preprocessed grid.
    """
    forward = plans.transpose_forward
    has_labels = seg is not None or bool(boxes)
    data = data.transpose([0] + [a + 1 for a in forward])
    spacing = [geometry.spacing[a] for a in forward]
    if seg is not None:
        seg = seg.transpose([0] + [a + 1 for a in forward]).astype(np.int8, copy=True)
        for value in plans.box_labels:
            seg[seg == value] = 0
    data, seg, bbox = crop_to_nonzero(data, seg)
    seg = np.ascontiguousarray(seg)
    inside = seg[0] != OUTSIDE_NONZERO if any(n.use_nonzero_mask for n in plans.normalization) else None
    readers = [_normalized_reader(channel, channel_normalizer(channel, plan, inside), inside)
               for channel, plan in zip(data, plans.normalization)]
    shape_after_crop = list(data.shape[1:])
    base_properties = {
        "case_id": case_id, "geometry": geometry.to_json(), "transpose_forward": forward,
        "shape_before_cropping": [geometry.shape[a] for a in forward], "bbox_used_for_cropping": bbox,
        "shape_after_cropping_and_before_resampling": shape_after_crop, "spacing_after_transpose": spacing,
    }
    dense_labels = plans.label_set.dense_values if has_labels else []
    shapes = {c.name: shape_at_spacing(shape_after_crop, spacing, target_spacing_3d(c, spacing)) for c in configurations}
    plane_only_shapes = {tuple(shapes[c.name]) for c in configurations if not c.resample_out_of_plane}
    plane_results: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    for configuration in sorted(configurations, key=lambda c: not c.resample_out_of_plane):
        new_shape, resampling = shapes[configuration.name], configuration.resampling
        if tuple(new_shape) in plane_results and not configuration.resample_out_of_plane:
            new_data, new_seg = plane_results.pop(tuple(new_shape))
        else:
            axis = separate_z_axis(spacing, target_spacing_3d(configuration, spacing), resampling.anisotropy_threshold)
            plane_shape = tuple([shape_after_crop[0]] + new_shape[1:])
            keep_plane = configuration.resample_out_of_plane and axis in (None, 0) and plane_shape in plane_only_shapes
            new_data = resample_channels(data, new_shape, resampling.data_order, axis, resampling.order_z, keep_plane,
                                         readers)
            new_seg = resample_segmentation(seg[0], new_shape, resampling.seg_order, axis, resampling.order_z,
                                            keep_plane)
            if keep_plane:
                (new_data, plane_data), (new_seg, plane_seg) = new_data, new_seg
                plane_results[plane_shape] = (plane_data, plane_seg)
        properties = dict(base_properties, spacing=target_spacing_3d(configuration, spacing),
                          shape_after_resampling=list(new_data.shape[1:]),
                          preprocessing_signature=preprocessing_signature(plans, configuration))
        mapped = [box_to_preprocessed(b, forward, bbox, shape_after_crop, new_shape) for b in boxes or []]
        properties["boxes"] = [b.to_json() for b in mapped if b is not None]
        if has_labels:
            kept = [b for b in mapped if b is not None]
            box_masks = {label: (lambda label=label: box_mask(tuple(new_shape), kept, label))
                         for label in plans.box_labels}
            properties["class_locations"] = class_locations(new_seg, dense_labels, extra_masks=box_masks)
        yield configuration, new_data, new_seg[None], properties
        del new_data, new_seg  # free this configuration's arrays before resampling the next one
