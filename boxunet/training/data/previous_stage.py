"""The cascade's previous-stage segmentation in a batch: carried as the last seg channel through the spatial
augmentation, then moved into ``data`` as one-hot channels, perturbed during training so that the
network learns to correct the lower stage rather than copy it (nnU-Net's cascade augmentation):

* with probability 0.4 per sample, each label channel (in random order) is dilated, eroded, opened or
  closed with a ball of radius 1-8 voxels; a voxel switched on in one channel is switched off in the others;
* with probability 0.2 per sample, each label channel loses one random connected component that covers
  at most 15 % of the patch.

Randomness comes from numpy's global state, which the augmentation workers seed.
"""
import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform
from scipy import ndimage

from boxunet.preprocessing.previous_stage import one_hot

MORPHOLOGY_PROBABILITY = 0.4
BALL_RADIUS_RANGE = (1, 8)
COMPONENT_REMOVAL_PROBABILITY = 0.2
MAX_REMOVED_COMPONENT_FRACTION = 0.15


def dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary dilation with a Euclidean ball of ``radius`` voxels (via a distance transform)."""
    if mask.all() or not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(~mask) <= radius


def erode(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary erosion with a Euclidean ball of ``radius`` voxels; outside the patch counts as background."""
    if not mask.any():
        return mask.copy()
    padded = np.pad(mask, 1)
    return (ndimage.distance_transform_edt(padded) > radius)[tuple(slice(1, -1) for _ in mask.shape)]


MORPHOLOGY = {
    "dilation": dilate,
    "erosion": erode,
    "opening": lambda mask, radius: dilate(erode(mask, radius), radius),
    "closing": lambda mask, radius: erode(dilate(mask, radius), radius),
}


def perturb_morphology(channels: np.ndarray) -> None:
    """One random operation with a random ball per label channel of one sample ``(L, *spatial)``, in place."""
    for channel in np.random.permutation(len(channels)):
        operation = MORPHOLOGY[list(MORPHOLOGY)[np.random.randint(len(MORPHOLOGY))]]
        radius = np.random.randint(BALL_RADIUS_RANGE[0], BALL_RADIUS_RANGE[1] + 1)
        changed = operation(channels[channel] > 0, radius)
        switched_on = changed & (channels[channel] == 0)
        channels[channel] = changed
        channels[:, switched_on] = 0
        channels[channel][switched_on] = 1


def remove_random_component(channels: np.ndarray) -> None:
    """Per label channel of one sample, remove one random connected component (26-connected) that covers at
    most ``MAX_REMOVED_COMPONENT_FRACTION`` of the patch, in place."""
    limit = MAX_REMOVED_COMPONENT_FRACTION * channels[0].size
    for channel in channels:
        components, count = ndimage.label(channel > 0, np.ones((3,) * channel.ndim))
        if count == 0:
            continue
        sizes = np.bincount(components.ravel())[1:]
        small = np.flatnonzero(sizes <= limit) + 1
        if len(small):
            channel[components == small[np.random.randint(len(small))]] = 0


class PreviousStageToData(AbstractTransform):
    """Move the last ``seg`` channel (the previous stage's labels) into ``data`` as one channel per value of
    ``labels``; with ``perturb``, apply the training perturbations."""

    def __init__(self, labels: list[int], perturb: bool):
        self.labels, self.perturb = list(labels), perturb

    def __call__(self, **batch):
        seg = batch["seg"]
        channels = np.stack([one_hot(sample[-1], self.labels) for sample in seg])
        if self.perturb:
            for sample in channels:
                if np.random.uniform() < MORPHOLOGY_PROBABILITY:
                    perturb_morphology(sample)
                if np.random.uniform() < COMPONENT_REMOVAL_PROBABILITY:
                    remove_random_component(sample)
        batch["data"] = np.concatenate([batch["data"], channels.astype(batch["data"].dtype)], axis=1)
        batch["seg"] = seg[:, :-1]
        return batch
