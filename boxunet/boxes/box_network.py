"""A network trained from boxes only, on every training case at once (the first step of ``--method template``).

A small U-Net (softmax over background and the box labels) sees each case cropped around its boxes (the boxes are
not an input) and learns from three terms per box label c:

* outside every box of c the voxel is not c (cross-entropy on 1 - p_c);
* box tightness as a multiple-instance loss ([Hsu 2019]): every slice of a box of c, along each axis, holds c,
  through a smooth maximum of log p_c over the slice, (1/beta) log mean exp(beta log p_c);
* emptiness: ``emptiness`` x the mean p_c inside the boxes of c, which keeps the network from painting whole boxes.

Alone, such a network marks the structure of a box in stripes (tightness and emptiness are met by any thin
structure); averaged in box coordinates over all cases (boxunet.boxes.shape_templates) it gives the shape that
boxes of the label share, which the ConvCRF then refines per case.
"""
from dataclasses import asdict, dataclass

import numpy as np
import torch

from boxunet.boxes.padding import stack_padded
from boxunet.boxes.region_mining import normalize_channels
from boxunet.errors import BoxunetError
from boxunet.io.boxes import Box, box_mask
from boxunet.nets.unet import build_network
from boxunet.planning.plans import ArchitecturePlan

SIZE_MULTIPLE = 8  # three 2x poolings


@dataclass(frozen=True)
class BoxNetworkParameters:
    """How the box network is trained; stored with the shape templates."""

    iterations: int = 400
    batch_size: int = 4
    features: int = 16
    beta: float = 4.0
    emptiness: float = 1.0
    learning_rate: float = 1e-3
    crop_margin: int = 6
    max_patch: int = 96
    seed: int = 0

    def __post_init__(self):
        counts = (self.iterations, self.batch_size, self.features, self.max_patch, self.crop_margin, self.seed)
        if any(type(value) is not int for value in counts) or min(counts[:4]) < 1 or self.crop_margin < 0 \
                or self.beta <= 0 or self.emptiness < 0 or self.learning_rate <= 0:
            raise BoxunetError("box network: iterations, batch size, features and max patch must be positive "
                               "integers, the crop margin and seed integers, the crop margin not negative, beta and "
                               "the learning rate positive, emptiness not negative")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class BoxedCase:
    """One case for the box network: normalized channels cropped around its boxes, the boxes in crop voxels."""

    image: np.ndarray  # (C, *crop)
    boxes: list[Box]


def boxed_case(image: np.ndarray, boxes: list[Box], margin: int) -> tuple[BoxedCase, tuple[int, ...]]:
    """``image`` (C, z, y, x) normalized and cropped to its boxes' union plus ``margin`` voxels; the crop's offset."""
    low = np.maximum(np.min([b.min for b in boxes], 0) - margin, 0)
    high = np.minimum(np.max([b.max for b in boxes], 0) + margin, image.shape[1:])
    region = (slice(None),) + tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    shifted = [b.shifted(tuple(-int(v) for v in low)) for b in boxes]
    return BoxedCase(normalize_channels(image[region]), shifted), tuple(int(v) for v in low)


def _architecture(features: int) -> ArchitecturePlan:
    return ArchitecturePlan(3, [features, 2 * features, 4 * features, 8 * features], [[3, 3, 3]] * 4,
                            [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]], [2, 2, 2, 2], [2, 2, 2],
                            deep_supervision=False)


def new_box_network(in_channels: int, box_labels: tuple[int, ...], parameters: BoxNetworkParameters):
    """The untrained U-Net: ``in_channels`` inputs, background plus one output per box label."""
    return build_network(_architecture(parameters.features), in_channels, len(box_labels) + 1,
                         deep_supervision=False)


