"""Augmentation: nnU-Net's training transforms (its v2.4.2 list, batchgenerators v1) and validation transforms.

Batches enter as ``{"data": (b, c, *spatial), "seg": (b, s, *spatial)}`` numpy arrays and leave with
``data`` and ``target`` as float tensors (or numpy arrays with ``tensors=False``); ``target`` is a list
with one array per deep-supervision scale (full resolution first), or one array without deep supervision.

Extra per-voxel maps (a box trainer's ignore mask or weight map) travel as extra seg channels:
channel 0 is the label map, channels 1.. are carried along (see ``PatchSampler.seg_channels``). They
are rotated, scaled, mirrored and downsampled exactly like the labels, which means:

* they are resampled like labels (order 1 on each value's indicator, then the most likely value), so
  they should take few distinct values, e.g. a 0/1 mask or a handful of weight levels;
* beyond the image they become -1 and then, like the labels, 0: encode them so that 0 means
  "no information" (weight 0, not annotated).

At the end they leave ``target`` for their names (``NamedTargets``): ``batch["weights"]``, ``batch["ignore"]``.

A cascade's previous-stage labels travel as the last seg channel and leave it for ``data`` (one-hot)
after the spatial and intensity transforms (boxunet.training.data.previous_stage).
"""
import math

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.color_transforms import (BrightnessMultiplicativeTransform,
                                                         ContrastAugmentationTransform, GammaTransform)
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform
from batchgenerators.transforms.utility_transforms import NumpyToTensor, RemoveLabelTransform, RenameTransform

from boxunet.training.data.previous_stage import PreviousStageToData

ANISOTROPY_THRESHOLD = 3.0
SCALE_RANGE = (0.7, 1.4)
SAMPLED_PATCH_MIN_SCALE = 0.85
NO_ROTATION = (0.0, 0.0)


def _degrees(limit: float) -> tuple[float, float]:
    return -math.radians(limit), math.radians(limit)


def augmentation_parameters(patch_size) -> dict:
    """nnU-Net's choices for a patch size: ``rotation`` (three (low, high) ranges in radians, for the
    rotations about axes 0, 1 and 2; 2D uses the first), ``dummy_2d``, ``mirror_axes`` and the
    ``initial_patch_size`` to sample.

    3D: ±30° about every axis, unless the patch is anisotropic (max / patch[0] > 3): then "dummy 2D",
    in-plane ±180° only. 2D: ±180°, or ±15° when max / min > 1.5. Mirroring on every axis.
    """
    patch = tuple(int(p) for p in patch_size)
    if len(patch) == 2:
        dummy_2d = False
        rotation = (_degrees(15 if max(patch) / min(patch) > 1.5 else 180), NO_ROTATION, NO_ROTATION)
    else:
        dummy_2d = max(patch) / patch[0] > ANISOTROPY_THRESHOLD
        rotation = (_degrees(180), NO_ROTATION, NO_ROTATION) if dummy_2d else (_degrees(30),) * 3
    return {"rotation": rotation, "dummy_2d": dummy_2d, "mirror_axes": tuple(range(len(patch))),
            "initial_patch_size": initial_patch_size(patch, rotation, dummy_2d)}


def _rotated_extent(along: float, across: float, angle: float) -> float:
    """Largest extent, along its first side, of an ``along`` x ``across`` rectangle rotated by up to ``angle``."""
    best_angle = math.atan2(across, along)  # where along*cos + across*sin peaks
    turn = min(angle, best_angle)
    return along * math.cos(turn) + across * math.sin(turn)


