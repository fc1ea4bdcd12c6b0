"""Validation of a trained fold: its held-out cases predicted at their original geometry and scored.

Each process predicts its share of the cases (the trainer's ``predict_preprocessed``, step 0.5, mirroring)
and exports them like ``boxunet_predict``; the main process gathers the report details, scores every case
against the trainer's ``validation_reference()`` and writes ``validation/summary.json``.
"""
import json

import numpy as np
import torch
from tqdm import tqdm

from boxunet.evaluation.case_classification import REPORT_FILE
from boxunet.evaluation.metrics import evaluate_folders
from boxunet.inference.export import export_prediction
from boxunet.io.atomic import write_json
from boxunet.io.dataset_json import parse_dataset_json
from boxunet.io.model_folder import write_model_files
from boxunet.nets.precision import resolve_precision
from boxunet.training.distributed import all_gather_objects

STEP_SIZE = 0.5


def validate_fold(trainer) -> dict | None:
    """Predict, export and score ``trainer``'s validation cases into ``<fold>/validation/`` (its network in
    eval mode); the summary on the main process, None on the others."""
    folder = trainer.output_folder / "validation"
    preprocessed_dataset_json = trainer.folders.preprocessed / "dataset.json"
    folder.mkdir(parents=True, exist_ok=True)
    if trainer.group.is_main:
        write_model_files(folder, trainer.plans.to_json(), preprocessed_dataset_json)
    cases = trainer.preprocessed_cases(trainer.val_cases)
    ending = trainer.dataset_json["file_ending"]
    precision = resolve_precision(trainer.device)
    own_cases = trainer.val_cases[trainer.group.rank::trainer.group.world_size]
    details = {}
    for case_id in tqdm(own_cases, desc="validation", disable=not trainer.shows_progress_bars):
        data, _, properties = cases.load(case_id)
        data = trainer.network_input(case_id, np.asarray(data[:]))
        logits, details[case_id] = trainer.predict_preprocessed(
            [trainer.network], torch.from_numpy(data), trainer.configuration, trainer.num_outputs, trainer.mirror_axes,
            STEP_SIZE, trainer.device, precision)
        export_prediction(logits, properties, trainer.plans, trainer.configuration, folder / f"{case_id}{ending}",
                          save_probabilities=trainer.options.save_probabilities)
    details = all_gather_objects(details, trainer.group)
    if not trainer.group.is_main:
        return None
    write_json({"details": {case: value for case, value in sorted(details.items()) if value}}, folder / REPORT_FILE)
    reference = trainer.validation_reference()
    description = parse_dataset_json(trainer.dataset_json, str(preprocessed_dataset_json))
    summary = evaluate_folders(reference, folder, trainer.labels.evaluation_targets, ending,
                               case_ids=trainer.val_cases, label_names=trainer.plans.labels,
                               case_classification=description.case_classification)
    summary["reference_folder"] = str(reference)
    write_json(summary, folder / "summary.json")
    trainer.log(f"validation: mean foreground Dice {summary['foreground_mean']['Dice']:.4f} "
                f"({json.dumps({k: round(v['Dice'], 4) for k, v in summary['mean'].items()})}) against {reference}")
    return summary
