"""Patch and batch size from a memory budget, using a feature-map size estimate of the U-Net.

The estimate is the sum, over every convolution of encoder and decoder (transposed convolutions and
deep-supervision outputs included), of output channels x output voxels for one sample. nnU-Net's
reference values translate it into memory: at 8 GB, 560e6 for a 3D batch of 2 and 85e6 for a 2D batch
of 12; they scale linearly with the budget.
"""
from dataclasses import dataclass

import numpy as np

from boxunet.planning.topology import Topology, features_per_stage, plan_topology

REFERENCE_MEMORY_GB = 8.0
REFERENCE_ESTIMATE = {3: 560e6, 2: 85e6}
REFERENCE_BATCH_SIZE = {3: 2, 2: 12}
INITIAL_PATCH_EDGE = {3: 256, 2: 2048}
MIN_BATCH_SIZE = 2
MAX_DATASET_FRACTION_PER_BATCH = 0.05
CONVS_PER_STAGE = 2


def feature_map_estimate(topology: Topology, features: list[int], num_classes: int,
                         convs_per_stage: int = CONVS_PER_STAGE) -> float:
    """Sum of output channels x output voxels over all convolutions, for one sample."""
    voxels = []
    size = np.asarray(topology.patch_size, dtype=np.float64)
    for stride in topology.strides:
        size = size / np.asarray(stride)
        voxels.append(float(np.prod(size)))
    encoder = sum(convs_per_stage * f * v for f, v in zip(features, voxels))
    decoder = sum((1 + convs_per_stage) * f * v + num_classes * v for f, v in zip(features[:-1], voxels[:-1]))
    return encoder + decoder


@dataclass(frozen=True)
class PatchPlan:
    """The chosen topology (with its patch size), features, batch size and the estimate that led there."""

    topology: Topology
    features: list[int]
    batch_size: int
    estimate: float


def _initial_patch(spacing: list[float], median_shape: list[float]) -> list[int]:
    dim = len(spacing)
    aspect = 1.0 / np.asarray(spacing, dtype=np.float64)
    aspect = aspect / np.prod(aspect) ** (1.0 / dim)
    patch = aspect * INITIAL_PATCH_EDGE[dim]
    return [int(round(min(p, m))) for p, m in zip(patch, median_shape)]


def plan_patch_and_batch(spacing: list[float], median_shape: list[float], num_classes: int,
                         memory_gb: float, dataset_voxels: float, base_features: int = 32) -> PatchPlan:
    """Largest patch (shaped like the physical aspect, clipped to the median image) that fits ``memory_gb``
    with a network of ``base_features`` in its first stage (doubling per stage, ``features_per_stage``).

    While the estimate exceeds the budget, the axis whose patch is largest relative to the median image
    shrinks by one stride multiple. The batch size then fills the remaining budget, capped so one batch
    covers at most 5% of the dataset's voxels and never below 2.
    """
    dim = len(spacing)
    reference = REFERENCE_ESTIMATE[dim] * memory_gb / REFERENCE_MEMORY_GB
    reference_batch = REFERENCE_BATCH_SIZE[dim]
    budget = reference * reference_batch / MIN_BATCH_SIZE  # the estimate a batch of 2 may reach
    patch = _initial_patch(spacing, median_shape)
    while True:
        topology = plan_topology(spacing, patch)
        features = features_per_stage(topology.n_stages, dim, base_features)
        estimate = feature_map_estimate(topology, features, num_classes)
        if estimate <= budget:
            break
        ratios = np.asarray(topology.patch_size) / np.asarray(median_shape)
        axis = int(np.argmax(ratios))
        step = topology.total_stride[axis]
        shrunk = topology.patch_size[axis] - step
        if shrunk < step or shrunk < 4:
            # this axis cannot shrink further; shrink the largest other axis that can
            candidates = [a for a in np.argsort(-ratios)
                          if topology.patch_size[a] - topology.total_stride[a] >= max(4, topology.total_stride[a])]
            if not candidates:
                break
            axis = int(candidates[0])
            shrunk = topology.patch_size[axis] - topology.total_stride[axis]
        patch = list(topology.patch_size)
        patch[axis] = shrunk
    batch = int(round(reference / estimate * reference_batch))
    max_by_dataset = int(round(MAX_DATASET_FRACTION_PER_BATCH * dataset_voxels / np.prod(topology.patch_size)))
    batch = max(MIN_BATCH_SIZE, min(batch, max_by_dataset))
    return PatchPlan(topology=topology, features=features, batch_size=batch, estimate=estimate)
