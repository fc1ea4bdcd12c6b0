"""Apply the per-channel normalization chosen in the plans (in place, float32)."""
import numpy as np

from boxunet.planning.plans import NormalizationPlan


def normalize_channel(channel: np.ndarray, plan: NormalizationPlan, inside: np.ndarray | None = None) -> np.ndarray:
    """Normalize one float32 channel in place and return it. ``inside`` is the nonzero mask, if known."""
    scheme = plan.scheme
    if scheme == "ct":
        np.clip(channel, plan.clip_low, plan.clip_high, out=channel)
        channel -= plan.mean
        channel /= max(plan.std, 1e-8)
    elif scheme == "ct_window":
        np.clip(channel, plan.clip_low, plan.clip_high, out=channel)
        channel -= plan.clip_low
        channel /= plan.clip_high - plan.clip_low
    elif scheme == "zscore":
        if plan.use_nonzero_mask and inside is not None and not inside.all():
            values = channel[inside]
            mean, std = (values.mean(), values.std()) if values.size else (0.0, 1.0)
            channel -= mean
            channel /= max(float(std), 1e-8)
            channel[~inside] = 0
        else:
            mean, std = channel.mean(dtype=np.float64), channel.std(dtype=np.float64)
            channel -= mean
            channel /= max(float(std), 1e-8)
    elif scheme == "rescale_0_1":
        low, high = float(channel.min()), float(channel.max())
        channel -= low
        channel /= max(high - low, 1e-8)
    elif scheme == "rgb_0_1":
        channel /= 255.0
    elif scheme != "none":
        raise ValueError(f"unknown normalization scheme {scheme!r}")
    return channel


def normalize(data: np.ndarray, plans: list[NormalizationPlan], inside: np.ndarray | None = None) -> np.ndarray:
    """Normalize a (c, z, y, x) float32 array in place, channel by channel."""
    if len(plans) != len(data):
        raise ValueError(f"{len(data)} channels but {len(plans)} normalization plans")
    for channel, plan in zip(data, plans):
        normalize_channel(channel, plan, inside)
    return data