def slice_log_maxima(log_probability: torch.Tensor, box: Box, beta: float, axes=(0, 1, 2)) -> torch.Tensor:
    """The smooth maximum of ``log_probability`` (z, y, x) over every slice of ``box`` along each of ``axes``, all
    concatenated: (1/beta) log mean exp(beta log p), at most 0."""
    crop = log_probability[box.slices]
    values = []
    for axis in axes:
        slices = crop.movedim(axis, 0).flatten(1)
        values.append(((torch.logsumexp(beta * slices, 1) - np.log(slices.shape[1])) / beta).clamp(max=0))
    return torch.cat(values)


def whole_slices(box: Box, shape: tuple[int, ...]) -> tuple[Box | None, tuple[int, ...]]:
    """``box`` clipped to a patch of ``shape`` and the axes whose slices lie whole in the patch: every axis when
    the box is inside, the cut axis when the patch cuts it along one axis only, none otherwise."""
    low = tuple(max(lo, 0) for lo in box.min)
    high = tuple(min(hi, n) for hi, n in zip(box.max, shape))
    if any(lo >= hi for lo, hi in zip(low, high)):
        return None, ()
    cut = [lo < 0 or hi > n for lo, hi, n in zip(box.min, box.max, shape)]
    axes = tuple(axis for axis in range(len(shape)) if not any(cut[other] for other in range(len(shape))
                                                               if other != axis))
    return Box(box.label, low, high), axes


def box_loss(logits: torch.Tensor, valid: torch.Tensor, boxes: list[list[Box]], box_labels: tuple[int, ...],
             beta: float, emptiness: float) -> torch.Tensor:
    """The three terms of the module docstring for a batch: ``logits`` (B, 1 + labels, *patch), ``valid`` (B, *patch)
    the voxels inside the image, ``boxes`` per batch item in patch voxels (a box cut by the patch counts as inside
    for the negatives and gives the slices that lie whole in the patch, ``whole_slices``)."""
    log_probability = torch.log_softmax(logits.float(), 1)
    probability = log_probability.exp()
    shape = tuple(valid.shape[1:])
    total = logits.new_zeros(())
    for channel, label in enumerate(box_labels, start=1):
        inside = torch.from_numpy(np.stack([box_mask(shape, [b for b in item if b.label == label])
                                            for item in boxes])).to(valid.device)
        outside = valid & ~inside
        if outside.any():
            total = total - (torch.log((1 - probability[:, channel]).clamp(min=1e-6)) * outside).sum() / outside.sum()
        bags = []
        for index, item in enumerate(boxes):
            for box in (b for b in item if b.label == label):
                clipped, axes = whole_slices(box, shape)
                if axes:
                    bags.append(slice_log_maxima(log_probability[index, channel], clipped, beta, axes))
        if bags:
            total = total - torch.cat(bags).mean()
        if inside.any():
            total = total + emptiness * (probability[:, channel] * inside).sum() / inside.sum()
    return total


