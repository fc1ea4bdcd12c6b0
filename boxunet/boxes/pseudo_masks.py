"""Stage 1 of the box trainer: pseudo masks from boxes ([Yang 2020], section 3.2.1).

Per box of label c, a region (the box plus ``context_mm`` on every side) is labelled c / not-c by a
ConvCRF (boxunet.boxes.convcrf). What a box means fixes part of the answer: voxels outside every box
of c are not c, and voxels with a dense label of another class are that class; only the remaining
voxels inside the box are inferred. Their unary combines

* a shape prior: the inscribed ellipsoid of the box is likely c, the box corners are not
  (``shape_weight`` x (1 - normalized ellipsoid radius), plus ``prior_logit``);
* an appearance model (GrabCut-style): per channel, intensity histograms of c (the box interior,
  weighted by the current belief) and of not-c (the known voxels of the region, and the box interior
  weighted by 1 - belief); their log-likelihood ratio, clipped, times ``appearance_weight`` and
  n / (n + ``appearance_min_voxels``) for a box of n unknown voxels (few samples make poor histograms).

The CRF runs ``rounds`` times, refitting the histograms on its previous output. With ``tightness`` the
result then obeys the tightness prior of a tight box (Kervadec et al. 2020, in 3D): every slice of the
box, along each axis, holds at least one voxel of c; where the CRF left a slice empty, its most probable
candidate voxel is added (a box of a few voxels, all on its border, is otherwise erased by the CRF's
smoothness). Turn it off for boxes drawn with a margin. ``method="template"`` replaces the ellipsoid by a shape learned
across cases (boxunet.boxes.shape_templates). Intensities are
normalized per region by the statistics of the box interior (``normalize_region``), so the CRF's
intensity sigma is in units of the contrast inside the box whatever the modality.
"""
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from boxunet.boxes.convcrf import CRFParameters, PairwiseKernels, mean_field
from boxunet.boxes.padding import stack_padded
from boxunet.io.boxes import Box, box_mask

METHODS = ("convcrf", "boxfill", "acol", "template")
MAP_CLIP = 1e-3  # a localization map probability is clipped to [MAP_CLIP, 1 - MAP_CLIP] before its logit


@dataclass(frozen=True)
class PseudoMaskParameters:
    """Everything that decides a stage-1 pseudo mask; stored in the reports."""

    crf: CRFParameters = field(default_factory=CRFParameters)
    context_mm: float = 10.0
    prior_logit: float = 0.0
    shape_weight: float = 4.0
    appearance_weight: float = 1.0
    appearance_clip: float = 4.0
    appearance_min_voxels: float = 50.0
    histogram_bins: int = 48
    rounds: int = 2
    threshold: float = 0.5
    tightness: bool = True

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "PseudoMaskParameters":
        values = dict(data)
        values["crf"] = CRFParameters(**values.get("crf", {}))
        return cls(**values)


def region_around(box: Box, shape, spacing_mm, context_mm: float) -> tuple[slice, ...]:
    """The box grown by ``context_mm`` on every side, clipped to the image."""
    margins = [int(np.ceil(context_mm / s)) for s in spacing_mm]
    return tuple(slice(max(0, lo - m), min(n, hi + m)) for lo, hi, m, n in zip(box.min, box.max, margins, shape))


def ellipsoid_radius(box: Box, region: tuple[slice, ...]) -> np.ndarray:
    """Normalized radius of every region voxel w.r.t. the box's inscribed ellipsoid (1 on its surface)."""
    axes = []
    for lo, hi, part in zip(box.min, box.max, region):
        centre, half = (lo + hi - 1) / 2.0, max((hi - lo) / 2.0, 0.5)
        axes.append(((np.arange(part.start, part.stop) - centre) / half) ** 2)
    z, y, x = axes
    return np.sqrt(z[:, None, None] + y[None, :, None] + x[None, None, :]).astype(np.float32)


