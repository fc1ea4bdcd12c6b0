"""``boxunet_pseudo_labels --tune``: choose the pseudo-mask parameters on cases with dense reference labels.

Coordinate search: each parameter of ``SEARCH_SPACE`` in turn takes the value (from its list) that
maximizes the mean Dice of the pseudo masks against the reference labels of the box labels, the others
held at their current values. The cases are cropped to their boxes plus the CRF context once and kept
in memory.
"""
from dataclasses import replace

import numpy as np

from boxunet.boxes.pseudo_masks import PseudoMaskParameters, pseudo_masks
from boxunet.boxes.stage1 import PseudoLabelRequest, plan_jobs
from boxunet.errors import BoxunetError
from boxunet.evaluation.metrics import dice
from boxunet.io.images import read_channels, read_image

SEARCH_SPACE = {
    "crf.pairwise_weight": [2.0, 4.0, 6.0, 8.0],
    "crf.intensity_sigma": [0.15, 0.25, 0.4],
    "appearance_weight": [0.0, 0.5, 1.0, 2.0],
    "shape_weight": [2.0, 4.0, 6.0],
}


def _with(parameters: PseudoMaskParameters, name: str, value: float) -> PseudoMaskParameters:
    if name.startswith("crf."):
        return replace(parameters, crf=replace(parameters.crf, **{name[4:]: value}))
    return replace(parameters, **{name: value})


def _cropped_case(job, context_mm: float):
    """Image, spacing, shifted boxes and labels of one case cropped to its boxes plus ``context_mm``."""
    image, geometry = read_channels(list(job.case.images))
    labels = read_image(job.case.label)[0]
    boxes = list(job.boxes)
    margins = [int(np.ceil(context_mm / s)) + 1 for s in geometry.spacing]
    lower = [max(0, min(b.min[a] for b in boxes) - margins[a]) for a in range(3)]
    upper = [min(n, max(b.max[a] for b in boxes) + margins[a]) for a, n in enumerate(labels.shape)]
    crop = tuple(slice(lo, hi) for lo, hi in zip(lower, upper))
    shifted = [b.shifted(tuple(-lo for lo in lower)) for b in boxes]
    return image[(slice(None),) + crop], geometry.spacing, shifted, labels[crop]


def _score(cases, box_labels, parameters: PseudoMaskParameters, device: str) -> float:
    scores = []
    for image, spacing, boxes, labels in cases:
        result = pseudo_masks(image, spacing, boxes, box_labels, labels, "convcrf", parameters, device)
        scores += [dice(result == label, labels == label) for label in box_labels if (labels == label).any()]
    return float(np.mean(scores))


def tune_parameters(request: PseudoLabelRequest, max_cases: int = 10) -> PseudoLabelRequest:
    """The request with the parameters that give the best mean pseudo-mask Dice on up to ``max_cases`` cases."""
    if request.method != "convcrf":
        raise BoxunetError("--tune applies to --method convcrf only")
    _, jobs = plan_jobs(request)
    usable = [job for job in jobs if job.case.label is not None and job.reference_labels and job.boxes]
    if not usable:
        raise BoxunetError("--tune needs cases whose label maps hold the box labels (dense references); "
                           "this dataset has none: run without --tune (the documented defaults)")
    cases = [_cropped_case(job, request.parameters.context_mm) for job in usable[:max_cases]]
    box_labels = list(usable[0].box_labels)
    best = usable[0].parameters  # as plan_jobs resolved them (no tightness rule for boxes with a margin)
    best_score = _score(cases, box_labels, best, request.device)
    history = [{"parameters": "start", "dice": round(best_score, 4)}]
    for name, values in SEARCH_SPACE.items():
        for value in values:
            candidate = _with(best, name, value)
            if candidate == best:
                continue
            score = _score(cases, box_labels, candidate, request.device)
            history.append({"parameters": f"{name}={value}", "dice": round(score, 4)})
            if score > best_score:
                best, best_score = candidate, score
    if request.progress:
        print(f"--tune on {len(cases)} case(s): mean Dice {history[0]['dice']} -> {round(best_score, 4)}")
    # the cases the parameters were picked on: their Dice in report.json is optimistic
    tuned_on = [job.case.case_id for job in usable[:max_cases]]
    return replace(request, parameters=best, tuning={"cases": tuned_on, "dice": round(best_score, 4),
                                                     "history": history})
