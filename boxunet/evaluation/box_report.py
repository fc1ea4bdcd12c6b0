"""How good box-derived masks are: Dice of the boxes and of masks made from them (stage-1 pseudo masks,
stage-2 fusion masks, localization maps) against dense reference labels, per case and box label, and their
means ([Yang 2020]'s Table 1). Stage 1's report.json
(boxunet.boxes.stage1) and the box trainers' box_report.json are both made here."""
from typing import Iterable, NamedTuple

import numpy as np

from boxunet.evaluation.metrics import dice
from boxunet.io.boxes import Box, box_mask


def box_label_scores(reference: np.ndarray | None, boxes: list[Box], label: int,
                     masks: dict[str, np.ndarray]) -> dict:
    """For box label ``label`` of one case: its number of boxes and, when ``reference`` holds the label, the Dice
    of the boxes (``dice_boxes``) and of every mask of ``masks`` (name -> boolean mask: ``dice_<name>``)."""
    scores = {"boxes": sum(1 for box in boxes if box.label == label)}
    if reference is not None and (reference == label).any():
        truth = reference == label
        scores["dice_boxes"] = dice(box_mask(truth.shape, list(boxes), label), truth)
        scores.update({f"dice_{name}": dice(mask, truth) for name, mask in masks.items()})
    return scores


def mean_scores(entries: list[dict], keys: Iterable[str]) -> dict:
    """Per key of ``keys`` that some entry has: the mean of its values (NaN left out), rounded to 4 digits."""
    means = {}
    for key in keys:
        values = [entry[key] for entry in entries if key in entry and not np.isnan(entry[key])]
        if values:
            means[key] = round(float(np.mean(values)), 4)
    return means


class BoxMasks(NamedTuple):
    """One case's masks to score: the reference label map (None without one), the stage-1 label map, the fusion
    label map (None without stage 2) and the boxes, all on one grid."""

    case_id: str
    reference: np.ndarray | None
    stage1: np.ndarray
    fusion: np.ndarray | None
    boxes: list[Box]


def box_report(cases: Iterable[BoxMasks], box_labels: list[int], seconds: dict[str, dict]) -> dict:
    """Per case and box label the scores of the boxes, the stage-1 and the fusion masks (``box_label_scores``) and
    the seconds each stage took (``seconds``: case id -> {"stage1": s, "fusion": s}, as recorded); their means."""
    rows = []
    for case in cases:
        row = {"case_id": case.case_id, "seconds": seconds.get(case.case_id, {})}
        for label in box_labels:
            masks = {"stage1": case.stage1 == label}
            if case.fusion is not None:
                masks["fusion"] = case.fusion == label
            row[str(label)] = box_label_scores(case.reference, case.boxes, label, masks)
        rows.append(row)
    means = {str(label): mean_scores([row[str(label)] for row in rows], ("dice_boxes", "dice_stage1", "dice_fusion"))
             for label in box_labels}
    stage_seconds = {stage: round(float(np.mean([row["seconds"][stage] for row in rows if stage in row["seconds"]])), 3)
                     for stage in ("stage1", "fusion") if any(stage in row["seconds"] for row in rows)}
    return {"seconds_per_case": stage_seconds, "mean": means, "cases": rows}


def box_table(report: dict, label_names: dict[int, str], test_summary: dict | None = None) -> list[str]:
    """Lines of a table per box label: the mean Dice of the boxes, stage-1 and fusion masks of a box trainer's
    ``report`` (``box_report``) and, given an evaluation ``test_summary`` (boxunet_evaluate), the test Dice of
    the trained model; "-" where a figure is missing."""
    def number(value) -> str:
        return "-" if value is None or np.isnan(value) else f"{value:.3f}"

    columns = ["boxes", "stage-1 masks", "fusion masks"] + (["test, trained model"] if test_summary else [])
    names = {label: label_names.get(int(label), f"label {label}") for label in report["mean"]}
    width = max([len("label")] + [len(name) for name in names.values()])
    lines = [f"{'label':<{width}}  " + "  ".join(columns)]
    for label, means in report["mean"].items():
        values = [means.get("dice_boxes"), means.get("dice_stage1"), means.get("dice_fusion")]
        if test_summary:
            values.append(test_summary["mean"].get(label, {}).get("Dice"))
        cells = [f"{number(value):>{len(column)}}" for value, column in zip(values, columns)]
        lines.append(f"{names[label]:<{width}}  " + "  ".join(cells))
    return lines