def _rounded_up(n: int) -> int:
    return int(-(-n // SIZE_MULTIPLE) * SIZE_MULTIPLE)


def patch_shape(cases: list[BoxedCase], max_patch: int) -> tuple[int, ...]:
    """The largest crop per axis, rounded up to a multiple of ``SIZE_MULTIPLE`` and capped at ``max_patch``."""
    largest = np.max([case.image.shape[1:] for case in cases], 0)
    cap = max(SIZE_MULTIPLE, max_patch // SIZE_MULTIPLE * SIZE_MULTIPLE)
    return tuple(min(_rounded_up(int(n)), cap) for n in largest)


def patch_origin(case: BoxedCase, patch: tuple[int, ...], rng: np.random.Generator) -> tuple[int, ...]:
    """A patch origin in the crop: along an axis where the crop is larger than the patch, random among those that
    hold a random box whole (or lie inside it, where the box is larger than the patch)."""
    box = case.boxes[rng.integers(len(case.boxes))]
    origin = []
    for n, p, lo, hi in zip(case.image.shape[1:], patch, box.min, box.max):
        if n <= p:
            origin.append(0)
            continue
        first, last = (max(0, hi - p), min(n - p, lo)) if hi - lo <= p else (lo, min(n - p, hi - p))
        origin.append(int(rng.integers(first, last + 1)))
    return tuple(origin)


def _batch(cases: list[BoxedCase], patch: tuple[int, ...], rng: np.random.Generator):
    images, valid, boxes = [], [], []
    for case in cases:
        origin = patch_origin(case, patch, rng)
        region = tuple(slice(o, o + p) for o, p in zip(origin, patch))
        image = case.image[(slice(None),) + region]
        images.append(image * rng.uniform(0.9, 1.1) + rng.normal(0, 0.1))
        valid.append(np.ones(image.shape[1:], bool))
        boxes.append([b.shifted(tuple(-o for o in origin)) for b in case.boxes])
    return (torch.from_numpy(stack_padded(images, patch, 0.0, np.float32)),
            torch.from_numpy(stack_padded(valid, patch, False)), boxes)


def train_box_network(cases: list[BoxedCase], box_labels: tuple[int, ...], parameters: BoxNetworkParameters,
                      device: torch.device = torch.device("cpu"), log=None) -> tuple[torch.nn.Module, list[float]]:
    """Train the box network on random batches of ``cases`` (Adam, polynomial learning-rate decay); the network in
    eval mode and the mean loss of every 50 iterations."""
    torch.manual_seed(parameters.seed)
    rng = np.random.default_rng(parameters.seed)
    network = new_box_network(cases[0].image.shape[0], box_labels, parameters).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=parameters.learning_rate)
    patch = patch_shape(cases, parameters.max_patch)
    losses, recent = [], []
    network.train()
    for iteration in range(parameters.iterations):
        for group in optimizer.param_groups:
            group["lr"] = parameters.learning_rate * (1 - iteration / parameters.iterations) ** 0.9
        chosen = [cases[i] for i in rng.integers(len(cases), size=parameters.batch_size)]
        images, valid, boxes = _batch(chosen, patch, rng)
        loss = box_loss(network(images.to(device)), valid.to(device), boxes, box_labels, parameters.beta,
                        parameters.emptiness)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        recent.append(float(loss.detach()))
        if len(recent) == 50 or iteration == parameters.iterations - 1:
            losses.append(round(float(np.mean(recent)), 5))
            recent = []
            if log is not None:
                log(f"box network iteration {iteration + 1}/{parameters.iterations}: loss {losses[-1]:.4f}")
    return network.eval(), losses


def tile_origins(size: tuple[int, ...], tile: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Origins of ``tile``-sized windows covering ``size``, half a tile apart per axis, the last at the end."""
    per_axis = [sorted(set(list(range(0, n - t, max(1, t // 2))) + [n - t])) for n, t in zip(size, tile)]
    return [tuple(int(v) for v in origin) for origin in np.stack(np.meshgrid(*per_axis, indexing="ij"), -1)
            .reshape(-1, len(size))]


@torch.no_grad()
def box_network_probabilities(network: torch.nn.Module, case: BoxedCase, max_patch: int,
                              device: torch.device = torch.device("cpu")) -> np.ndarray:
    """Probabilities (1 + labels, *crop) of the whole crop: padded to a multiple of ``SIZE_MULTIPLE``, in windows of
    at most the training patch (``patch_shape`` of this case alone), overlapping by half, averaged."""
    shape = case.image.shape[1:]
    padded = tuple(_rounded_up(n) for n in shape)
    tile = patch_shape([case], max_patch)
    image = stack_padded([case.image], padded, 0.0, np.float32)[0]
    total, count = None, np.zeros(padded, np.float32)
    for origin in tile_origins(padded, tile):
        window = tuple(slice(o, o + t) for o, t in zip(origin, tile))
        inputs = torch.from_numpy(np.ascontiguousarray(image[(slice(None),) + window][None])).to(device)
        probability = torch.softmax(network(inputs).float(), 1)[0].cpu().numpy()
        if total is None:
            total = np.zeros((probability.shape[0],) + padded, np.float32)
        total[(slice(None),) + window] += probability
        count[window] += 1
    return (total / count)[(slice(None),) + tuple(slice(0, n) for n in shape)]
