"""[Fan 2022]'s region mining on slices: train the ACoL classifier (boxunet.nets.acol) on the annotated boxes
(positives) and anchors that overlap no box (negatives, boxunet.boxes.anchors), then read a localization map
for every box.

Each 2D slice along axis 0 that a box of the mined label crosses is one training image: its positives are the
boxes' in-slice rectangles, its negatives ``negatives`` anchors sampled as [Fan 2022] does. Images are
normalized per case and channel (clipped to the 0.5-99.5th percentiles, then zero mean and unit variance).
The loss is the cross-entropy of both ACoL branches, with the classes weighted inversely to their counts in
the batch: [Fan 2022] pairs each slice's few boxes with 256 negatives, and an unweighted loss would be content
to call everything background. Optimizer and rates are [Fan 2022]'s (SGD, momentum 0.9, weight decay 5e-4,
learning rate 1e-3, batches of 8 slices); its 50 epochs are the default.
"""
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from boxunet.boxes.anchors import NEGATIVE_SAMPLES, box_level, sample_negatives
from boxunet.boxes.padding import stack_padded
from boxunet.errors import BoxunetError
from boxunet.io.boxes import Box
from boxunet.io.checkpoint import save_checkpoint
from boxunet.nets.acol import HIDDEN_CHANNELS, ROI_SIZE, SALIENT_THRESHOLD, RegionMiner

SIZE_MULTIPLE = 32  # slices are padded to a multiple of the coarsest stride


@dataclass(frozen=True)
class RegionMiningParameters:
    """Everything that decides the region miner (stored with it and in the reports)."""

    epochs: int = 50
    batch_size: int = 8
    learning_rate: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    negatives: int = NEGATIVE_SAMPLES
    salient_threshold: float = SALIENT_THRESHOLD
    pyramid_channels: int = 64
    hidden_channels: int = HIDDEN_CHANNELS
    roi_size: int = ROI_SIZE
    max_slices_per_box: int = 16  # evenly spaced over the box: bounds the memory of the training slices
    seed: int = 12345

    def __post_init__(self):
        positive = ("epochs", "batch_size", "learning_rate", "pyramid_channels", "hidden_channels", "roi_size",
                    "max_slices_per_box")
        bad = [name for name in positive if not getattr(self, name) > 0]
        bad += [name for name in ("momentum", "weight_decay", "negatives") if getattr(self, name) < 0]
        bad += [] if 0 < self.salient_threshold < 1 else ["salient_threshold"]
        if bad:
            raise ValueError(f"out of range: {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)} (positive sizes "
                             "and rates, non-negative momentum, weight decay and negatives, salient_threshold in (0, 1))")

    def to_json(self) -> dict:
        return asdict(self)


def normalize_channels(image: np.ndarray) -> np.ndarray:
    """float32 ``(C, *shape)``: each channel clipped to its 0.5-99.5th percentiles, zero mean, unit variance."""
    result = np.empty(image.shape, dtype=np.float32)
    for index, channel in enumerate(np.asarray(image, dtype=np.float32)):
        low, high = np.percentile(channel, [0.5, 99.5])
        clipped = np.clip(channel, low, high)
        result[index] = (clipped - clipped.mean()) / max(float(clipped.std()), 1e-6)
    return result


def slice_rectangles(boxes: list[Box], label: int, index: int) -> np.ndarray:
    """``(M, 4)`` in-slice rectangles ``[y0, x0, y1, x1]`` of the boxes of ``label`` crossing slice ``index``."""
    rectangles = [[b.min[1], b.min[2], b.max[1], b.max[2]] for b in boxes
                  if b.label == label and b.min[0] <= index < b.max[0]]
    return np.asarray(rectangles, dtype=np.float64).reshape(-1, 4)


def training_slices(image: np.ndarray, boxes: list[Box], label: int,
                    max_slices_per_box: int = 16) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(slice (C, H, W) float16, rectangles (M, 4))`` for the slices of a normalized case ``(C, Z, H, W)``
    crossed by boxes of ``label``: at most ``max_slices_per_box`` per box, evenly spaced over it."""
    indices = set()
    for box in (b for b in boxes if b.label == label):
        count = min(box.size[0], max_slices_per_box)
        indices.update(np.linspace(box.min[0], box.max[0] - 1, count).round().astype(int).tolist())
    return [(image[:, z].astype(np.float16), slice_rectangles(boxes, label, z)) for z in sorted(indices)]


def _pad_batch(slices: list[np.ndarray]) -> torch.Tensor:
    """The slices ``(C, H, W)`` zero-padded at the end to a common size, a multiple of ``SIZE_MULTIPLE``."""
    size = tuple(int(np.ceil(max(s.shape[axis] for s in slices) / SIZE_MULTIPLE) * SIZE_MULTIPLE) for axis in (1, 2))
    return torch.from_numpy(stack_padded(slices, size, 0.0, np.float32))  # float16 slices come back to 32


def _batch_targets(samples: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator,
                   negatives: int) -> tuple[list[int], list[int], list[np.ndarray], list[int]]:
    """Image index, pyramid level, rectangle and class (1 box, 0 negative anchor) of every sample of a batch."""
    rows = []  # (image index, level, rectangle, class)
    for index, (image, positives) in enumerate(samples):
        rows += [(index, box_level(rectangle), rectangle, 1) for rectangle in positives]
        rows += [(index, level, anchor, 0) for level, anchor in sample_negatives(image.shape[1:], positives, rng,
                                                                                 negatives)]
    image_index, levels, rectangles, classes = (list(column) for column in zip(*rows))
    return image_index, levels, rectangles, classes


def balanced_cross_entropy(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with each class weighted by the inverse of its count among ``classes``."""
    counts = torch.bincount(classes, minlength=2).float()
    weights = torch.where(counts > 0, counts.sum() / (2 * counts.clamp_min(1)), torch.zeros_like(counts))
    return F.cross_entropy(logits.float(), classes, weight=weights.to(logits.device))


