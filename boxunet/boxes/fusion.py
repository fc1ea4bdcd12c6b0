"""Stage 2 of the box trainer: fusion masks and voxel weight maps (seed 000, Eq. 5 and 6).

For a case with stage-1 pseudo mask PM and the predictions P^1..P^K of the K group networks:

* votes_c = [PM = c] + sum_k [P^k = c], counted only inside the boxes of c (and not on densely
  labelled voxels);
* FM_c = ConvCRF(PM_c OR P^1_c OR ... OR P^K_c) (Eq. 5): the union is the prior (``UNION_LOGIT`` inside
  it, minus that outside it, within the boxes), refined like a stage-1 mask (appearance model and
  ConvCRF on the image); outside the boxes of c the answer is fixed to not-c;
* v = sum_c votes_c, with v = K + 1 where v = 0 (Eq. 6): agreement of the K + 1 masks, and full weight
  where all of them say background.
"""
from typing import Callable

import numpy as np

from boxunet.boxes.pseudo_masks import (CRFRegion, PseudoMaskParameters, crf_probabilities, normalize_region,
                                        region_around, tight_box_mask)
from boxunet.boxes.from_labels import box_mask
from boxunet.io.boxes import Box

UNION_LOGIT = 2.0


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


def union_prior(votes: np.ndarray) -> PriorOfBox:
    """Eq. 5's prior over a box's region: ``UNION_LOGIT`` where any mask votes for the label, minus that elsewhere."""
    return lambda box, region: np.where(votes[region] > 0, UNION_LOGIT, -UNION_LOGIT).astype(np.float32)


def refine_prior(image: np.ndarray, spacing, prior_of: PriorOfBox, inside: np.ndarray, boxes: list[Box],
                 parameters: PseudoMaskParameters, device: str = "cpu") -> np.ndarray:
    """The ConvCRF refinement of one label, its boxes batched, with the stage-1 procedure (appearance model, CRF
    and tightness) and ``prior_of(box, region)`` as the prior logits of the box's region; voxels outside
    ``inside`` (the boxes of the label minus densely labelled voxels) are never the label."""
    result = np.zeros(inside.shape, dtype=bool)
    regions = [(box, region_around(box, inside.shape, spacing, parameters.context_mm)) for box in boxes]
    regions = [(box, region) for box, region in regions if inside[region].any()]
    crf_regions = [CRFRegion(normalize_region(image[(slice(None),) + region], inside[region]), inside[region],
                             ~inside[region], prior_of(box, region)) for box, region in regions]
    for (box, region), probability in zip(regions, crf_probabilities(crf_regions, spacing, parameters, device)):
        result[region] |= tight_box_mask(probability, inside[region], box, region, parameters.threshold,
                                         parameters.tightness)
    return result


def dense_label_map(dense_labels: np.ndarray, box_labels: list[int]) -> np.ndarray:
    """The trusted dense labels of a label map as int8: box labels and negative markers set to 0."""
    return np.where(np.isin(dense_labels, box_labels), 0, np.maximum(dense_labels, 0)).astype(np.int8)


def fusion_target(image: np.ndarray, spacing, dense_labels: np.ndarray, pseudo_mask: np.ndarray,
                  predictions: list[np.ndarray], boxes: list[Box], box_labels: list[int],
                  parameters: PseudoMaskParameters, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Fusion label map (dense labels kept, box labels from Eq. 5) and weight map (Eq. 6) of one case.

    ``image`` is (C, z, y, x); ``dense_labels`` holds the dense labels only (box labels removed);
    ``pseudo_mask`` and ``predictions`` are label maps on the same grid.
    """
    fused = dense_label_map(dense_labels, box_labels)
    densely_known = fused > 0
    all_votes = []
    for label in box_labels:
        inside = box_mask(fused.shape, boxes, label) & ~densely_known
        votes = vote_counts(pseudo_mask, predictions, label, inside)
        all_votes.append(votes)
        label_boxes = [b for b in boxes if b.label == label]
        refined = refine_prior(image, spacing, union_prior(votes), inside, label_boxes, parameters, device)
        fused[refined & (fused == 0)] = label
    return fused, weight_map(all_votes, len(predictions))
