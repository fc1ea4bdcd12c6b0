"""Sliding-window prediction of a whole (preprocessed) image with a patch-based network.

Windows overlap by ``1 - step_size`` of the patch; each window's logits are weighted with a Gaussian
(centre voxels are more reliable than border ones), summed, and divided by the summed weights. With a
2D patch on 3D data every slice along axis 0 is predicted as a 2D image. Mirroring averages the logits
of every combination of flips over ``mirror_axes`` (the input is flipped, the output flipped back).

Logits and weights are accumulated in float32, on the device when it is CUDA (falling back to the CPU
when the device runs out of memory), otherwise on the CPU.
"""
import functools
import itertools

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

CPU = torch.device("cpu")


def gaussian_importance_map(patch_size, sigma_scale: float = 1 / 8, value_scaling: float = 10) -> torch.Tensor:
    """Separable Gaussian over the patch: sigma ``patch * sigma_scale`` per axis, peak ``value_scaling``
    at index ``patch // 2``; zeros (underflow) are replaced by the smallest nonzero value. float32."""
    profiles = [np.exp(-0.5 * ((np.arange(size) - size // 2) / (size * sigma_scale)) ** 2) for size in patch_size]
    weights = functools.reduce(np.multiply.outer, profiles)
    weights = (weights / weights.max() * value_scaling).astype(np.float32)
    weights[weights == 0] = weights[weights > 0].min()
    return torch.from_numpy(weights)


def sliding_window_steps(image_size, patch_size, step_size: float = 0.5) -> list[list[int]]:
    """Window start positions per axis: ceil((size - patch) / (patch * step_size)) + 1 starts, evenly
    spaced from 0 to size - patch (rounded to integers)."""
    steps = []
    for size, patch in zip(image_size, patch_size):
        if size < patch:
            raise ValueError(f"image size {list(image_size)} is smaller than the patch {list(patch_size)}")
        count = int(np.ceil((size - patch) / (patch * step_size))) + 1
        spacing = (size - patch) / (count - 1) if count > 1 else 0
        steps.append([int(np.round(spacing * index)) for index in range(count)])
    return steps


def predict_sliding_window(network: torch.nn.Module, data: torch.Tensor, patch_size, num_outputs: int,
                           step_size: float = 0.5, use_gaussian: bool = True, mirror_axes: tuple = (),
                           device: torch.device = CPU, batch_size: int = 1, progress: bool = False) -> torch.Tensor:
    """Logits (num_outputs, *spatial), float32 on the CPU, for ``data`` (C, *spatial).

    ``patch_size`` has one entry per spatial axis, or one fewer (2D patches on 3D data: every slice along
    axis 0 is predicted on its own). ``mirror_axes`` index the patch axes. An image smaller than the patch
    is padded with zeros and the result cropped back. The network runs in eval mode without gradients
    (its training mode is restored afterwards); of a list of outputs (deep supervision) the first is used.
    """
    patch_size = tuple(int(p) for p in patch_size)
    spatial_dims = data.ndim - 1
    if len(patch_size) not in (spatial_dims, spatial_dims - 1):
        raise ValueError(f"patch {list(patch_size)} does not fit data of shape {list(data.shape)} (C, *spatial)")
    if any(not 0 <= axis < len(patch_size) for axis in mirror_axes):
        raise ValueError(f"mirror axes {list(mirror_axes)} must index the {len(patch_size)} patch axes")
    window = (1,) * (spatial_dims - len(patch_size)) + patch_size
    padded, crop = _pad_to(data.float(), window)
    arguments = dict(network=network, data=padded, patch_size=patch_size, window=window, num_outputs=num_outputs,
                     step_size=step_size, use_gaussian=use_gaussian, mirror_axes=tuple(mirror_axes),
                     device=device, batch_size=batch_size, progress=progress)
    was_training = network.training
    network.eval()
    try:
        with torch.inference_mode():
            if device.type != "cuda":
                logits = _accumulate(accumulate_on=CPU, **arguments)
            else:
                try:
                    logits = _accumulate(accumulate_on=device, **arguments)
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    logits = _accumulate(accumulate_on=CPU, **arguments)
    finally:
        network.train(was_training)
    return logits[(slice(None),) + crop].contiguous()


def _pad_to(data: torch.Tensor, window) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad (C, *spatial) with zeros, evenly on both sides, to at least ``window``; return it and the crop back."""
    missing = [max(0, w - s) for s, w in zip(data.shape[1:], window)]
    if not any(missing):
        return data, tuple(slice(None) for _ in missing)
    before = [m // 2 for m in missing]
    pad = []
    for lo, m in zip(reversed(before), reversed(missing)):
        pad += [lo, m - lo]
    crop = tuple(slice(lo, lo + s) for lo, s in zip(before, data.shape[1:]))
    return F.pad(data, pad), crop


def _windows(shape, window, patch_size, step_size: float) -> list[tuple[slice, ...]]:
    """Spatial slices of every window; axes where the window is 1 (slices of 2D patches) take every index."""
    leading = [list(range(size)) for size in shape[:len(window) - len(patch_size)]]
    starts = leading + sliding_window_steps(shape[len(leading):], patch_size, step_size)
    return [tuple(slice(s, s + w) for s, w in zip(start, window)) for start in itertools.product(*starts)]


def _accumulate(network, data, patch_size, window, num_outputs, step_size, use_gaussian, mirror_axes, device,
                batch_size, progress, accumulate_on) -> torch.Tensor:
    data = data.to(accumulate_on)
    weights = gaussian_importance_map(patch_size) if use_gaussian else torch.ones(patch_size)
    weights = weights.reshape(window).to(accumulate_on)
    logits = torch.zeros((num_outputs,) + tuple(data.shape[1:]), dtype=torch.float32, device=accumulate_on)
    total_weight = torch.zeros(data.shape[1:], dtype=torch.float32, device=accumulate_on)
    squeeze = len(window) != len(patch_size)
    windows = _windows(data.shape[1:], window, patch_size, step_size)
    for start in tqdm(range(0, len(windows), batch_size), disable=not progress, desc="sliding window"):
        batch_windows = windows[start:start + batch_size]
        batch = torch.stack([data[(slice(None),) + w] for w in batch_windows]).to(device)
        if squeeze:
            batch = batch.squeeze(2)
        output = _mirrored_forward(network, batch, mirror_axes, device)
        expected = (len(batch_windows), num_outputs) + patch_size
        if tuple(output.shape) != expected:
            raise ValueError(f"network output {list(output.shape)} should be {list(expected)} (batch, outputs, *patch)")
        output = output.to(accumulate_on).reshape((len(batch_windows), num_outputs) + window)
        for w, patch_logits in zip(batch_windows, output):
            logits[(slice(None),) + w] += patch_logits * weights
            total_weight[w] += weights
    logits /= total_weight
    return logits.to(CPU)


def _mirrored_forward(network, batch: torch.Tensor, mirror_axes: tuple, device: torch.device) -> torch.Tensor:
    """Float32 logits of ``batch`` averaged over every subset of flipped ``mirror_axes``."""
    subsets = [combo for count in range(len(mirror_axes) + 1) for combo in itertools.combinations(mirror_axes, count)]
    total = None
    with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        for axes in subsets:
            dims = [axis + 2 for axis in axes]
            output = network(torch.flip(batch, dims) if dims else batch)
            if isinstance(output, (list, tuple)):
                output = output[0]
            output = output.float()
            output = torch.flip(output, dims) if dims else output
            total = output if total is None else total + output
    return total / len(subsets)