def initial_patch_size(patch_size, rotation, dummy_2d: bool = False) -> tuple[int, ...]:
    """The patch to sample so that rotating and scaling the final ``patch_size`` stays inside it.

    Per rotation axis (one at a time, as nnU-Net does) the exact bounding box of the rotated patch is
    taken over the whole angle range, then enlarged by 1 / 0.85 for scaling (nnU-Net's rule). Rounded up
    so that the margin around the final patch is even, which makes the centre crop and the rotation
    centre coincide. In dummy-2D mode axis 0 is not enlarged.
    """
    patch = [int(p) for p in patch_size]
    if dummy_2d:
        return (patch[0],) + initial_patch_size(patch[1:], rotation[:1])
    planes = [(0, 1)] if len(patch) == 2 else [(1, 2), (0, 2), (0, 1)]
    extent = [float(p) for p in patch]
    for (low, high), plane in zip(rotation, planes):
        angle = min(math.pi / 2, max(abs(low), abs(high)))
        for i, j in (plane, plane[::-1]):
            extent[i] = max(extent[i], _rotated_extent(patch[i], patch[j], angle))
    sampled = [max(p, math.ceil(e / SAMPLED_PATCH_MIN_SCALE - 1e-6)) for p, e in zip(patch, extent)]
    return tuple(s + (s - p) % 2 for s, p in zip(sampled, patch))


class InPlaneSpatialTransform(AbstractTransform):
    """Applies a 2D spatial transform to 3D batches slice by slice (dummy 2D): axis 0 is folded into
    the channels, so every slice of a sample gets the same in-plane transformation."""

    def __init__(self, transform: AbstractTransform):
        self.transform = transform

    def __call__(self, **batch):
        folded = {}
        for key in ("data", "seg"):
            if batch.get(key) is not None:
                b, c, z = batch[key].shape[:3]
                folded[key] = (b, c, z)
                batch[key] = batch[key].reshape(b, c * z, *batch[key].shape[3:])
        batch = self.transform(**batch)
        for key, (b, c, z) in folded.items():
            batch[key] = batch[key].reshape(b, c, z, *batch[key].shape[2:])
        return batch


class MaskOutsideTransform(AbstractTransform):
    """Sets ``channels`` of the data to 0 where seg channel 0 is negative (outside the nonzero mask or
    the image), for channels normalized inside the nonzero mask only."""

    def __init__(self, channels):
        self.channels = list(channels)

    def __call__(self, **batch):
        outside = batch["seg"][:, 0] < 0
        for channel in self.channels:
            batch["data"][:, channel][outside] = 0
        return batch


class DownsampleForDeepSupervision(AbstractTransform):
    """Replaces ``batch[key]`` (b, s, *spatial) by a list with one nearest-neighbour copy per scale
    (a scale is one factor per spatial axis; the size becomes round(size * factor))."""

    def __init__(self, scales, key: str = "target"):
        self.scales = [list(scale) for scale in scales]
        self.key = key

    def __call__(self, **batch):
        array = batch[self.key]
        batch[self.key] = [self._resize(array, scale) for scale in self.scales]
        return batch

    @staticmethod
    def _resize(array: np.ndarray, scale: list[float]) -> np.ndarray:
        if all(factor == 1 for factor in scale):
            return array
        sizes = array.shape[2:]
        index = []
        for size, factor in zip(sizes, scale):
            new = max(1, int(np.round(size * factor)))
            index.append(np.minimum(((np.arange(new) + 0.5) * size / new).astype(int), size - 1))
        return array[(slice(None), slice(None)) + np.ix_(*index)]


class NamedTargets(AbstractTransform):
    """Moves the target channels after the label map into batch entries named by ``names`` (one array, or one
    per deep-supervision scale, like ``target``): ``"weights"`` as they are, ``"ignore"`` from its complement
    (1 = ignored, as float)."""

    def __init__(self, names):
        self.names = tuple(names)

    def __call__(self, **batch):
        scales = batch["target"] if isinstance(batch["target"], list) else [batch["target"]]
        for channel, name in enumerate(self.names, start=1):
            maps = [np.ascontiguousarray(t[:, channel:channel + 1]) for t in scales]
            if name == "ignore":
                maps = [(m < 0.5).astype(np.float32) for m in maps]
            batch[name] = maps if isinstance(batch["target"], list) else maps[0]
        labels = [np.ascontiguousarray(t[:, :1]) for t in scales]
        batch["target"] = labels if isinstance(batch["target"], list) else labels[0]
        return batch


