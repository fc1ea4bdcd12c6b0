"""How far a box label's shape template limits ``--method template`` (documentation/box_supervision.md, "Where the
anterior's gap lies"): per label, the mean Dice (with precision and recall) against the dense labels of

- ``alone``: the template itself in each box, thresholded at probability 0.5 (no image);
- ``crf``: the ConvCRF masks with the template as shape prior (what ``boxunet_pseudo_labels`` draws with it),

for two templates: ``expert``, the mean of the *expert* masks of the other cases in box coordinates (leave one out:
a ceiling that uses labels), and ``learned``, the final templates of a ``--method template`` run (STAGE1_FOLDER/
shape_templates.json). VARIANT changes fields of the ConvCRF's PseudoMaskParameters (e.g. '{"appearance_weight": 0}').

Usage: python benchmarks/template_against_expert.py RAW_DATASET_FOLDER STAGE1_FOLDER [VARIANT]
"""
import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from boxunet.boxes import shape_templates as templates_module
from boxunet.boxes.pseudo_masks import PseudoMaskParameters
from boxunet.io.dataset_json import load_dataset_json
from boxunet.io.images import read_image
from boxunet.parallel import map_in_processes
from template_round_variants import boxed_cases  # this script's folder

GRID = templates_module.TemplateParameters().grid


def _expert_grids(item) -> dict[int, list[np.ndarray]]:
    reference_file, case, box_labels = item
    reference = read_image(reference_file)[0]
    return {label: [templates_module.to_box_grid((reference == label).astype(np.float32), box, GRID)
                    for box in case.boxes if box.label == label] for label in box_labels}


def _counts(reference: np.ndarray, result: np.ndarray, label: int) -> tuple[float, float, float]:
    return (float(((reference == label) & (result == label)).sum()), float((result == label).sum()),
            float((reference == label).sum()))


def _score_case(item) -> dict:
    case, reference_file, box_labels, templates, parameters = item
    reference = read_image(reference_file)[0]
    alone = np.zeros_like(reference)
    for box in case.boxes:
        inside = alone[box.slices]
        inside[(templates_module.template_map(templates[box.label], box) > 0.5) & (inside == 0)] = box.label
    result, _ = templates_module.case_masks(case, box_labels, templates, parameters)
    return {name: {label: _counts(reference, masks, label) for label in box_labels}
            for name, masks in (("alone", alone), ("crf", result))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("stage1", type=Path)
    parser.add_argument("variant", nargs="?", default="{}")
    arguments = parser.parse_args()
    description = load_dataset_json(arguments.raw)
    box_labels = tuple(description.box_labels)
    crf = replace(PseudoMaskParameters(), **json.loads(arguments.variant))
    cases, references = boxed_cases(arguments.raw, description)
    grids = map_in_processes(_expert_grids, [(r, c, box_labels) for r, c in zip(references, cases)], 2,
                             "expert grids", progress=False, worker_threads=1)
    sums = {label: np.sum([g for case in grids for g in case[label]], 0) for label in box_labels}
    counts = {label: sum(len(case[label]) for case in grids) for label in box_labels}
    learned = {int(label): np.asarray(values, np.float32) for label, values in
               json.loads((arguments.stage1 / "shape_templates.json").read_text())["templates"].items()}
    for which in ("expert", "learned"):
        items = []
        for case, reference, own in zip(cases, references, grids):
            others = {label: (sums[label] - sum(own[label])) / (counts[label] - len(own[label])) for label in box_labels}
            templates = learned if which == "learned" else {
                label: templates_module.share_logits(share) for label, share in others.items()}
            items.append((case, reference, box_labels, templates, crf))
        results = map_in_processes(_score_case, items, 2, which, progress=False, worker_threads=1)
        row = {"template": which, "variant": json.loads(arguments.variant)}
        for name in ("alone", "crf"):
            for label in box_labels:
                triples = [result[name][label] for result in results]
                row[f"{name}_{label}"] = {
                    "dice": round(float(np.mean([2 * tp / max(p + t, 1) for tp, p, t in triples])), 4),
                    "precision": round(float(np.mean([tp / max(p, 1) for tp, p, t in triples])), 3),
                    "recall": round(float(np.mean([tp / max(t, 1) for tp, p, t in triples])), 3)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
