"""How much the shape of a box label in box coordinates explains, per label, against the dense labels.

For every training case with exactly one box of the label: the boxes' Dice; the mean of the stage-1 masks in
box coordinates (each box resampled to GRID voxels per axis), thresholded and put back into each case's box
(no dense label used); and the same with the dense labels of the *other* cases (leave one out: a ceiling
for any method that learns the shape across cases, not a method). documentation/box_supervision.md
("Results on MSD Hippocampus") reports it.

Usage: python benchmarks/box_shape_prior.py RAW_DATASET_FOLDER STAGE1_FOLDER [--grid 24] [--threshold 0.5]
"""
import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from boxunet.evaluation.metrics import dice
from boxunet.io.boxes import box_mask, read_boxes
from boxunet.io.dataset_json import load_dataset_json
from boxunet.io.images import read_image


def to_box_grid(mask: np.ndarray, box, grid: int) -> np.ndarray:
    """``mask`` inside ``box`` resampled to ``grid`` voxels per axis (linear interpolation)."""
    crop = mask[box.slices].astype(np.float32)
    return ndimage.zoom(crop, [grid / s for s in crop.shape], order=1)


def into_box(shape_map: np.ndarray, box, image_shape, threshold: float) -> np.ndarray:
    """A box-grid probability map put back into ``box`` of an image of ``image_shape``, thresholded."""
    resized = ndimage.zoom(shape_map, [s / g for s, g in zip(box.size, shape_map.shape)], order=1)
    mask = np.zeros(image_shape, bool)
    mask[box.slices] = resized[tuple(slice(0, s) for s in box.size)] > threshold
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path, help="the raw dataset folder (dataset.json, labelsTr, boxesTr)")
    parser.add_argument("stage1", type=Path, help="its stage-1 folder (pseudo_labels/stage1)")
    parser.add_argument("--grid", type=int, default=24)
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args()
    description = load_dataset_json(args.raw)
    cases = sorted(p.name[:-len(description.file_ending)] for p in (args.raw / "labelsTr").glob(f"*{description.file_ending}"))
    for label in description.box_labels:
        rows = []
        for case in cases:
            boxes = [b for b in read_boxes(args.raw / "boxesTr" / f"{case}.json") if b.label == label]
            if len(boxes) != 1:
                continue
            truth = read_image(args.raw / "labelsTr" / f"{case}{description.file_ending}")[0] == label
            stage1 = read_image(args.stage1 / f"{case}{description.file_ending}")[0] == label
            rows.append((boxes[0], truth, to_box_grid(truth, boxes[0], args.grid), to_box_grid(stage1, boxes[0], args.grid)))
        expert_sum = np.sum([row[2] for row in rows], 0)
        stage1_mean = np.mean([row[3] for row in rows], 0)
        scores = {"boxes": [], "stage1_mean_shape": [], "expert_mean_shape_leave_one_out": []}
        for box, truth, expert, _ in rows:
            scores["boxes"].append(dice(box_mask(truth.shape, [box]), truth))
            scores["stage1_mean_shape"].append(dice(into_box(stage1_mean, box, truth.shape, args.threshold), truth))
            others = (expert_sum - expert) / (len(rows) - 1)
            scores["expert_mean_shape_leave_one_out"].append(dice(into_box(others, box, truth.shape, args.threshold),
                                                                  truth))
        means = {name: round(float(np.mean(values)), 4) for name, values in scores.items()}
        print(f"label {label} ({len(rows)} cases): {means}")


if __name__ == "__main__":
    main()
