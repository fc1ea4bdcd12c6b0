"""Choose the normalization of every channel from its name in dataset.json and the fingerprint."""
from boxunet.errors import BoxunetError
from boxunet.planning.plans import NormalizationPlan

NONZERO_MASK_MAX_RELATIVE_SIZE = 0.75
_SCHEMES_BY_CHANNEL_NAME = {"ct": "ct", "nonorm": "none", "none": "none",
                            "rescale_to_0_1": "rescale_0_1", "rgb_to_0_1": "rgb_0_1", "zscore": "zscore"}


def plan_normalization(channel_names: dict[int, str], fingerprint: dict,
                       ct_window: tuple[float, float] | None = None) -> list[NormalizationPlan]:
    """One NormalizationPlan per channel.

    CT: clip to the dataset's 0.5/99.5 foreground percentiles, then z-score with the foreground mean
    and std (``ct_window`` instead clips to a fixed HU window and scales to [0, 1]). Other channels:
    per-image z-score, inside the nonzero mask when cropping to nonzero shrank the images a lot.
    """
    if ct_window is not None and ct_window[0] >= ct_window[1]:
        raise BoxunetError(f"--ct-window {ct_window[0]} {ct_window[1]}: the low value must be below the high value")
    use_mask = fingerprint["median_relative_size_after_cropping"] < NONZERO_MASK_MAX_RELATIVE_SIZE
    plans = []
    for channel in sorted(channel_names):
        scheme = _SCHEMES_BY_CHANNEL_NAME.get(channel_names[channel].lower(), "zscore")
        if scheme == "ct" and ct_window is not None:
            plans.append(NormalizationPlan("ct_window", clip_low=float(ct_window[0]), clip_high=float(ct_window[1])))
        elif scheme == "ct":
            stats = fingerprint["foreground_intensity_properties_per_channel"][str(channel)]
            plans.append(NormalizationPlan("ct", clip_low=stats["percentile_00_5"], clip_high=stats["percentile_99_5"],
                                           mean=stats["mean"], std=stats["std"]))
        else:
            plans.append(NormalizationPlan(scheme, use_nonzero_mask=use_mask and scheme == "zscore"))
    return plans
