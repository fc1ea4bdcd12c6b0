"""Prototype: a network trained from boxes only across all cases, scored against the dense labels alone (without
the shape templates and ConvCRF that ``--method template`` adds). documentation/box_supervision.md ("Results on
MSD Hippocampus") reports its variants; boxunet.boxes.box_network is the one kept (log-mean-exp, emptiness 1).

A small U-Net (softmax over background and the box labels) sees each training case (its boxes are not an input)
and learns from:

* negatives: not label c outside every box of c;
* box tightness: every slice of a box of c, along each axis, holds c through a smooth maximum of its slice
  (``--bag logmeanexp``: (1/beta) log mean exp(beta log p); ``--bag alphasoftmax``: sum softmax(beta p) p);
* ``--emptiness L``: L x the mean probability of c inside the boxes of c;
* ``--tv W``: W x the image-weighted total variation of the label probabilities (a CRF-like pairwise term).

Cases are cropped to their boxes' union plus ``--crop-margin`` voxels (-1: the whole image) and zero-padded to
one size. Prediction: the most probable class, label c only inside c's boxes.

Usage: python benchmarks/box_mil_prototype.py RAW_DATASET_FOLDER [--iterations 400] [--bag logmeanexp]
       [--beta 4] [--emptiness 0] [--tv 0] [--crop-margin 6] [--features 16]
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch

from boxunet.boxes.box_network import BoxNetworkParameters, new_box_network, slice_log_maxima
from boxunet.evaluation.metrics import dice
from boxunet.io.boxes import Box, box_mask, read_boxes
from boxunet.io.dataset_json import load_dataset_json
from boxunet.io.images import read_image

BATCH = 4
TV_SIGMA = 0.5


def load_cases(raw: Path, crop_margin: int) -> list[dict]:
    """Every training case z-scored, cropped to its boxes' union plus ``crop_margin`` (-1: whole image)."""
    description = load_dataset_json(raw)
    cases = []
    for path in sorted((raw / "imagesTr").glob(f"*_0000{description.file_ending}")):
        case = path.name[:-len(f"_0000{description.file_ending}")]
        image = read_image(path)[0].astype(np.float32)
        image = (image - image.mean()) / (image.std() + 1e-6)
        label = read_image(raw / "labelsTr" / f"{case}{description.file_ending}")[0]
        boxes = read_boxes(raw / "boxesTr" / f"{case}.json")
        low = np.zeros(3, int) if crop_margin < 0 else np.maximum(np.min([b.min for b in boxes], 0) - crop_margin, 0)
        high = np.array(image.shape) if crop_margin < 0 else \
            np.minimum(np.max([b.max for b in boxes], 0) + crop_margin, image.shape)
        region = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
        shifted = [b.shifted(tuple(-int(o) for o in low)) for b in boxes]
        cases.append({"image": image[region], "label": label[region], "boxes": shifted})
    return cases


def padded(array: np.ndarray, shape, value) -> np.ndarray:
    out = np.full(shape, value, array.dtype)
    out[tuple(slice(0, s) for s in array.shape)] = array
    return out


def slice_bags(logp: torch.Tensor, box: Box, bag: str, beta: float) -> torch.Tensor:
    """The smooth maximum of every slice of ``box`` along each axis (all axes concatenated), in log space."""
    if bag == "logmeanexp":
        return slice_log_maxima(logp, box, beta)
    crop = logp[box.slices]
    values = []
    for axis in range(3):
        probabilities = crop.movedim(axis, 0).flatten(1).exp()
        values.append(torch.log((torch.softmax(beta * probabilities, 1) * probabilities).sum(1).clamp(min=1e-6)))
    return torch.cat(values)


def loss_of(logits, x, cases, labels, args) -> torch.Tensor:
    logp = torch.log_softmax(logits, 1)
    p = logp.exp()
    valid = torch.stack([torch.from_numpy(padded(np.ones(c["image"].shape, bool), x.shape[2:], False)) for c in cases])
    total = 0
    for channel, label in enumerate(labels, start=1):
        inside = torch.stack([torch.from_numpy(padded(box_mask(c["image"].shape, c["boxes"], label), x.shape[2:],
                                                      False)) for c in cases])
        outside = valid & ~inside
        total = total - (torch.log((1 - p[:, channel]).clamp(min=1e-6)) * outside).sum() / outside.sum()
        bags = [slice_bags(logp[b, channel], box, args.bag, args.beta)
                for b, case in enumerate(cases) for box in case["boxes"] if box.label == label]
        total = total - torch.cat(bags).mean()
        total = total + args.emptiness * (p[:, channel] * inside).sum() / inside.sum().clamp(min=1)
    for axis in (2, 3, 4):
        n = p.shape[axis]
        difference = (p.narrow(axis, 0, n - 1)[:, 1:] - p.narrow(axis, 1, n - 1)[:, 1:]).abs().sum(1, keepdim=True)
        both = valid[:, None].narrow(axis, 0, n - 1) & valid[:, None].narrow(axis, 1, n - 1)
        weight = torch.exp(-(x.narrow(axis, 0, n - 1) - x.narrow(axis, 1, n - 1)) ** 2 / (2 * TV_SIGMA ** 2)) * both
        total = total + args.tv * (difference * weight).sum() / both.sum() / 3
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--bag", choices=("logmeanexp", "alphasoftmax"), default="logmeanexp")
    parser.add_argument("--beta", type=float, default=4.0)
    parser.add_argument("--emptiness", type=float, default=0.0)
    parser.add_argument("--tv", type=float, default=0.0)
    parser.add_argument("--crop-margin", type=int, default=6)
    parser.add_argument("--features", type=int, default=16)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    labels = load_dataset_json(args.raw).box_labels
    cases = load_cases(args.raw, args.crop_margin)
    shape = tuple(int(-(-s // 8) * 8) for s in np.max([c["image"].shape for c in cases], 0))
    network = new_box_network(1, labels, BoxNetworkParameters(features=args.features))
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    start = time.perf_counter()
    for iteration in range(args.iterations):
        batch = [cases[i] for i in rng.integers(len(cases), size=BATCH)]
        x = np.stack([padded(c["image"] * rng.uniform(0.9, 1.1) + rng.normal(0, 0.1), shape, 0.0)[None] for c in batch])
        x = torch.from_numpy(x.astype(np.float32))
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * (1 - iteration / args.iterations) ** 0.9
        loss = loss_of(network(x), x, batch, labels, args)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    network.eval()
    scores = {label: [] for label in labels}
    with torch.no_grad():
        for case in cases:
            x = torch.from_numpy(padded(case["image"], shape, 0.0)[None, None])
            probabilities = torch.softmax(network(x), 1)[0].numpy()[(slice(None),) + tuple(slice(0, s) for s in case["image"].shape)]
            for channel, label in enumerate(labels, start=1):
                probabilities[channel][~box_mask(case["image"].shape, case["boxes"], label)] = 0
            prediction = probabilities.argmax(0)
            for channel, label in enumerate(labels, start=1):
                scores[label].append(dice(prediction == channel, case["label"] == label))
    print(f"{vars(args)}: training {time.perf_counter() - start:.0f} s; Dice per label "
          f"{ {label: round(float(np.mean(values)), 4) for label, values in scores.items()} }")


if __name__ == "__main__":
    main()