def train_region_miner(samples: list[tuple[np.ndarray, np.ndarray]], in_channels: int,
                       parameters: RegionMiningParameters, device: torch.device = torch.device("cpu"),
                       log=None) -> tuple[RegionMiner, list[float]]:
    """Train the ACoL classifier on ``samples`` (``training_slices`` of every case); the trained network
    (eval mode) and the mean loss of every epoch."""
    torch.manual_seed(parameters.seed)
    rng = np.random.default_rng(parameters.seed)
    miner = RegionMiner(in_channels, parameters.pyramid_channels, parameters.roi_size, parameters.salient_threshold,
                        parameters.hidden_channels).to(device)
    optimizer = torch.optim.SGD(miner.parameters(), lr=parameters.learning_rate, momentum=parameters.momentum,
                                weight_decay=parameters.weight_decay)
    losses = []
    miner.train()
    for epoch in range(parameters.epochs):
        order, epoch_losses = rng.permutation(len(samples)), []
        for first in range(0, len(order), parameters.batch_size):
            batch = [samples[i] for i in order[first:first + parameters.batch_size]]
            image_index, levels, rectangles, classes = _batch_targets(batch, rng, parameters.negatives)
            outputs = miner(_pad_batch([image for image, _ in batch]).to(device),
                            torch.tensor(image_index, device=device), torch.tensor(levels, device=device),
                            torch.tensor(np.asarray(rectangles), dtype=torch.float32, device=device))
            target = torch.tensor(classes, device=device)
            loss = balanced_cross_entropy(outputs["logits_a"], target) + \
                balanced_cross_entropy(outputs["logits_b"], target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_losses.append(float(loss.detach()))
        losses.append(float(np.mean(epoch_losses)))
        if log is not None:
            log(f"region miner epoch {epoch}: loss {losses[-1]:.4f}")
    return miner.eval(), losses


@torch.no_grad()
def box_maps(miner: RegionMiner, image: np.ndarray, box: Box, device: torch.device = torch.device("cpu"),
             chunk: int = 8) -> dict[str, np.ndarray]:
    """The fused (ACoL) and branch-A (CAM) localization maps of one box of a normalized case ``(C, Z, H, W)``:
    per slice of the box, the map bilinearly resized to the box's rectangle; ``{"fused", "cam"}``, each
    float32 of the box's shape, in [0, 1]. Slices go through the network ``chunk`` at a time."""
    rectangle = torch.tensor([[box.min[1], box.min[2], box.max[1], box.max[2]]], dtype=torch.float32)
    level = box_level(rectangle[0].tolist())
    maps = {"fused": [], "cam": []}
    for first in range(box.min[0], box.max[0], chunk):
        slices = range(first, min(first + chunk, box.max[0]))
        outputs = miner(_pad_batch([image[:, z] for z in slices]).to(device),
                        torch.arange(len(slices), device=device), torch.full((len(slices),), level, device=device),
                        rectangle.expand(len(slices), 4).to(device))
        for key, name in (("fused", "fused"), ("cam", "map_a")):
            resized = F.interpolate(outputs[name][:, None].float(), size=box.size[1:], mode="bilinear",
                                    align_corners=False)
            maps[key].append(resized[:, 0].clamp(0, 1).cpu().numpy())
    return {key: np.concatenate(values) for key, values in maps.items()}


def save_region_miner(miner: RegionMiner, settings: dict, losses: list[float], path: Path) -> None:
    """Store a trained miner with the ``settings`` it was trained with (``settings["mining"]``: its parameters)
    and its training losses per epoch."""
    save_checkpoint({"network_weights": miner.state_dict(), "settings": settings, "losses": losses}, path)


def stored_region_miner(path: Path) -> tuple[dict, list[float]] | None:
    """The settings a stored miner was trained with and its losses; None when there is no readable miner (it
    is then trained again)."""
    if not Path(path).is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state["settings"], list(state["losses"])
    except Exception:  # corrupt or foreign: trained again
        return None


def load_region_miner(path: Path, in_channels: int, device: torch.device) -> RegionMiner:
    """A stored miner in eval mode; a clear error when the file is missing or corrupt."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        parameters = RegionMiningParameters(**state["settings"]["mining"])
        miner = RegionMiner(in_channels, parameters.pyramid_channels, parameters.roi_size,
                            parameters.salient_threshold, parameters.hidden_channels)
        miner.load_state_dict(state["network_weights"])
    except Exception as error:
        raise BoxunetError(f"region miner {path} cannot be loaded ({type(error).__name__}); delete it and rerun "
                           "boxunet_pseudo_labels --method acol to train it again") from None
    return miner.to(device).eval()
