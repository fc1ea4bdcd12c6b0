"""Shape templates: what the boxes of one label hold, learned from every training case (``--method template``).

A box label's template is a ``grid``^3 map of logits in box coordinates (each box resampled to the grid).
It is learned without dense labels in two steps:

1. a network trained from the boxes of every case (boxunet.boxes.box_network) gives the first template: the mean
   of its probabilities in box coordinates, standardized (zero mean, unit variance over the grid) as logits,
   lowered by ``face_decay`` at the box faces, a factor e less every ``face_width`` of the box inward (a tight box
   touches its structure in a few voxels of each face, and a rounded structure thins out towards them;
   the network's mean, which only knows that every slice holds some, does not), except where another label's box
   meets the face from outside (``open_meeting_faces``): there two structures meet and this one reaches the face;
2. ``rounds`` times, every case's ConvCRF runs with the template as its shape prior (in place of the inscribed
   ellipsoid; the appearance model and tightness as with ``convcrf``), and the template becomes the logit of the
   share of cases whose mask holds each grid voxel (clipped to [``CLIP``, 1 - ``CLIP``]).

The network finds where in its box a structure lies (a thin diagonal band, say) but draws it in stripes; the
rounds turn that into a shape the masks agree on and bring the template's size down to the masks' own.
"""
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from boxunet.boxes.box_network import (BoxNetworkParameters, box_network_probabilities, boxed_case, new_box_network,
                                       train_box_network)
from boxunet.boxes.pseudo_masks import PseudoMaskParameters, pseudo_masks
from boxunet.errors import BoxunetError
from boxunet.io.boxes import Box
from boxunet.io.checkpoint import save_checkpoint
from boxunet.io.images import read_channels, read_image
from boxunet.parallel import default_num_processes, map_in_processes

CLIP = 0.02


@dataclass(frozen=True)
class TemplateParameters:
    """How the shape templates are learned; stored with them."""

    network: BoxNetworkParameters = field(default_factory=BoxNetworkParameters)
    rounds: int = 1
    grid: int = 24
    face_decay: float = 2.0
    face_width: float = 0.125
    open_meeting_faces: bool = True

    def __post_init__(self):
        if type(self.rounds) is not int or type(self.grid) is not int or self.rounds < 0 or self.grid < 2:
            raise BoxunetError("shape templates: rounds must be an integer, not negative, and the grid an integer of "
                               "at least 2")
        if type(self.face_decay) not in (int, float) or not 0 <= self.face_decay < float("inf"):
            raise BoxunetError("shape templates: face_decay must be a finite number, not negative")
        if type(self.face_width) not in (int, float) or not 0 < self.face_width < float("inf"):
            raise BoxunetError("shape templates: face_width must be a positive finite number (a share of the box)")
        if type(self.open_meeting_faces) is not bool:
            raise BoxunetError("shape templates: open_meeting_faces must be true or false")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "TemplateParameters":
        values = dict(data)
        values["network"] = BoxNetworkParameters(**values.get("network", {}))
        return cls(**values)


