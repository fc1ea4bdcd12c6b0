"""Network topology from spacing and patch size: pooling per axis and kernel sizes per stage.

At every stage only axes whose current spacing is less than 2x the finest current spacing, and whose
current size is at least twice the minimum bottleneck edge (8), are pooled; sizes are halved rounding
up. An axis gets kernel size 3 once its spacing is less than 2x the finest (and keeps it); before that
it gets 1. The bottleneck always uses kernel 3. The patch is then rounded up to a multiple of the
total stride.
"""
from dataclasses import dataclass

import numpy as np

MIN_BOTTLENECK_EDGE = 4
MAX_POOLINGS = 999


@dataclass(frozen=True)
class Topology:
    """Strides and kernels per stage (stage 0 has stride 1) and the patch size they fit."""

    strides: list[list[int]]
    kernel_sizes: list[list[int]]
    patch_size: list[int]

    @property
    def n_stages(self) -> int:
        return len(self.strides)

    @property
    def total_stride(self) -> list[int]:
        return [int(v) for v in np.prod(np.asarray(self.strides), axis=0)]


def plan_topology(spacing: list[float], patch_size: list[int], min_edge: int = MIN_BOTTLENECK_EDGE,
                  max_poolings: int = MAX_POOLINGS) -> Topology:
    """Pool and kernel sizes for ``patch_size`` at ``spacing``; the returned patch is divisible by the strides."""
    dim = len(spacing)
    current_spacing = np.asarray(spacing, dtype=np.float64)
    current_size = np.asarray(patch_size, dtype=np.float64)
    strides = [[1] * dim]
    kernel_is_3 = np.zeros(dim, dtype=bool)
    kernels = []
    while True:
        within_2x = current_spacing < 2 * current_spacing.min()
        kernel_is_3 |= within_2x
        kernels.append([3 if k else 1 for k in kernel_is_3])
        poolable = within_2x & (current_size >= 2 * min_edge)
        if not poolable.any() or len(strides) - 1 >= max_poolings:
            break
        stride = [2 if p else 1 for p in poolable]
        strides.append(stride)
        current_spacing = current_spacing * stride
        current_size = np.ceil(current_size / stride)
    kernels[-1] = [3] * dim
    total = np.prod(np.asarray(strides), axis=0)
    padded = [int(np.ceil(size / t) * t) for size, t in zip(patch_size, total)]
    return Topology(strides=strides, kernel_sizes=kernels, patch_size=padded)


def features_per_stage(n_stages: int, conv_dim: int, base: int = 32) -> list[int]:
    """Feature maps per stage: ``base`` * 2^i, capped at 320 (3D) or 512 (2D)."""
    cap = 320 if conv_dim == 3 else 512
    return [min(base * 2 ** i, cap) for i in range(n_stages)]
