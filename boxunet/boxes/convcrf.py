"""A 3D convolutional CRF (ConvCRF, Teichmann & Cipolla 2019) with mean-field inference in PyTorch.

The pairwise potential is a Potts model over a local box window: two voxels i, j with
|z_i - z_j| <= r_z, |y_i - y_j| <= r_y, |x_i - x_j| <= r_x interact with

    k(i, j) = w_a * exp(-|p_i - p_j|^2 / (2 theta_a^2) - |I_i - I_j|^2 / (2 theta_b^2))   (appearance)
            + w_s * exp(-|p_i - p_j|^2 / (2 theta_s^2))                                   (smoothness)

where p are positions in mm (spacing-aware) and I the (normalized) intensities of every channel.
A mean-field step is Q_i(c) = softmax_c(-U_i(c) + sum_j k(i, j) Q_j(c)) (Potts: a neighbour with the
same label lowers the energy). The message is accumulated over shifted views of Q, one window offset
at a time, using k(i, j) = k(j, i) to compute each offset's weights once for both directions. The kernels do
not change during inference: where they fit in ``KERNEL_CACHE_BYTES`` they are computed once and kept
(``PairwiseKernels``), larger regions compute them anew on every pass so that memory stays a few times
classes x voxels (nothing of size window x voxels is stored).
"""
import math
from dataclasses import dataclass
from itertools import product

import numpy as np
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


KERNEL_CACHE_BYTES = 256 * 2 ** 20  # pairwise kernels up to this size are computed once per inference


class PairwiseKernels:
    """The kernel values k(i, i + o) of every half-window offset o of a batch of regions, and their sum over
    each voxel's window (``total``, known after the first pass).

    Iterating yields ``(first, second, kernel)``: index tuples of the voxel pairs (i, i + o) and k(i, i + o),
    shaped (B, 1, *overlap). ``features`` (B, F, *spatial) are the intensities, ``valid`` (B, 1, *spatial)
    marks the voxels that take part (padding of a batch does not; None: all). When all kernels take at most
    ``cache_bytes`` they are kept after the first pass and reused (one computation serves every mean-field
    iteration and every call with these features); otherwise each pass computes them again (``kept`` says which).
    """

    def __init__(self, features: torch.Tensor, valid: torch.Tensor | None, spacing_mm, parameters: CRFParameters,
                 cache_bytes: int = KERNEL_CACHE_BYTES):
        features = features.float()
        self.scaled = features / parameters.intensity_sigma
        self.valid = None if valid is None else valid.float()
        self.spacing_mm, self.parameters = spacing_mm, parameters
        shape = features.shape[2:]
        self.offsets = [o for o in _half_offsets(parameters.window_radius(spacing_mm))
                        if all(abs(d) < n for d, n in zip(o, shape))]  # no voxel pair this far apart otherwise
        size = sum(int(np.prod([n - abs(d) for d, n in zip(o, shape)])) for o in self.offsets) * features.shape[0]
        self.kept = size * 4 <= cache_bytes  # float32 kernels
        self._stored: list | None = None
        self.total: torch.Tensor | None = None

    def __iter__(self):
        return iter(self._stored) if self._stored is not None else self._compute()

    def _kernel(self, offset) -> tuple[tuple, tuple, torch.Tensor]:
        p, scaled = self.parameters, self.scaled
        distance2 = sum((d * s) ** 2 for d, s in zip(offset, self.spacing_mm))
        first, second = _pair_slices(offset, scaled.shape[2:])
        a, b = (slice(None), slice(None)) + first, (slice(None), slice(None)) + second
        if p.appearance_weight:
            difference = (scaled[a] - scaled[b]).square_().sum(dim=1, keepdim=True)
            kernel = torch.exp_(difference.mul_(-0.5).sub_(0.5 * distance2 / p.appearance_sigma_mm ** 2))
            kernel.mul_(p.appearance_weight)
        else:
            kernel = torch.zeros_like(scaled[a][:, :1])
        if p.smoothness_weight:
            kernel.add_(p.smoothness_weight * math.exp(-0.5 * distance2 / p.smoothness_sigma_mm ** 2))
        if self.valid is not None:
            kernel.mul_(self.valid[a] * self.valid[b])
        return a, b, kernel

    def _compute(self):
        stored = [] if self.kept else None
        total = torch.zeros_like(self.scaled[:, :1]) if self.total is None else None
        for offset in self.offsets:
            a, b, kernel = self._kernel(offset)
            if total is not None:
                total[a] += kernel
                total[b] += kernel
            if stored is not None:
                stored.append((a, b, kernel))
            yield a, b, kernel
        if total is not None:
            self.total = total
        self._stored = stored


def crf_message(q: torch.Tensor, kernels: PairwiseKernels, parameters: CRFParameters) -> torch.Tensor:
    """``pairwise_weight`` x sum_j k(i, j) Q_j for every voxel i (divided by sum_j k(i, j) with ``normalize``,
    making it a weighted vote of the neighbours in [0, pairwise_weight]): (B, C, *spatial) from Q.

    With two classes only the message of class 1 is accumulated: that of class 0 is the kernel sum minus it.
    """
    binary = q.shape[1] == 2
    source = q[:, 1:] if binary else q
    message = torch.zeros_like(source)
    for a, b, kernel in kernels:
        message[a].addcmul_(kernel, source[b])
        message[b].addcmul_(kernel, source[a])
    total = kernels.total
    if binary:
        message = torch.cat([total - message, message], dim=1)
    if parameters.normalize:
        message /= total.clamp(min=1e-6)
    return message.mul_(parameters.pairwise_weight)


def mean_field(unary_logits: torch.Tensor, features: torch.Tensor, spacing_mm, parameters: CRFParameters,
               fixed: torch.Tensor | None = None, valid: torch.Tensor | None = None,
               kernels: PairwiseKernels | None = None) -> torch.Tensor:
    """Mean-field inference of the ConvCRF; returns the class probabilities Q (B, C, *spatial).

    ``unary_logits`` (B, C, *spatial) are -U (log-probabilities of a prior, up to a constant);
    ``features`` (B, F, *spatial) the intensities the appearance kernel compares; ``fixed`` (B, 1,
    *spatial, bool) marks voxels whose label is known: they keep softmax(unary) and only send
    messages. ``valid`` (B, 1, *spatial) excludes padding. ``kernels``: the ``PairwiseKernels`` of these
    features and ``valid`` from an earlier call, to reuse (else they are made here). Q starts at softmax(unary),
    as in Kraehenbuehl & Koltun.
    """
    unary_logits = unary_logits.float()
    kernels = kernels if kernels is not None else PairwiseKernels(features, valid, spacing_mm, parameters)
    q0 = torch.softmax(unary_logits, dim=1)
    q = q0
    for _ in range(parameters.iterations):
        q = torch.softmax(unary_logits + crf_message(q, kernels, parameters), dim=1)
        if fixed is not None:
            q = torch.where(fixed, q0, q)
    return q