def normalize_region(image: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Per channel: centre on the median of the ``inside`` voxels (the box) and divide by their standard
    deviation, after clipping everything to their 1-99 percentile range widened by half of it on each
    side (air or bone next to a box is then just "very different", and does not set the scale)."""
    result = np.empty(image.shape, dtype=np.float32)
    for channel, values in enumerate(image):
        sample = values[inside] if inside.any() else values.ravel()
        low, median, high = np.percentile(sample, [1, 50, 99])
        spread = high - low
        clipped = np.clip(values.astype(np.float32), low - 0.5 * spread, high + 0.5 * spread)
        scale = float(np.clip(sample, low, high).std())
        result[channel] = (clipped - median) / max(scale, 1e-6)
    return result


def _histogram_log_ratio(values: np.ndarray, foreground_weight: np.ndarray, background_weight: np.ndarray,
                         bins: int, clip: float) -> np.ndarray:
    """log p(value | c) - log p(value | not c) per voxel from weighted, smoothed histograms."""
    edges = np.linspace(float(values.min()), float(values.max()) + 1e-6, bins + 1)
    index = np.clip(np.digitize(values, edges) - 1, 0, bins - 1)
    kernel = np.array([0.25, 0.5, 0.25])
    densities = []
    for weights in (foreground_weight, background_weight):
        histogram = np.bincount(index.ravel(), weights.ravel(), minlength=bins)
        histogram = np.convolve(histogram, kernel, mode="same") + 1e-3 * max(histogram.sum(), 1.0) / bins
        densities.append(histogram / histogram.sum())
    ratio = np.clip(np.log(densities[0]) - np.log(densities[1]), -clip, clip)
    return ratio[index].astype(np.float32)


def appearance_log_ratio(features: np.ndarray, belief: np.ndarray, unknown: np.ndarray, known_not: np.ndarray,
                         parameters: PseudoMaskParameters) -> np.ndarray:
    """Sum over channels of the clipped histogram log-likelihood ratio c vs not-c, scaled by 1/sqrt(channels)."""
    foreground = belief * unknown
    background = (1.0 - belief) * unknown + known_not
    total = np.zeros(features.shape[1:], dtype=np.float32)
    for channel in features:
        total += _histogram_log_ratio(channel, foreground, background, parameters.histogram_bins,
                                      parameters.appearance_clip)
    return total / np.sqrt(len(features))


def shape_prior(box: Box, region: tuple[slice, ...], parameters: PseudoMaskParameters) -> np.ndarray:
    """Prior logit of the box label over ``region``: the inscribed ellipsoid of the box is likely, its corners not."""
    return parameters.prior_logit + parameters.shape_weight * (1.0 - ellipsoid_radius(box, region))


@dataclass
class CRFRegion:
    """One box's region for ``crf_probabilities``: ``features`` the normalized intensities (C, *region),
    ``box_region_mask`` the voxels inside any box of the label, ``known_not`` those known not to be the label,
    ``prior`` the prior logits."""

    features: np.ndarray
    box_region_mask: np.ndarray
    known_not: np.ndarray
    prior: np.ndarray


PADDING_LIMIT = 2.0  # a batch's padded voxels stay within this factor of its regions' own voxels
MAX_BATCH_VOXELS = 2 ** 22  # and within this many (unless one region alone is larger)


def region_batches(shapes: list[tuple[int, ...]]) -> list[list[int]]:
    """Indices of regions grouped for one batched CRF call each: largest first, a region joins the current
    batch while padding every region to the batch's common shape keeps the voxels within ``PADDING_LIMIT``
    times the regions' own and within ``MAX_BATCH_VOXELS``, so memory stays proportional to the voxels and
    bounded by the largest region or that cap."""
    batches, current = [], []
    for index in sorted(range(len(shapes)), key=lambda i: -int(np.prod(shapes[i]))):
        trial = current + [index]
        padded = int(np.prod(np.max([shapes[i] for i in trial], axis=0))) * len(trial)
        if current and (padded > PADDING_LIMIT * sum(int(np.prod(shapes[i])) for i in trial)
                        or padded > MAX_BATCH_VOXELS):
            batches.append(current)
            trial = [index]
        current = trial
    return batches + ([current] if current else [])


def crf_probabilities(regions: list[CRFRegion], spacing_mm, parameters: PseudoMaskParameters,
                      device: str = "cpu") -> list[np.ndarray]:
    """Probability of the label for every voxel of each region (float32, 0 where it is known not to be): the
    prior logit plus the appearance model as unary, refined by the ConvCRF, ``rounds`` times. Regions are run
    in batches (``region_batches``), padded to a common shape that the CRF excludes."""
    results = [None] * len(regions)
    for batch in region_batches([r.prior.shape for r in regions]):
        for index, belief in zip(batch, _crf_batch([regions[i] for i in batch], spacing_mm, parameters, device)):
            results[index] = belief
    return results


def _crf_batch(regions: list[CRFRegion], spacing_mm, parameters: PseudoMaskParameters, device: str) -> list[np.ndarray]:
    shapes = [r.prior.shape for r in regions]
    shape = tuple(int(n) for n in np.max(shapes, axis=0))
    unknown = [(r.box_region_mask & ~r.known_not).astype(np.float32) for r in regions]
    beliefs = [1.0 / (1.0 + np.exp(-r.prior)) * u for r, u in zip(regions, unknown)]
    weights = [parameters.appearance_weight * float(u.sum()) / (float(u.sum()) + parameters.appearance_min_voxels)
               for u in unknown]
    fixed = torch.from_numpy(stack_padded([u == 0 for u in unknown], shape, True))[:, None].to(device)
    valid = None
    if any(tuple(s) != shape for s in shapes):  # padding: excluded from every kernel
        valid = torch.from_numpy(stack_padded([np.ones(s, bool) for s in shapes], shape, False))[:, None].to(device)
    features = torch.from_numpy(stack_padded([r.features for r in regions], shape, 0.0)).to(device)
    kernels = PairwiseKernels(features, valid, spacing_mm, parameters.crf)  # the same in every round
    for _ in range(max(1, parameters.rounds)):
        logits = []
        for region, u, belief, weight in zip(regions, unknown, beliefs, weights):
            logit = region.prior
            if weight:
                logit = region.prior + weight * appearance_log_ratio(
                    region.features, belief, u, region.known_not.astype(np.float32), parameters)
            logits.append(np.where(u > 0, logit, -30.0).astype(np.float32))
        logit = stack_padded(logits, shape, -30.0)
        unary = torch.from_numpy(np.stack([np.zeros_like(logit), logit], axis=1)).to(device)
        q = mean_field(unary, features, spacing_mm, parameters.crf, fixed=fixed, valid=valid,
                       kernels=kernels)[:, 1].cpu().numpy()
        beliefs = [q[index][tuple(slice(0, n) for n in s)] * u for index, (s, u) in enumerate(zip(shapes, unknown))]
    return beliefs


def tight_box_mask(probability: np.ndarray, candidates: np.ndarray, box: Box, region: tuple[slice, ...],
                   threshold: float, tightness: bool) -> np.ndarray:
    """The voxels of ``region`` whose ``probability`` exceeds ``threshold``, plus, with ``tightness``, the most
    probable of the ``candidates`` in every slice of the box (along each axis) that holds none of them."""
    chosen = probability > threshold
    if not tightness:
        return chosen
    inside = tuple(slice(lo - r.start, hi - r.start) for lo, hi, r in zip(box.min, box.max, region))
    box_chosen, box_candidates = chosen[inside], candidates[inside]
    score = np.where(box_candidates, probability[inside], -1.0)
    for axis in range(box_chosen.ndim):
        others = tuple(a for a in range(box_chosen.ndim) if a != axis)
        empty = ~box_chosen.any(axis=others) & box_candidates.any(axis=others)
        for index in np.flatnonzero(empty):
            plane = np.take(score, index, axis=axis)
            position = list(np.unravel_index(int(np.argmax(plane)), plane.shape))
            position.insert(axis, index)
            box_chosen[tuple(position)] = True
    return chosen


def assign_more_probable(result: np.ndarray, best: np.ndarray, region: tuple[slice, ...], chosen: np.ndarray,
                         probability: np.ndarray, label: int) -> None:
    """Give ``label`` to the ``chosen`` voxels of ``region`` whose ``probability`` beats ``best``, which then holds
    it: where boxes of different labels overlap, the more probable label wins."""
    take = chosen & (probability > best[region])
    best[region][take] = probability[take]
    result[region][take] = label


def map_prior(box: Box, region: tuple[slice, ...], localization_map: np.ndarray) -> np.ndarray:
    """Prior logit over ``region`` from a box-shaped localization map in [0, 1] ([Fan 2022]'s unary: the map for
    the label, 1 - map for background); 0 outside the box (those voxels are known not to be the label)."""
    prior = np.zeros(tuple(r.stop - r.start for r in region), dtype=np.float32)
    clipped = np.clip(localization_map, MAP_CLIP, 1 - MAP_CLIP)
    inside = tuple(slice(lo - r.start, hi - r.start) for lo, hi, r in zip(box.min, box.max, region))
    prior[inside] = np.log(clipped) - np.log1p(-clipped)
    return prior


def pseudo_masks(image: np.ndarray, spacing_mm, boxes: list[Box], box_labels: list[int],
                 dense_labels: np.ndarray | None = None, method: str = "convcrf",
                 parameters: PseudoMaskParameters | None = None, device: str = "cpu",
                 localization_maps: list[np.ndarray] | None = None) -> np.ndarray:
    """The training label map of one case: dense labels where given, box labels from the boxes.

    ``image`` is (C, z, y, x), ``dense_labels`` (z, y, x) holds the labels of other classes (0 where
    unknown; box labels in it are ignored) or None. With ``method="boxfill"`` every box voxel that is not
    densely labelled becomes its box's label; ``"convcrf"`` infers it (see the module docstring);
    ``"acol"`` refines ``localization_maps`` (one box-shaped map in [0, 1] per box, e.g. [Fan 2022]'s fused ACoL
    maps, boxunet.boxes.region_mining) with the ConvCRF, the map as the only unary (no appearance model, one
    round); ``"template"`` takes them as the shape prior in place of the ellipsoid, appearance model and
    rounds as with ``"convcrf"`` (a label's shape learned across cases, boxunet.boxes.shape_templates).
    Where boxes of different labels overlap, the more probable label wins.
    """
    if method not in METHODS:
        raise ValueError(f"unknown pseudo-mask method {method!r}; choose one of {METHODS}")
    parameters = parameters or PseudoMaskParameters()
    shape = image.shape[1:]
    result = np.zeros(shape, dtype=np.uint8)
    if dense_labels is not None:
        result[:] = np.where(np.isin(dense_labels, box_labels), 0, dense_labels)
    densely_known = result > 0
    best = np.zeros(shape, dtype=np.float32)
    if method in ("acol", "template") and (localization_maps is None or len(localization_maps) != len(boxes)):
        raise ValueError(f"method {method!r} needs one localization map per box")
    for label in box_labels:
        inside = box_mask(shape, boxes, label)
        label_boxes = [(i, b) for i, b in enumerate(boxes) if b.label == label]
        if method == "boxfill":
            regions = [box.slices for _, box in label_boxes]
            candidates = [~densely_known[region] for region in regions]
            probabilities = [c.astype(np.float32) for c in candidates]
        else:
            regions = [region_around(box, shape, spacing_mm, parameters.context_mm) for _, box in label_boxes]
            crf_regions, candidates = [], []
            for (index, box), region in zip(label_boxes, regions):
                known_not = densely_known[region] | ~inside[region]
                candidates.append(inside[region] & ~known_not)
                features = normalize_region(image[(slice(None),) + region], candidates[-1])
                prior = (map_prior(box, region, localization_maps[index]) if method in ("acol", "template")
                         else shape_prior(box, region, parameters))
                crf_regions.append(CRFRegion(features, inside[region], known_not, prior))
            # acol: the map is the only unary (no appearance model, one round)
            crf_parameters = replace(parameters, appearance_weight=0.0, rounds=1) if method == "acol" else parameters
            probabilities = crf_probabilities(crf_regions, spacing_mm, crf_parameters, device)
        for (_, box), region, candidate, probability in zip(label_boxes, regions, candidates, probabilities):
            chosen = tight_box_mask(probability, candidate, box, region, parameters.threshold, parameters.tightness)
            assign_more_probable(result, best, region, chosen, probability, label)
    return result
