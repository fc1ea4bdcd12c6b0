"""Stage 2 of the box trainer: fusion masks and voxel weight maps ([Yang 2020], Eq. 5 and 6).

For a case with stage-1 pseudo mask PM and the predictions P^1..P^K of the K group networks:

* votes_c = [PM = c] + sum_k [P^k = c], counted only inside the boxes of c (and not on densely
  labelled voxels);
* FM_c = ConvCRF(PM_c OR P^1_c OR ... OR P^K_c) (Eq. 5), the OR taken softly on the ConvCRF's prior.
  When stage 1 was the box ConvCRF, the prior is the one that made PM (stage 1's box prior; PM itself
  enters only through it and the weights) raised by ``NETWORK_LOGIT`` times the share of the K networks
  that say c. In a box region where no network says c, the ConvCRF gives PM again (up to floating-point
  differences); elsewhere the networks add evidence, weighed against the box prior and the image, and a
  network that misses an object cannot erase it. After any other stage 1 (boxfill, acol, template), whose prior is
  not known here, it is the union itself (``UNION_LOGIT`` inside it, minus that outside). The ConvCRF
  refines it like a stage-1 mask (appearance model, ConvCRF, tightness); outside the boxes of c the
  answer is fixed to not-c, and where boxes of different labels overlap the more probable label wins;
* v = sum_c votes_c, with v = K + 1 where v = 0 (Eq. 6): agreement of the K + 1 masks, and full weight
  where all of them say background.
"""
from typing import Callable

import numpy as np

from boxunet.boxes.pseudo_masks import (CRFRegion, PseudoMaskParameters, assign_more_probable, crf_probabilities,
                                        normalize_region, region_around, shape_prior, tight_box_mask)
from boxunet.io.boxes import Box, box_mask

NETWORK_LOGIT = 1.0  # added to stage 1's box prior where all K group networks say c (its share where some do)
UNION_LOGIT = 2.0  # the union's prior logit (+ inside, - outside) after a stage 1 other than the box ConvCRF


def vote_counts(pseudo_mask: np.ndarray, predictions: list[np.ndarray], label: int, inside: np.ndarray) -> np.ndarray:
    """How many of the K + 1 masks say ``label``, per voxel of ``inside`` (0 elsewhere), as int16."""
    votes = (pseudo_mask == label).astype(np.int16)
    for prediction in predictions:
        votes += prediction == label
    votes[~inside] = 0
    return votes


def weight_map(votes_per_label: list[np.ndarray], num_networks: int) -> np.ndarray:
    """Eq. 6: the summed votes, with K + 1 where no mask votes for a box label."""
    if not votes_per_label:
        raise ValueError("weight_map needs the votes of at least one box label")
    weights = np.sum(votes_per_label, axis=0).astype(np.int16)
    weights[weights == 0] = num_networks + 1
    return weights


PriorOfBox = Callable[[Box, tuple[slice, ...]], np.ndarray]


def network_share(predictions: list[np.ndarray], label: int, region: tuple[slice, ...]) -> np.ndarray:
    """The share of the K networks' label maps that say ``label``, per voxel of ``region`` (float32)."""
    share = np.zeros(tuple(r.stop - r.start for r in region), dtype=np.float32)
    for prediction in predictions:
        share += prediction[region] == label
    return share / max(len(predictions), 1)


def union_prior(votes: np.ndarray) -> PriorOfBox:
    """The union as a prior over a box's region: ``UNION_LOGIT`` where any mask votes for the label, minus it
    elsewhere."""
    return lambda box, region: np.where(votes[region] > 0, UNION_LOGIT, -UNION_LOGIT).astype(np.float32)


def box_prior_with_networks(predictions: list[np.ndarray], label: int,
                            parameters: PseudoMaskParameters) -> PriorOfBox:
    """Stage 1's box prior over a box's region plus ``NETWORK_LOGIT`` x the share of networks voting for the label."""
    return lambda box, region: (shape_prior(box, region, parameters)
                                + NETWORK_LOGIT * network_share(predictions, label, region)).astype(np.float32)


def fusion_prior(votes: np.ndarray, predictions: list[np.ndarray], label: int, parameters: PseudoMaskParameters,
                 stage1_method: str = "convcrf") -> PriorOfBox:
    """Eq. 5's prior for masks from ``stage1_method``: stage 1's box prior raised by the networks' votes after the
    box ConvCRF, else the union of the K + 1 masks (``votes``)."""
    if stage1_method == "convcrf":
        return box_prior_with_networks(predictions, label, parameters)
    return union_prior(votes)


def refine_prior(image: np.ndarray, spacing, prior_of: PriorOfBox, inside: np.ndarray, boxes: list[Box],
                 parameters: PseudoMaskParameters, label: int, result: np.ndarray, best: np.ndarray,
                 device: str = "cpu") -> None:
    """The ConvCRF refinement of ``label``, its boxes batched, with the stage-1 procedure (appearance model, CRF
    and tightness) and ``prior_of(box, region)`` as the prior logits of the box's region, written into the label
    map ``result`` as stage 1 does (``best`` holds each voxel's winning probability, so the more probable label
    wins where boxes of different labels overlap); voxels outside ``inside`` (the boxes of the label minus
    densely labelled voxels) are never the label."""
    regions = [(box, region_around(box, inside.shape, spacing, parameters.context_mm)) for box in boxes]
    regions = [(box, region) for box, region in regions if inside[region].any()]
    crf_regions = [CRFRegion(normalize_region(image[(slice(None),) + region], inside[region]), inside[region],
                             ~inside[region], prior_of(box, region)) for box, region in regions]
    for (box, region), probability in zip(regions, crf_probabilities(crf_regions, spacing, parameters, device)):
        chosen = tight_box_mask(probability, inside[region], box, region, parameters.threshold, parameters.tightness)
        assign_more_probable(result, best, region, chosen, probability, label)


def dense_label_map(dense_labels: np.ndarray, box_labels: list[int]) -> np.ndarray:
    """The trusted dense labels of a label map as int8: box labels and negative markers set to 0."""
    return np.where(np.isin(dense_labels, box_labels), 0, np.maximum(dense_labels, 0)).astype(np.int8)


def fusion_target(image: np.ndarray, spacing, dense_labels: np.ndarray, pseudo_mask: np.ndarray,
                  predictions: list[np.ndarray], boxes: list[Box], box_labels: list[int],
                  parameters: PseudoMaskParameters, device: str = "cpu",
                  stage1_method: str = "convcrf") -> tuple[np.ndarray, np.ndarray]:
    """Fusion label map (dense labels kept, box labels from Eq. 5) and weight map (Eq. 6) of one case.

    ``image`` is (C, z, y, x); ``dense_labels`` holds the dense labels only (box labels removed);
    ``pseudo_mask`` and ``predictions`` are label maps on the same grid; ``stage1_method`` is how the stage-1
    masks were made (``fusion_prior``), with ``parameters``.
    """
    fused = dense_label_map(dense_labels, box_labels)
    densely_known = fused > 0
    best = np.zeros(fused.shape, dtype=np.float32)
    all_votes = []
    for label in box_labels:
        inside = box_mask(fused.shape, boxes, label) & ~densely_known
        votes = vote_counts(pseudo_mask, predictions, label, inside)
        all_votes.append(votes)
        prior_of = fusion_prior(votes, predictions, label, parameters, stage1_method)
        refine_prior(image, spacing, prior_of, inside, [b for b in boxes if b.label == label], parameters, label,
                     fused, best, device)
    return fused, weight_map(all_votes, len(predictions))
