"""Anchor boxes on a feature pyramid and [Fan 2022]'s choice of negative samples (2D, per slice).

Coordinates are (y, x) pixels of a slice; a box is ``[y0, x0, y1, x1]`` (min inclusive, max exclusive, as
boxunet's box files). Level k of the pyramid (P2..P5) has stride ``2**k`` and anchors of area
``(8 * stride)**2`` (32**2 on P2 up to 256**2 on P5, [Fan 2022] after FPN) in the aspect ratios (height / width)
1:1, 1:2 and 2:1, centred on every cell: ``H x W x 3`` anchors for a ``H x W`` feature map. An anchor is
kept when at least half of it lies inside the slice, and clipped to it.

Negative samples are anchors that overlap no annotated box at all. Per level the ``nearest_fraction`` whose
centres are closest (Euclidean) to the centre of their nearest box are preferred; ``count`` of those,
over all levels, are drawn at random. A positive box is read from level
``floor(4 + log2(sqrt(h * w) / 224))`` clipped to the pyramid (FPN's rule, [Fan 2022] Eq. 2).
"""
import numpy as np

PYRAMID_LEVELS = (2, 3, 4, 5)
ASPECT_RATIOS = (1.0, 0.5, 2.0)  # height / width: 1:1, 1:2, 2:1
ANCHOR_SIDE_PER_STRIDE = 8
NEAREST_FRACTION = 0.1
NEGATIVE_SAMPLES = 256
MIN_INSIDE_FRACTION = 0.5


def level_stride(level: int) -> int:
    return 2 ** level


def level_anchors(shape, level: int, ratios=ASPECT_RATIOS) -> np.ndarray:
    """``(N, 4)`` float anchors of pyramid ``level`` on a slice of ``shape`` (y, x), clipped to the slice,
    those less than half inside dropped; cell by cell, ratio by ratio."""
    stride = level_stride(level)
    side = ANCHOR_SIDE_PER_STRIDE * stride
    cells = [int(np.ceil(s / stride)) for s in shape]
    ys, xs = np.meshgrid((np.arange(cells[0]) + 0.5) * stride, (np.arange(cells[1]) + 0.5) * stride, indexing="ij")
    anchors = []
    for ratio in ratios:
        height, width = side * np.sqrt(ratio), side / np.sqrt(ratio)
        anchors.append(np.stack([ys - height / 2, xs - width / 2, ys + height / 2, xs + width / 2], axis=-1))
    anchors = np.stack(anchors, axis=2).reshape(-1, 4)
    clipped = np.clip(anchors, 0, [shape[0], shape[1], shape[0], shape[1]])
    inside = _areas(clipped) >= MIN_INSIDE_FRACTION * _areas(anchors)
    return clipped[inside]


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def overlaps_any(anchors: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Boolean ``(N,)``: whether each anchor shares any area with any of ``boxes`` ``(M, 4)``."""
    if len(boxes) == 0:
        return np.zeros(len(anchors), dtype=bool)
    a, b = anchors[:, None, :], np.asarray(boxes, dtype=np.float64)[None, :, :]
    height = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    width = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    return ((height > 0) & (width > 0)).any(axis=1)


def centres(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)


def nearest_negatives(shape, boxes: np.ndarray, level: int, fraction: float = NEAREST_FRACTION) -> np.ndarray:
    """The negative anchors of ``level`` whose centres are closest to a box centre: the nearest ``fraction``
    (at least one when there is any negative), nearest first."""
    anchors = level_anchors(shape, level)
    negatives = anchors[~overlaps_any(anchors, boxes)]
    if len(negatives) == 0 or len(boxes) == 0:
        return negatives
    distance = np.linalg.norm(centres(negatives)[:, None, :] - centres(boxes)[None, :, :], axis=2).min(axis=1)
    keep = max(1, int(np.ceil(fraction * len(negatives))))
    return negatives[np.argsort(distance, kind="stable")[:keep]]


def sample_negatives(shape, boxes: np.ndarray, rng: np.random.Generator, count: int = NEGATIVE_SAMPLES,
                     fraction: float = NEAREST_FRACTION, levels=PYRAMID_LEVELS) -> list[tuple[int, np.ndarray]]:
    """``count`` (or all, if fewer) ``(level, anchor)`` negatives drawn at random from every level's nearest
    ``fraction`` (see ``nearest_negatives``)."""
    pool = [(level, anchor) for level in levels for anchor in nearest_negatives(shape, boxes, level, fraction)]
    if len(pool) <= count:
        return pool
    return [pool[i] for i in sorted(rng.choice(len(pool), size=count, replace=False))]


def box_level(box, levels=PYRAMID_LEVELS, canonical: float = 224.0, canonical_level: int = 4) -> int:
    """The pyramid level a box ``[y0, x0, y1, x1]`` is read from (FPN's rule, clipped to ``levels``)."""
    size = np.sqrt(max(box[2] - box[0], 1e-6) * max(box[3] - box[1], 1e-6))
    return int(np.clip(np.floor(canonical_level + np.log2(size / canonical)), min(levels), max(levels)))
