"""[Fan 2022]'s region mining on slices: train the ACoL classifier (boxunet.nets.acol) on the annotated boxes
(positives) and anchors that overlap no box (negatives, boxunet.boxes.anchors), then read a localization map
for every box.

Each 2D slice along axis 0 that a box of the mined label crosses is one training image: its positives are the
boxes' in-slice rectangles, its negatives ``negatives`` anchors sampled as [Fan 2022] does. Images are
normalized per case and channel (clipped to the 0.5-99.5th percentiles, then zero mean and unit variance).
The loss is the cross-entropy of both ACoL branches, with the classes weighted inversely to their counts in
the batch: [Fan 2022] pairs each slice's few boxes with 256 negatives, and an unweighted loss would be content
to call everything background. Optimizer and rates are [Fan 2022]'s (SGD, momentum 0.9, weight decay 5e-4,
learning rate 1e-3, batches of 8 slices); the miner's size and length default to the ``cpu`` preset, measured on
2 CPU cores, and [Fan 2022]'s are the ``fan2022`` preset.
"""
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from boxunet.boxes.anchors import NEGATIVE_SAMPLES, box_level, sample_negatives
from boxunet.boxes.padding import stack_padded
from boxunet.errors import BoxunetError
from boxunet.io.boxes import Box
from boxunet.io.checkpoint import save_checkpoint
from boxunet.nets.acol import HIDDEN_CHANNELS, ROI_SIZE, SALIENT_THRESHOLD, RegionMiner
from boxunet.nets.precision import PRECISIONS, autocast, resolve_precision

SIZE_MULTIPLE = 32  # slices are padded to a multiple of the coarsest stride


# The seed's settings ([Fan 2022]: 50 epochs, 256 negatives per slice, 512-channel classifiers), for GPUs; on 2 CPU
# cores an epoch of 40 CT cases takes about 18 minutes with them (documentation/box_supervision.md).
FAN2022 = {"epochs": 50, "negatives": NEGATIVE_SAMPLES, "hidden_channels": HIDDEN_CHANNELS, "max_slices_per_box": 16,
           "patience": 0}
PRESETS = ("cpu", "fan2022")


@dataclass(frozen=True)
class RegionMiningParameters:
    """Everything that decides the region miner (stored with it and in the reports). The defaults are the ``cpu``
    preset, sized by measurement for 2 CPU cores (documentation/box_supervision.md); ``fan2022`` is the seed's."""

    epochs: int = 12
    batch_size: int = 8
    learning_rate: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    negatives: int = 32
    salient_threshold: float = SALIENT_THRESHOLD
    pyramid_channels: int = 64
    hidden_channels: int = 128
    roi_size: int = ROI_SIZE
    max_slices_per_box: int = 8  # evenly spaced over the box: bounds the memory and the time of an epoch
    patience: int = 3  # stop when the epoch loss has not fallen by min_improvement for this many epochs (0: never)
    min_improvement: float = 0.02  # relative to the best epoch loss so far
    precision: str = "auto"  # autocast of training and maps, as boxunet_train's --precision
    seed: int = 12345

    def __post_init__(self):
        integers = ("epochs", "batch_size", "negatives", "pyramid_channels", "hidden_channels", "roi_size",
                    "max_slices_per_box", "patience", "seed")
        wrong_type = [name for name in integers if type(getattr(self, name)) is not int]
        wrong_type += [name for name in ("learning_rate", "momentum", "weight_decay", "salient_threshold",
                                         "min_improvement") if type(getattr(self, name)) not in (int, float)]
        if wrong_type:
            raise ValueError(f"wrong type: {', '.join(f'{n}={getattr(self, n)!r}' for n in wrong_type)} (integers: "
                             f"{', '.join(integers)}; the others are numbers)")
        positive = ("epochs", "batch_size", "learning_rate", "pyramid_channels", "hidden_channels", "roi_size",
                    "max_slices_per_box")
        bad = [name for name in positive if not getattr(self, name) > 0]
        bad += [name for name in ("momentum", "weight_decay", "negatives", "patience", "min_improvement")
                if getattr(self, name) < 0]
        bad += [] if 0 < self.salient_threshold < 1 else ["salient_threshold"]
        bad += [] if self.min_improvement < 1 else ["min_improvement"]
        bad += [] if self.seed >= 0 else ["seed"]
        bad += [] if self.precision in PRECISIONS else ["precision"]
        if bad:
            raise ValueError(f"out of range: {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)} (positive sizes "
                             "and rates; non-negative momentum, weight decay, negatives, patience and seed; "
                             f"salient_threshold in (0, 1), min_improvement in [0, 1), precision one of "
                             f"{', '.join(PRECISIONS)})")

    @classmethod
    def from_options(cls, options: dict) -> "RegionMiningParameters":
        """The parameters of ``options["preset"]`` (``cpu`` when absent) with the other given fields changed."""
        if not isinstance(options, dict):
            raise ValueError("must be a JSON object of parameter names and values")
        options = dict(options)
        preset = options.pop("preset", "cpu")
        if preset not in PRESETS:
            raise ValueError(f"preset {preset!r}: choose one of {', '.join(PRESETS)}")
        return cls(**({**FAN2022, **options} if preset == "fan2022" else options))

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
                    max_slices_per_box: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
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


