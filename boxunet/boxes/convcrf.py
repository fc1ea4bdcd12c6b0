"""A 3D convolutional CRF (ConvCRF, Teichmann & Cipolla 2019) with mean-field inference in PyTorch.

The pairwise potential is a Potts model over a local box window: two voxels i, j with
|z_i - z_j| <= r_z, |y_i - y_j| <= r_y, |x_i - x_j| <= r_x interact with

    k(i, j) = w_a * exp(-|p_i - p_j|^2 / (2 theta_a^2) - |I_i - I_j|^2 / (2 theta_b^2))   (appearance)
            + w_s * exp(-|p_i - p_j|^2 / (2 theta_s^2))                                   (smoothness)

where p are positions in mm (spacing-aware) and I the (normalized) intensities of every channel.
A mean-field step is Q_i(c) = softmax_c(-U_i(c) + sum_j k(i, j) Q_j(c)) (Potts: a neighbour with the
same label lowers the energy). The message is accumulated over shifted views of Q, one window offset
at a time, using k(i, j) = k(j, i) to compute each offset's weights once for both directions; nothing
of size window x voxels is ever stored, so memory is a few times classes x voxels.
"""
import math
from dataclasses import dataclass
from itertools import product

import torch


@dataclass(frozen=True)
class CRFParameters:
    """Kernel widths (mm and intensity units), weights, window and iteration count of the ConvCRF."""

    appearance_weight: float = 1.0
    appearance_sigma_mm: float = 4.0
    intensity_sigma: float = 0.25
    smoothness_weight: float = 0.5
    smoothness_sigma_mm: float = 1.5
    max_window_radius: int = 3
    iterations: int = 5
    normalize: bool = True
    pairwise_weight: float = 4.0

    def window_radius(self, spacing_mm) -> tuple[int, ...]:
        """Per-axis window radius in voxels: about two appearance sigmas, 1..``max_window_radius``."""
        return tuple(int(min(self.max_window_radius, max(1, round(2.0 * self.appearance_sigma_mm / s))))
                     for s in spacing_mm)


def _half_offsets(radius) -> list[tuple[int, ...]]:
    """The window offsets o with o > 0 lexicographically (each unordered pair of voxels once)."""
    ranges = [range(-r, r + 1) for r in radius]
    return [o for o in product(*ranges) if o > (0,) * len(radius)]


def _pair_slices(offset, shape) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices (first, second) such that ``second`` is ``first`` shifted by ``offset`` inside ``shape``."""
    first, second = [], []
    for d, n in zip(offset, shape):
        first.append(slice(max(0, -d), n - max(0, d)))
        second.append(slice(max(0, d), n - max(0, -d)))
    return tuple(first), tuple(second)


def _offset_kernels(features: torch.Tensor, valid: torch.Tensor | None, spacing_mm, parameters: CRFParameters):
    """Yield ``(first, second, kernel)`` for each half-window offset: index tuples of the voxel pairs
    (i, i + offset) and their kernel values k(i, i + offset), shaped (B, 1, *overlap)."""
    p = parameters
    shape = features.shape[2:]
    scaled = features / p.intensity_sigma
    for offset in _half_offsets(p.window_radius(spacing_mm)):
        if any(abs(d) >= n for d, n in zip(offset, shape)):
            continue  # no voxel pair this far apart along a short axis
        distance2 = sum((d * s) ** 2 for d, s in zip(offset, spacing_mm))
        first, second = _pair_slices(offset, shape)
        a, b = (slice(None), slice(None)) + first, (slice(None), slice(None)) + second
        if p.appearance_weight:
            difference = (scaled[a] - scaled[b]).square_().sum(dim=1, keepdim=True)
            kernel = torch.exp_(difference.mul_(-0.5).sub_(0.5 * distance2 / p.appearance_sigma_mm ** 2))
            kernel.mul_(p.appearance_weight)
        else:
            kernel = torch.zeros_like(scaled[a][:, :1])
        if p.smoothness_weight:
            kernel.add_(p.smoothness_weight * math.exp(-0.5 * distance2 / p.smoothness_sigma_mm ** 2))
        if valid is not None:
            kernel.mul_(valid[a] * valid[b])
        yield a, b, kernel


def crf_message(q: torch.Tensor, features: torch.Tensor, valid: torch.Tensor | None, spacing_mm,
                parameters: CRFParameters, kernel_sum: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``pairwise_weight`` x sum_j k(i, j) Q_j for every voxel i (divided by sum_j k(i, j) with ``normalize``,
    making it a weighted vote of the neighbours in [0, pairwise_weight]): (B, C, *spatial) from Q; and
    sum_j k(i, j), which does not depend on Q (pass it back as ``kernel_sum`` to skip recomputing it).

    ``features`` (B, F, *spatial) are the intensities, ``valid`` (B, 1, *spatial) marks the voxels that
    take part (padding of a batch does not; None: all). With two classes only the message of class 1 is
    accumulated: that of class 0 is the kernel sum minus it.
    """
    binary = q.shape[1] == 2
    source = q[:, 1:] if binary else q
    message = torch.zeros_like(source)
    total = torch.zeros_like(q[:, :1]) if kernel_sum is None else None
    for a, b, kernel in _offset_kernels(features, valid, spacing_mm, parameters):
        message[a].addcmul_(kernel, source[b])
        message[b].addcmul_(kernel, source[a])
        if total is not None:
            total[a] += kernel
            total[b] += kernel
    total = kernel_sum if total is None else total
    if binary:
        message = torch.cat([total - message, message], dim=1)
    if parameters.normalize:
        message /= total.clamp(min=1e-6)
    return message.mul_(parameters.pairwise_weight), total


def mean_field(unary_logits: torch.Tensor, features: torch.Tensor, spacing_mm, parameters: CRFParameters,
               fixed: torch.Tensor | None = None, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean-field inference of the ConvCRF; returns the class probabilities Q (B, C, *spatial).

    ``unary_logits`` (B, C, *spatial) are -U (log-probabilities of a prior, up to a constant);
    ``features`` (B, F, *spatial) the intensities the appearance kernel compares; ``fixed`` (B, 1,
    *spatial, bool) marks voxels whose label is known: they keep softmax(unary) and only send
    messages. ``valid`` (B, 1, *spatial) excludes padding. Q starts at softmax(unary), as in
    Kraehenbuehl & Koltun.
    """
    unary_logits = unary_logits.float()
    features = features.float()
    valid = None if valid is None else valid.to(unary_logits.dtype)
    q0 = torch.softmax(unary_logits, dim=1)
    q, kernel_sum = q0, None
    for _ in range(parameters.iterations):
        message, kernel_sum = crf_message(q, features, valid, spacing_mm, parameters, kernel_sum)
        q = torch.softmax(unary_logits + message, dim=1)
        if fixed is not None:
            q = torch.where(fixed, q0, q)
    return q