def _resize(array: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    return F.interpolate(tensor, size=tuple(int(s) for s in size), mode="trilinear", align_corners=False)[0, 0].numpy()


def to_box_grid(values: np.ndarray, box: Box, grid: int) -> np.ndarray:
    """``values`` (an image-sized array) inside ``box``, resampled to ``grid`` voxels per axis (trilinear)."""
    return _resize(values[box.slices], (grid,) * len(box.size))


def template_map(template: np.ndarray, box: Box) -> np.ndarray:
    """A template (logits on the box grid) as probabilities over ``box`` (its shape), for the ConvCRF's prior."""
    return 1.0 / (1.0 + np.exp(-_resize(template, box.size)))


def standardized_logits(mean_grid: np.ndarray) -> np.ndarray:
    """The first template: a mean probability grid standardized to zero mean and unit variance."""
    return ((mean_grid - mean_grid.mean()) / max(float(mean_grid.std()), 1e-6)).astype(np.float32)


def face_logits(grid: int, strength: float, cover: np.ndarray | None = None, width: float = 1.0) -> np.ndarray:
    """Logits over a ``grid``^3 box grid that lower its faces: ``-strength`` on the outermost grid voxels, a factor
    e less every ``width`` voxels inward; where ``cover`` (``face_cover``'s layout) says another box meets a face,
    that face is lowered by ``strength`` x (1 - cover) instead."""
    cover = np.zeros((6, grid, grid), np.float32) if cover is None else cover
    depth = np.exp(-np.arange(grid, dtype=np.float64) / width)
    lowered = np.zeros((grid,) * 3)
    for axis in range(3):
        for side in (0, 1):
            decay = np.expand_dims(depth if side == 0 else depth[::-1], tuple(a for a in range(3) if a != axis))
            lowered = np.maximum(lowered, decay * np.expand_dims(strength * (1 - cover[2 * axis + side]), axis))
    return (-lowered).astype(np.float32)


def _meets_face(box: Box, other: Box, axis: int, side: int) -> bool:
    """Whether ``other`` reaches ``box``'s face (``side`` 0: low, 1: high) along ``axis`` from beyond it, touching or
    overlapping it, without enclosing ``box`` along that axis."""
    low, high, other_low, other_high = box.min[axis], box.max[axis], other.min[axis], other.max[axis]
    if side == 0:
        return other_low < low <= other_high < high
    return low < other_low <= high < other_high


def _cell_shares(box: Box, other: Box, axis: int, grid: int) -> np.ndarray:
    """The share of each of ``grid`` cells of ``box`` along ``axis`` that ``other`` overlaps."""
    edges = box.min[axis] + box.size[axis] * np.arange(grid + 1) / grid
    overlap = np.minimum(edges[1:], other.max[axis]) - np.maximum(edges[:-1], other.min[axis])
    return np.clip(overlap / np.diff(edges), 0, 1)


def face_cover(box: Box, others: list[Box], grid: int) -> np.ndarray:
    """Where boxes of other labels meet ``box``'s faces from outside (``_meets_face``): (6, ``grid``, ``grid``), the
    faces ordered axis 0 low, axis 0 high, axis 1 low, ..., each the share of its grid cells such a box covers."""
    cover = np.zeros((6, grid, grid), np.float32)
    for other in (other for other in others if other.label != box.label):
        for axis in range(3):
            across = [_cell_shares(box, other, rest, grid) for rest in range(3) if rest != axis]
            for side in (0, 1):
                if _meets_face(box, other, axis, side):
                    cover[2 * axis + side] = np.maximum(cover[2 * axis + side], np.outer(*across))
    return cover


def share_logits(share: np.ndarray) -> np.ndarray:
    """A template from the share of masks holding each grid voxel: its clipped logit."""
    clipped = np.clip(share, CLIP, 1 - CLIP)
    return (np.log(clipped) - np.log1p(-clipped)).astype(np.float32)


@dataclass(frozen=True)
class TemplateCase:
    """What the templates learn from, per training case: its image files, boxes and dense labels (0 where the
    box labels are inferred; None when the case has none)."""

    images: tuple[str, ...]
    boxes: tuple[Box, ...]
    dense_label_file: str | None = None


def _mean_grids(grids: list[dict[int, list[np.ndarray]]], box_labels: tuple[int, ...]) -> dict[int, np.ndarray]:
    means = {}
    for label in box_labels:
        stack = [grid for case in grids for grid in case.get(label, [])]
        if stack:
            means[label] = np.mean(stack, 0)
    return means


def _mean_covers(cases: list[TemplateCase], box_labels: tuple[int, ...], grid: int) -> dict[int, np.ndarray]:
    """Per box label, the mean over its boxes of ``face_cover``."""
    return _mean_grids([{label: [face_cover(box, list(case.boxes), grid) for box in case.boxes if box.label == label]
                         for label in box_labels} for case in cases], box_labels)


def _network_grids(network, case: TemplateCase, box_labels: tuple[int, ...], parameters: TemplateParameters,
                   device: torch.device) -> dict[int, list[np.ndarray]]:
    if not case.boxes:
        return {}
    image, _ = read_channels(list(case.images))
    boxed, _ = boxed_case(image, list(case.boxes), parameters.network.crop_margin)
    probability = box_network_probabilities(network, boxed, parameters.network.max_patch, device)
    return {label: [to_box_grid(probability[channel], box, parameters.grid) for box in boxed.boxes
                    if box.label == label] for channel, label in enumerate(box_labels, start=1)}


def case_masks(case: TemplateCase, box_labels: tuple[int, ...], templates: dict[int, np.ndarray],
               parameters: PseudoMaskParameters, device: str = "cpu") -> tuple[np.ndarray, object]:
    """One case's pseudo label map with ``templates`` as the shape priors of its boxes, and its image geometry."""
    image, geometry = read_channels(list(case.images))
    dense = read_image(case.dense_label_file)[0] if case.dense_label_file is not None else None
    maps = [template_map(templates[box.label], box) for box in case.boxes]
    result = pseudo_masks(image, geometry.spacing, list(case.boxes), list(box_labels), dense, "template", parameters,
                          device, maps)
    return result, geometry


def _mask_grids(item) -> dict[int, list[np.ndarray]]:
    case, box_labels, templates, parameters, grid, device = item
    result, _ = case_masks(case, box_labels, templates, parameters, device)
    return {label: [to_box_grid((result == label).astype(np.float32), box, grid) for box in case.boxes
                    if box.label == label] for label in box_labels}


def _stored_network(path: Path, digest: str, in_channels: int, box_labels: tuple[int, ...],
                    parameters: BoxNetworkParameters, device: torch.device):
    """The box network stored at ``path`` when it was trained on what ``digest`` names, with its losses; else None
    (also for an unreadable file: it is trained again)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if state["digest"] != digest:
            return None
        network = new_box_network(in_channels, box_labels, parameters).to(device)
        network.load_state_dict(state["network_weights"])
        return network.eval(), list(state["losses"])
    except Exception:  # corrupt or foreign
        return None


def box_network_for(cases: list[TemplateCase], box_labels: tuple[int, ...], parameters: BoxNetworkParameters,
                    device: torch.device, network_file: Path, digest: str, log=None):
    """The box network of ``cases``: the one in ``network_file`` when it was trained on what ``digest`` names,
    else trained now and stored there; with its losses and whether it was trained now."""
    in_channels = len(cases[0].images)
    stored = _stored_network(network_file, digest, in_channels, box_labels, parameters, device)
    if stored is not None:
        return stored + (False,)
    boxed = []
    for case in (case for case in cases if case.boxes):  # a case without boxes says nothing of where c lies
        image, _ = read_channels(list(case.images))
        boxed.append(boxed_case(image, list(case.boxes), parameters.crop_margin)[0])
    network, losses = train_box_network(boxed, box_labels, parameters, device, log)
    save_checkpoint({"network_weights": network.state_dict(), "digest": digest, "losses": losses}, network_file)
    return network, losses, True


def learn_shape_templates(cases: list[TemplateCase], box_labels: tuple[int, ...], parameters: TemplateParameters,
                          crf_parameters: PseudoMaskParameters, network_file: Path, network_digest: str,
                          device: str = "cpu", num_processes: int = 1,
                          progress: bool = True) -> tuple[dict[int, np.ndarray], dict]:
    """The templates of every box label with boxes (module docstring) and a report: the network's losses, whether
    it was trained now (``network_file`` keeps it for a rerun on the same ``network_digest``) and, per round, the
    mean share of each label's box grid that the masks fill."""
    if not any(case.boxes for case in cases):
        raise BoxunetError("--method template: no training case has a box to learn a shape from")
    torch_device = torch.device(device)
    num_processes = max(1, num_processes)
    network, losses, trained_now = box_network_for(cases, box_labels, parameters.network, torch_device, network_file,
                                                   network_digest, print if progress else None)
    means = _mean_grids([_network_grids(network, case, box_labels, parameters, torch_device) for case in cases],
                        box_labels)
    grid = parameters.grid
    covers = _mean_covers(cases, box_labels, grid) if parameters.open_meeting_faces else {}
    templates = {label: standardized_logits(mean) + face_logits(grid, parameters.face_decay, covers.get(label),
                                                                parameters.face_width * grid)
                 for label, mean in means.items()}
    fills = []
    for round_index in range(parameters.rounds):
        items = [(case, box_labels, templates, crf_parameters, parameters.grid, device) for case in cases]
        grids = map_in_processes(_mask_grids, items, num_processes, f"shape templates, round {round_index + 1}",
                                 progress=progress, worker_threads=max(1, default_num_processes() // num_processes))
        shares = _mean_grids(grids, box_labels)
        templates = {label: share_logits(share) for label, share in shares.items()}
        fills.append({str(label): round(float(share.mean()), 4) for label, share in shares.items()})
    meeting = {str(label): [round(float(face.mean()), 4) for face in cover] for label, cover in covers.items()}
    return templates, {"network_losses": losses, "network_trained_now": trained_now, "fill_per_round": fills,
                       "meeting_face_cover": meeting}