def _flat(losses: list[float], patience: int, min_improvement: float) -> bool:
    """Whether the last ``patience`` epoch losses all failed to fall ``min_improvement`` (relative) below the best
    loss before them."""
    if patience == 0 or len(losses) <= patience:
        return False
    best_before = min(losses[:-patience])
    return min(losses[-patience:]) > best_before * (1 - min_improvement)


def train_region_miner(samples: list[tuple[np.ndarray, np.ndarray]], in_channels: int,
                       parameters: RegionMiningParameters, device: torch.device = torch.device("cpu"),
                       progress: bool = False, name: str = "region miner") -> tuple[RegionMiner, list[float]]:
    """Train the ACoL classifier on ``samples`` (``training_slices`` of every case) in the precision training uses
    on ``device`` (boxunet.nets.precision), with a progress bar over the iterations; stop early when the epoch
    loss has flattened (``patience``). The trained network (eval mode) and the mean loss of every epoch."""
    torch.manual_seed(parameters.seed)
    rng = np.random.default_rng(parameters.seed)
    miner = RegionMiner(in_channels, parameters.pyramid_channels, parameters.roi_size, parameters.salient_threshold,
                        parameters.hidden_channels).to(device)
    optimizer = torch.optim.SGD(miner.parameters(), lr=parameters.learning_rate, momentum=parameters.momentum,
                                weight_decay=parameters.weight_decay)
    precision = resolve_precision(device, parameters.precision)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    batches = -(-len(samples) // parameters.batch_size)
    losses = []
    miner.train()
    with tqdm(total=parameters.epochs * batches, desc=name, unit="it", disable=not progress, leave=False) as bar:
        for epoch in range(parameters.epochs):
            order, epoch_losses = rng.permutation(len(samples)), []
            for first in range(0, len(order), parameters.batch_size):
                batch = [samples[i] for i in order[first:first + parameters.batch_size]]
                image_index, levels, rectangles, classes = _batch_targets(batch, rng, parameters.negatives)
                with autocast(device, precision):  # the loss runs in float32
                    outputs = miner(_pad_batch([image for image, _ in batch]).to(device),
                                    torch.tensor(image_index, device=device), torch.tensor(levels, device=device),
                                    torch.tensor(np.asarray(rectangles), dtype=torch.float32, device=device))
                target = torch.tensor(classes, device=device)
                loss = balanced_cross_entropy(outputs["logits_a"], target) + \
                    balanced_cross_entropy(outputs["logits_b"], target)
                optimizer.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    optimizer.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                epoch_losses.append(float(loss.detach()))
                bar.update()
                bar.set_postfix(epoch=f"{epoch + 1}/{parameters.epochs}", loss=f"{np.mean(epoch_losses):.4f}")
            losses.append(float(np.mean(epoch_losses)))
            if _flat(losses, parameters.patience, parameters.min_improvement):
                break
    if progress:
        print(f"{name}: {len(losses)} epoch(s) of {batches} iteration(s) ({precision}), loss {losses[0]:.4f} -> "
              f"{losses[-1]:.4f}" + (" (stopped: the loss had flattened)" if len(losses) < parameters.epochs else ""))
    return miner.eval(), losses


@torch.no_grad()
def box_maps(miner: RegionMiner, image: np.ndarray, box: Box, device: torch.device = torch.device("cpu"),
             chunk: int = 8, precision: str = "auto") -> dict[str, np.ndarray]:
    """The fused (ACoL) and branch-A (CAM) localization maps of one box of a normalized case ``(C, Z, H, W)``:
    per slice of the box, the map bilinearly resized to the box's rectangle; ``{"fused", "cam"}``, each
    float32 of the box's shape, in [0, 1]. Slices go through the network ``chunk`` at a time, in ``precision``
    (boxunet.nets.precision) on ``device``."""
    rectangle = torch.tensor([[box.min[1], box.min[2], box.max[1], box.max[2]]], dtype=torch.float32)
    level = box_level(rectangle[0].tolist())
    maps, precision = {"fused": [], "cam": []}, resolve_precision(device, precision)
    for first in range(box.min[0], box.max[0], chunk):
        slices = range(first, min(first + chunk, box.max[0]))
        with autocast(device, precision):
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


def load_region_miner(path: Path, in_channels: int,
                      device: torch.device) -> tuple[RegionMiner, RegionMiningParameters]:
    """A stored miner in eval mode and the parameters it was trained with; a clear error when the file is missing or
    corrupt."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        parameters = RegionMiningParameters(**state["settings"]["mining"])
        miner = RegionMiner(in_channels, parameters.pyramid_channels, parameters.roi_size,
                            parameters.salient_threshold, parameters.hidden_channels)
        miner.load_state_dict(state["network_weights"])
    except Exception as error:
        raise BoxunetError(f"region miner {path} cannot be loaded ({type(error).__name__}); delete it and rerun "
                           "boxunet_pseudo_labels --method acol to train it again") from None
    return miner.to(device).eval(), parameters
