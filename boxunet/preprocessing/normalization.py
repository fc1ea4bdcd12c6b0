"""Apply the per-channel normalization chosen in the plans.

Per-image statistics (z-score mean and std, rescale min and max) are computed once over the whole
channel, in chunks; the normalization itself is elementwise, so it can be applied to any slab of the
image (the resampler reads the raw image slab by slab and normalizes each slab).
"""
from typing import Callable

import numpy as np

from boxunet.planning.plans import NormalizationPlan

STATISTICS_CHUNK = 8 * 1024 * 1024
SlabNormalizer = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


def _mean_and_std(channel: np.ndarray, inside: np.ndarray | None) -> tuple[float, float]:
    """Mean and std of a channel (inside the mask when given), accumulated in float64 chunks."""
    flat = channel.reshape(-1)
    mask = inside.reshape(-1) if inside is not None else None
    count, total, squares = 0, 0.0, 0.0
    for start in range(0, flat.size, STATISTICS_CHUNK):
        values = flat[start:start + STATISTICS_CHUNK].astype(np.float64)
        if mask is not None:
            values = values[mask[start:start + STATISTICS_CHUNK]]
        count += values.size
        total += float(values.sum())
        squares += float(np.square(values).sum())
    if count == 0:
        return 0.0, 1.0
    mean = total / count
    return mean, float(np.sqrt(max(squares / count - mean * mean, 0.0)))


def channel_normalizer(channel: np.ndarray, plan: NormalizationPlan, inside: np.ndarray | None = None) -> SlabNormalizer:
    """A function that normalizes any float32 slab of ``channel`` in place (given its slab of ``inside``).

    ``inside`` is the nonzero mask of the whole channel; the z-score inside the mask needs it.
    """
    scheme = plan.scheme
    masked = scheme == "zscore" and plan.use_nonzero_mask and inside is not None and not inside.all()
    clip = (plan.clip_low, plan.clip_high) if scheme in ("ct", "ct_window") else None
    if scheme == "ct":
        shift, scale = plan.mean, max(plan.std, 1e-8)
    elif scheme == "ct_window":
        shift, scale = plan.clip_low, plan.clip_high - plan.clip_low
    elif scheme == "zscore":
        shift, scale = _mean_and_std(channel, inside if masked else None)
        scale = max(scale, 1e-8)
    elif scheme == "rescale_0_1":
        shift = float(channel.min())
        scale = max(float(channel.max()) - shift, 1e-8)
    elif scheme == "rgb_0_1":
        shift, scale = 0.0, 255.0
    elif scheme == "none":
        shift, scale = 0.0, 1.0
    else:
        raise ValueError(f"unknown normalization scheme {scheme!r}")

    def normalize_slab(slab: np.ndarray, inside_slab: np.ndarray | None = None) -> np.ndarray:
        if clip is not None:
            np.clip(slab, clip[0], clip[1], out=slab)
        slab -= shift
        slab /= scale
        if masked and inside_slab is not None:
            slab[~inside_slab] = 0
        return slab
    return normalize_slab


def normalize_channel(channel: np.ndarray, plan: NormalizationPlan, inside: np.ndarray | None = None) -> np.ndarray:
    """Normalize one whole float32 channel in place and return it. ``inside`` is the nonzero mask, if known."""
    return channel_normalizer(channel, plan, inside)(channel, inside)

