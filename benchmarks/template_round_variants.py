"""Dice per template round for variants of ``--method template``'s rounds, against the dense labels of a dataset
whose box labels also have labelsTr (documentation/box_supervision.md, "Faces of the first template").

It reuses the box network stored by a ``boxunet_pseudo_labels --method template`` run (STAGE1_FOLDER/box_network.pth,
trained with the default network parameters) and prints one JSON line per round: the Dice, precision and recall of
that round's masks per label (round r's masks are drawn with the template of round r - 1, round 0 with the network's)
and the share of the box grid they fill. A variant is JSON:

- ``rounds`` (4): template rounds after round 0;
- ``face_decay`` (0): the face term (boxunet.boxes.shape_templates.face_logits) added to the prior ...
- ``decay_rounds`` (99): ... in the first this many rounds only (1: the first template, as boxunet does);
- ``prior_scale`` (1): the template logits times this factor;
- ``parameters`` ({}): fields of the ConvCRF's PseudoMaskParameters to change (e.g. ``{"appearance_weight": 0.5}``).

Usage: python benchmarks/template_round_variants.py RAW_DATASET_FOLDER STAGE1_FOLDER '{"face_decay": 2, "decay_rounds": 1}'
"""
import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from boxunet.boxes import shape_templates as templates_module
from boxunet.boxes.box_network import new_box_network
from boxunet.boxes.pseudo_masks import PseudoMaskParameters
from boxunet.io.boxes import read_boxes
from boxunet.io.dataset_json import load_dataset_json
from boxunet.io.images import read_image
from boxunet.parallel import map_in_processes

GRID = templates_module.TemplateParameters().grid


def _score_case(item):
    case, reference_file, box_labels, templates, parameters = item
    result, _ = templates_module.case_masks(case, box_labels, templates, parameters)
    reference = read_image(reference_file)[0]
    counts = {label: (float(((reference == label) & (result == label)).sum()), float((result == label).sum()),
                      float((reference == label).sum())) for label in box_labels}
    grids = {label: [templates_module.to_box_grid((result == label).astype(np.float32), box, GRID)
                     for box in case.boxes if box.label == label] for label in box_labels}
    return counts, grids


def boxed_cases(raw: Path, description) -> tuple[list, list[str]]:
    """The template cases of every box file of a raw dataset and the paths of their dense reference labels."""
    cases, references = [], []
    for box_file in sorted((raw / "boxesTr").glob("*.json")):
        case_id = box_file.name[:-len(".json")]
        images = tuple(str(raw / "imagesTr" / f"{case_id}_{c:04d}{description.file_ending}")
                       for c in range(description.num_channels))
        cases.append(templates_module.TemplateCase(images, tuple(read_boxes(box_file))))
        references.append(str(raw / "labelsTr" / f"{case_id}{description.file_ending}"))
    return cases, references


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("stage1", type=Path)
    parser.add_argument("variant", nargs="?", default="{}")
    arguments = parser.parse_args()
    variant = json.loads(arguments.variant)
    description = load_dataset_json(arguments.raw)
    box_labels = tuple(description.box_labels)
    cases, references = boxed_cases(arguments.raw, description)
    parameters = templates_module.TemplateParameters()
    network = new_box_network(description.num_channels, box_labels, parameters.network)
    network.load_state_dict(torch.load(arguments.stage1 / "box_network.pth", weights_only=True)["network_weights"])
    network.eval()
    grids = [templates_module._network_grids(network, case, box_labels, parameters, torch.device("cpu"))
             for case in cases]
    templates = {label: templates_module.standardized_logits(mean)
                 for label, mean in templates_module._mean_grids(grids, box_labels).items()}
    faces = templates_module.face_logits(GRID, variant.get("face_decay", 0.0))
    crf = replace(PseudoMaskParameters(), **variant.get("parameters", {}))
    for round_index in range(variant.get("rounds", 4) + 1):
        started = time.time()
        with_faces = round_index < variant.get("decay_rounds", 99)
        prior = {label: t * variant.get("prior_scale", 1.0) + (faces if with_faces else 0.0)
                 for label, t in templates.items()}
        results = map_in_processes(_score_case, [(c, r, box_labels, prior, crf) for c, r in zip(cases, references)], 2,
                                   f"round {round_index}", progress=False, worker_threads=1)
        row = {"round": round_index, "seconds": round(time.time() - started, 1)}
        for label in box_labels:
            true_positives, predicted, reference = (sum(r[0][label][i] for r in results) for i in range(3))
            dice = [2 * r[0][label][0] / max(r[0][label][1] + r[0][label][2], 1) for r in results]
            row[str(label)] = {"dice": round(float(np.mean(dice)), 4), "precision": round(true_positives / predicted, 3),
                               "recall": round(true_positives / reference, 3)}
        shares = templates_module._mean_grids([r[1] for r in results], box_labels)
        row["fill"] = {str(label): round(float(share.mean()), 4) for label, share in shares.items()}
        print(json.dumps(row), flush=True)
        templates = {label: templates_module.share_logits(share) for label, share in shares.items()}


if __name__ == "__main__":
    main()