def _final_transforms(deep_supervision_scales, tensors: bool, previous_stage: PreviousStageToData | None,
                      extra_targets: tuple[str, ...]) -> list[AbstractTransform]:
    transforms = [RemoveLabelTransform(-1, 0)] + ([previous_stage] if previous_stage else [])
    transforms.append(RenameTransform("seg", "target", True))
    if deep_supervision_scales is not None:
        transforms.append(DownsampleForDeepSupervision(deep_supervision_scales))
    if extra_targets:
        transforms.append(NamedTargets(extra_targets))
    return transforms + ([NumpyToTensor(["data", "target", *extra_targets], "float")] if tensors else [])


def training_transforms(patch_size, rotation, mirror_axes, deep_supervision_scales: list | None,
                        do_dummy_2d: bool, mask_channels=(), tensors: bool = True,
                        previous_stage_labels: list[int] | None = None,
                        extra_targets: tuple[str, ...] = ()) -> Compose:
    """nnU-Net's training augmentation for a final ``patch_size``; batches come in at the initial patch size.

    Spatial (rotation p 0.2, scaling (0.7, 1.4) p 0.2, centre crop), noise, blur, brightness, contrast,
    low resolution, gamma (inverted and not), mirroring on ``mirror_axes``, masking of ``mask_channels``
    outside the nonzero mask, -1 -> 0, the previous stage's labels (last seg channel, when
    ``previous_stage_labels`` is given) moved into data one-hot and perturbed, deep-supervision targets, the
    ``extra_targets`` named, float tensors (unless ``tensors`` is False). ``rotation`` is as returned by
    ``augmentation_parameters``.
    """
    spatial = SpatialTransform(
        list(patch_size[1:] if do_dummy_2d else patch_size), patch_center_dist_from_border=None,
        do_elastic_deform=False, alpha=(0, 0), sigma=(0, 0), do_rotation=True, angle_x=rotation[0],
        angle_y=rotation[1], angle_z=rotation[2], p_rot_per_axis=1, do_scale=True, scale=SCALE_RANGE,
        border_mode_data="constant", border_cval_data=0, order_data=3, border_mode_seg="constant",
        border_cval_seg=-1, order_seg=1, random_crop=False, p_el_per_sample=0, p_scale_per_sample=0.2,
        p_rot_per_sample=0.2, independent_scale_for_each_axis=False)
    transforms = [
        InPlaneSpatialTransform(spatial) if do_dummy_2d else spatial,
        GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_sample=0.1),
        GaussianBlurTransform((0.5, 1.0), different_sigma_per_channel=True, p_per_sample=0.2, p_per_channel=0.5),
        BrightnessMultiplicativeTransform(multiplier_range=(0.75, 1.25), p_per_sample=0.15),
        ContrastAugmentationTransform(contrast_range=(0.75, 1.25), p_per_sample=0.15),
        SimulateLowResolutionTransform(zoom_range=(0.5, 1), per_channel=True, p_per_channel=0.5,
                                       order_downsample=0, order_upsample=3, p_per_sample=0.25,
                                       ignore_axes=(0,) if do_dummy_2d else None),
        GammaTransform((0.7, 1.5), invert_image=True, per_channel=True, retain_stats=True, p_per_sample=0.1),
        GammaTransform((0.7, 1.5), invert_image=False, per_channel=True, retain_stats=True, p_per_sample=0.3),
    ]
    if mirror_axes:
        transforms.append(MirrorTransform(tuple(mirror_axes)))
    if mask_channels:
        transforms.append(MaskOutsideTransform(mask_channels))
    previous_stage = PreviousStageToData(previous_stage_labels, perturb=True) if previous_stage_labels else None
    return Compose(transforms + _final_transforms(deep_supervision_scales, tensors, previous_stage, extra_targets))


def validation_transforms(deep_supervision_scales: list | None, tensors: bool = True,
                          previous_stage_labels: list[int] | None = None,
                          extra_targets: tuple[str, ...] = ()) -> Compose:
    """No augmentation: -1 -> 0, the previous stage's labels into data (unperturbed), deep-supervision
    targets, the ``extra_targets`` named, float tensors (unless ``tensors`` is False)."""
    previous_stage = PreviousStageToData(previous_stage_labels, perturb=False) if previous_stage_labels else None
    return Compose(_final_transforms(deep_supervision_scales, tensors, previous_stage, extra_targets))
