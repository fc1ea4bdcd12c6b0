"""Sliding-window prediction of a whole (preprocessed) image with a patch-based network.

Windows overlap by ``1 - step_size`` of the patch; each window's logits are weighted with a Gaussian
(centre voxels are more reliable than border ones), summed, and divided by the summed weights. With a
2D patch on 3D data every slice along axis 0 is predicted as a 2D image. Mirroring averages the logits
of every combination of flips over ``mirror_axes`` (the input is flipped, the output flipped back).

The Gaussian is a product of one profile per axis and the windows form a grid, so the summed weight at
a voxel is the product of per-axis sums: it is never stored as a volume. Logits are accumulated in
float32, on the device when it is CUDA (falling back to the CPU when the device runs out of memory),
otherwise on the CPU. Several networks (the folds of a model) are averaged window by window.
The forward passes run under ``precision`` (see ``boxunet.nets.precision``).
"""
import functools
import itertools

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from boxunet.nets.precision import autocast

CPU = torch.device("cpu")


def gaussian_profiles(patch_size, sigma_scale: float = 1 / 8) -> list[np.ndarray]:
    """Per-axis Gaussian profiles (float64, peak 1 at index ``size // 2``, sigma ``size * sigma_scale``).
    At the patch border a profile is exp(-8) (sigma 1/8 of the patch), never 0."""
    return [np.exp(-0.5 * ((np.arange(size) - size // 2) / (size * sigma_scale)) ** 2) for size in patch_size]


def gaussian_importance_map(patch_size, sigma_scale: float = 1 / 8, value_scaling: float = 10) -> torch.Tensor:
    """Separable Gaussian over the patch: the outer product of ``gaussian_profiles`` times
    ``value_scaling`` (the peak, at index ``patch // 2``). float32."""
    weights = functools.reduce(np.multiply.outer, gaussian_profiles(patch_size, sigma_scale)) * value_scaling
    return torch.from_numpy(weights.astype(np.float32))


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


def predict_sliding_window(networks, data: torch.Tensor, patch_size, num_outputs: int, step_size: float = 0.5,
                           use_gaussian: bool = True, mirror_axes: tuple = (), device: torch.device = CPU,
                           batch_size: int = 1, precision: str = "fp32", progress: bool = False) -> torch.Tensor:
    """Logits (num_outputs, *spatial), float32 on the CPU, for ``data`` (C, *spatial).

    ``networks`` is one module or a list of modules whose logits are averaged (the folds of a model).
    ``patch_size`` has one entry per spatial axis, or one fewer (2D patches on 3D data: every slice along
    axis 0 is predicted on its own). ``mirror_axes`` index the patch axes. An image smaller than the patch
    is padded with zeros and the result cropped back. The networks run in eval mode without gradients
    (their training mode is restored afterwards); of a list of outputs (deep supervision) the first is used.
    """
    networks = list(networks) if isinstance(networks, (list, tuple)) else [networks]
    patch_size = tuple(int(p) for p in patch_size)
    spatial_dims = data.ndim - 1
    if len(patch_size) not in (spatial_dims, spatial_dims - 1):
        raise ValueError(f"patch {list(patch_size)} does not fit data of shape {list(data.shape)} (C, *spatial)")
    if any(not 0 <= axis < len(patch_size) for axis in mirror_axes):
        raise ValueError(f"mirror axes {list(mirror_axes)} must index the {len(patch_size)} patch axes")
    window = (1,) * (spatial_dims - len(patch_size)) + patch_size
    padded, crop = pad_to_window(data.float(), window)
    arguments = dict(networks=networks, data=padded, patch_size=patch_size, window=window, num_outputs=num_outputs,
                     step_size=step_size, use_gaussian=use_gaussian, mirror_axes=tuple(mirror_axes),
                     device=device, batch_size=batch_size, precision=precision, progress=progress)
    was_training = [network.training for network in networks]
    for network in networks:
        network.eval()
    try:
        with torch.no_grad():  # not inference_mode: callers may update the result in place
            logits = None
            if device.type == "cuda":
                try:
                    logits = _accumulate(accumulate_on=device, **arguments)
                except torch.OutOfMemoryError:
                    pass  # retried below, once the failed attempt's GPU tensors are released
            if logits is None:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                logits = _accumulate(accumulate_on=CPU, **arguments)
    finally:
        for network, training in zip(networks, was_training):
            network.train(training)
    return logits[(slice(None),) + crop].contiguous() if any(c != slice(None) for c in crop) else logits


def pad_to_window(data: torch.Tensor, window) -> tuple[torch.Tensor, tuple[slice, ...]]:
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


def _window_starts(shape, window, patch_size, step_size: float) -> list[list[int]]:
    """Start positions per spatial axis; axes where the window is 1 (slices of 2D patches) take every index."""
    leading = [list(range(size)) for size in shape[:len(window) - len(patch_size)]]
    return leading + sliding_window_steps(shape[len(leading):], patch_size, step_size)


def window_slices(starts: list[list[int]], window) -> list[tuple[slice, ...]]:
    """The spatial slices of every window position (the product of the per-axis ``starts``)."""
    return [tuple(slice(s, s + w) for s, w in zip(start, window)) for start in itertools.product(*starts)]


def patch_windows(shape, patch_size, step_size: float = 0.5) -> tuple[tuple[int, ...], list[tuple[slice, ...]]]:
    """The window (the patch, with a leading 1 for 2D patches on 3D data) and the slices of every position the
    sliding window visits on an image of ``shape`` (at least the window; see ``pad_to_window``)."""
    patch_size = tuple(int(p) for p in patch_size)
    window = (1,) * (len(shape) - len(patch_size)) + patch_size
    return window, window_slices(_window_starts(shape, window, patch_size, step_size), window)


def _summed_weight_per_axis(shape, window, starts, use_gaussian: bool) -> list[torch.Tensor]:
    """For each axis, the sum over window starts of the weight profile: their outer product is the total
    weight every voxel received (the weights and the window grid are both separable)."""
    profiles = gaussian_profiles(window) if use_gaussian else [np.ones(w) for w in window]
    sums = []
    for size, profile, axis_starts in zip(shape, profiles, starts):
        total = np.zeros(size)
        for start in axis_starts:
            total[start:start + len(profile)] += profile
        sums.append(torch.from_numpy(total.astype(np.float32)))
    return sums


def _accumulate(networks, data, patch_size, window, num_outputs, step_size, use_gaussian, mirror_axes, device,
                batch_size, precision, progress, accumulate_on) -> torch.Tensor:
    data = data.to(accumulate_on)
    # the peak value cancels in the normalization; 1 keeps the float32 sums small
    weights = gaussian_importance_map(window, value_scaling=1.0) if use_gaussian else torch.ones(window)
    weights = weights.to(accumulate_on)
    logits = torch.zeros((num_outputs,) + tuple(data.shape[1:]), dtype=torch.float32, device=accumulate_on)
    squeeze = len(window) != len(patch_size)
    starts = _window_starts(data.shape[1:], window, patch_size, step_size)
    windows = window_slices(starts, window)
    for first in tqdm(range(0, len(windows), batch_size), disable=not progress, desc="sliding window"):
        batch_windows = windows[first:first + batch_size]
        batch = torch.stack([data[(slice(None),) + w] for w in batch_windows]).to(device)
        if squeeze:
            batch = batch.squeeze(2)
        output = sum(_mirrored_forward(network, batch, mirror_axes, device, precision) for network in networks)
        expected = (len(batch_windows), num_outputs) + patch_size
        if tuple(output.shape) != expected:
            raise ValueError(f"network output {list(output.shape)} should be {list(expected)} (batch, outputs, *patch)")
        output = output.to(accumulate_on).reshape((len(batch_windows), num_outputs) + window)
        output *= weights / len(networks)
        for w, patch_logits in zip(batch_windows, output):
            logits[(slice(None),) + w] += patch_logits
    for axis, total in enumerate(_summed_weight_per_axis(data.shape[1:], window, starts, use_gaussian)):
        shape = [1] * logits.ndim
        shape[axis + 1] = -1
        logits /= total.to(accumulate_on).reshape(shape)
    return logits.to(CPU)


def _mirrored_forward(network, batch: torch.Tensor, mirror_axes: tuple, device: torch.device,
                      precision: str) -> torch.Tensor:
    """Float32 logits of ``batch`` averaged over every subset of flipped ``mirror_axes``."""
    subsets = [combo for count in range(len(mirror_axes) + 1) for combo in itertools.combinations(mirror_axes, count)]
    total = None
    with autocast(device, precision):
        for axes in subsets:
            dims = [axis + 2 for axis in axes]
            output = network(torch.flip(batch, dims) if dims else batch)
            while isinstance(output, (list, tuple)):  # deep supervision and extra heads: the main output first
                output = output[0]
            output = output.float()
            output = torch.flip(output, dims) if dims else output
            total = output if total is None else total + output
    return total / len(subsets)
