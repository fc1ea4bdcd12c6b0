"""One case's stage-1 masks as ``boxunet_pseudo_labels`` makes them (boxunet.boxes.stage1 runs this per case; the
Python API's ``boxunet.pseudo_masks`` runs it on an image held in memory): the method's unaries (the learned
shape templates, or the ACoL region miners' maps), then ``pseudo_masks``."""
from pathlib import Path

import numpy as np
import torch

from boxunet.boxes.pseudo_masks import PseudoMaskParameters, pseudo_masks
from boxunet.boxes.region_mining import box_maps, load_region_miner, normalize_channels
from boxunet.boxes.shape_templates import template_map
from boxunet.errors import BoxunetError
from boxunet.io.atomic import read_json
from boxunet.io.boxes import Box


def _localization_maps(image: np.ndarray, boxes: tuple[Box, ...], box_labels: tuple[int, ...],
                       miner_files: tuple[tuple[int, str], ...], device: str) -> tuple[list[np.ndarray], dict]:
    """The fused ACoL map of every box of a case (``image`` raw), and per box label the masks of its boxes' CAM
    and fused maps thresholded at 0.5 (for the report)."""
    miners = {label: load_region_miner(Path(path), image.shape[0], torch.device(device)) for label, path in miner_files}
    unmined = sorted({box.label for box in boxes} - set(miners))
    if unmined:
        raise BoxunetError(f"box label(s) {unmined}: no region miner (no case had a box of the label when the miners "
                           "were trained); run boxunet_pseudo_labels --method acol again")
    normalized = normalize_channels(image)
    fused_maps = []
    thresholded = {name: {label: np.zeros(image.shape[1:], bool) for label in box_labels} for name in ("cam", "acol")}
    for box in boxes:
        miner, parameters = miners[box.label]
        maps = box_maps(miner, normalized, box, torch.device(device), precision=parameters.precision)
        fused_maps.append(maps["fused"])
        for name, key in (("cam", "cam"), ("acol", "fused")):
            thresholded[name][box.label][box.slices] |= maps[key] > 0.5
    return fused_maps, thresholded


def case_pseudo_masks(image: np.ndarray, spacing_mm, boxes: tuple[Box, ...], box_labels: tuple[int, ...],
                      dense_labels: np.ndarray | None, method: str, parameters: PseudoMaskParameters,
                      device: str = "cpu", template_file: str | None = None,
                      miner_files: tuple[tuple[int, str], ...] = ()) -> tuple[np.ndarray, dict | None]:
    """One case's stage-1 label map as ``boxunet_pseudo_labels`` makes it (``image`` (C, z, y, x) raw), and with
    ``"acol"`` the thresholded CAM and fused maps of the report (else None). ``"template"`` reads the learned
    templates from ``template_file``, ``"acol"`` the trained region miners from ``miner_files``."""
    maps, map_masks = (_localization_maps(image, boxes, box_labels, miner_files, device) if method == "acol"
                       else (None, None))
    if method == "template":
        templates = read_json(Path(template_file))["templates"]
        maps = [template_map(np.asarray(templates[str(box.label)], np.float32), box) for box in boxes]
    result = pseudo_masks(image, spacing_mm, list(boxes), list(box_labels), dense_labels, method, parameters, device,
                          maps)
    return result, map_masks
