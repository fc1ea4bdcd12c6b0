"""Stage-2 masks of a BoxThreeStage fold against the dense reference labels ([Yang 2020] Table 1, extended).

For every training case of the fold, and every box label, the Dice on the configuration's grid of: the
stage-1 masks, each group network's prediction inside the boxes, their union and majority with the stage-1
mask (votes of Eq. 6), the stage-1 mask overruled where all K networks disagree with it, the fusion masks of
Eq. 5 (per label; after a box-ConvCRF stage 1, stage 1's box prior raised by the networks' votes, else the
union), and other ConvCRF priors: the union at +-UNION_LOGIT, graded votes (from -UNION_LOGIT with no vote to
+UNION_LOGIT with all K + 1), stage 1's shape prior plus the union prior, and stage 1's shape prior plus the
networks' mean log-odds at a few weights. Each with and without the class-prior correction of the group
networks' logits.
At the raw resolution (the group networks' corrected logits brought back to the raw geometry like an
exported prediction, the raw boxes, image and dense labels): the stage-1 masks, the union and the fusion
masks of Eq. 5 (``raw_*``), i.e. what fusion would give if it ran where stage 1 runs.
Needs the group networks trained (``boxunet_train ... -tr BoxThreeStage`` gets past stage 2) and label maps
holding the box labels. The cache keeps the networks' logits (float16), so new rules need no network pass.

Usage: python benchmarks/box_stage2_masks.py DATASET [-c 3d_fullres] [-f 0] [-p boxunetPlans] [-o out.json]
       [--cache FOLDER]
"""
import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from boxunet.boxes.fusion import UNION_LOGIT, dense_label_map, fusion_prior, refine_prior, union_prior, vote_counts
from boxunet.boxes.pseudo_masks import shape_prior
from boxunet.boxes.stage1 import stage1_mask_path, stage1_settings
from boxunet.evaluation.metrics import dice
from boxunet.inference.export import logits_to_segmentation
from boxunet.io.atomic import read_json
from boxunet.io.boxes import box_mask, case_boxes, read_boxes
from boxunet.io.cases import CaseFiles
from boxunet.io.images import read_image
from boxunet.planning.planner import DEFAULT_PLANS_NAME
from boxunet.preprocessing.grid_labels import open_target
from boxunet.training.box.losses import correct_class_prior
from boxunet.training.box.options import BoxThreeStageOptions
from boxunet.training.box.stage2 import Stage2, raw_training_cases
from boxunet.training.box.three_stage import BoxThreeStage
from boxunet.training.data.dataset import PreprocessedCases
from boxunet.training.run import TrainingRequest, prepare

EVIDENCE_CLIP = 6.0
EVIDENCE_WEIGHTS = (0.0, 0.25, 0.5, 1.0)
CACHE_FORMAT = "group logits, float16"  # part of the cache folder's digest: older caches held label maps


def stage2_trainer(dataset: str, configuration: str, fold: str, plans: str) -> tuple[BoxThreeStage, Stage2]:
    """A BoxThreeStage trainer of the fold with the options its stage-2 results were made with, and its stage 2."""
    setup = prepare(TrainingRequest(dataset, configuration, fold, BoxThreeStage, plans_name=plans))
    settings = read_json(setup.output / "stage2" / "settings.json")
    options = BoxThreeStageOptions(group_networks=settings["group_networks"], group_epochs=settings["group_epochs"],
                                   seed=settings["seed"], iterations_per_epoch=settings["iterations_per_epoch"],
                                   box_loss="v" + settings["group_loss"], progress_bar=False)
    trainer = BoxThreeStage(setup, options)
    trainer.prepare_previous_stage()  # a cascade's group networks also take the previous stage's predictions
    return trainer, Stage2(setup, options, trainer.group, None, trainer.previous_stage_folder)


def cache_folder(root: Path, trainer) -> Path:
    """Where the group networks' predictions of this fold are cached: named by the dataset, model folder, fold and a
    digest of the stage-2 settings and group checkpoints, so retrained networks never reuse stale predictions."""
    stage2 = trainer.output_folder / "stage2"
    stamps = [CACHE_FORMAT, (stage2 / "settings.json").read_text()] + [
        str((stage2 / f"group_{i}" / "checkpoint_final.pth").stat().st_mtime_ns)
        for i in range(trainer.options.group_networks)]
    digest = hashlib.sha1("\n".join(stamps).encode()).hexdigest()[:12]
    return root / f"{trainer.folders.name}_{trainer.output_folder.parent.name}_fold_{trainer.fold}_{digest}"


def mean_evidence(logits: torch.Tensor, label: int) -> np.ndarray:
    """The group networks' mean log-odds of ``label`` against every other class, from their (K, C, *spatial)
    logits, each network's clipped to +-EVIDENCE_CLIP so that one confident network cannot outvote the rest."""
    others = torch.cat([logits[:, :label], logits[:, label + 1:]], dim=1)
    log_odds = (logits[:, label] - torch.logsumexp(others, dim=1)).clamp(-EVIDENCE_CLIP, EVIDENCE_CLIP)
    return log_odds.mean(0).numpy()


def consensus_override(stage1_mask: np.ndarray, votes: np.ndarray, num_networks: int) -> np.ndarray:
    """The stage-1 mask with the voxels where all K networks disagree with it flipped (no ConvCRF); ``votes``
    count the stage-1 mask's vote too and are 0 outside the boxes, so the result stays inside them."""
    return np.where(stage1_mask, votes >= 2, votes >= num_networks)


def candidate_priors(votes: np.ndarray, predictions: list[np.ndarray], label: int, evidence: np.ndarray,
                     parameters, stage1_method: str) -> dict:
    """The ConvCRF priors compared, by name: Eq. 5 as fusion_target refines it after ``stage1_method``; the union
    itself; a graded prior (+UNION_LOGIT when all K + 1 masks agree, minus it when none); stage 1's shape prior
    with the union added; and stage 1's shape prior with the networks' mean evidence added at a few weights (0:
    the stage-1 procedure rerun on the grid, whose boxes are rounded outwards)."""
    union = union_prior(votes)
    graded = (UNION_LOGIT * (2.0 * votes / (len(predictions) + 1) - 1.0)).astype(np.float32)
    priors = {"fusion": fusion_prior(votes, predictions, label, parameters, stage1_method), "union_prior": union,
              "graded_votes": lambda box, region: graded[region],
              "shape_and_union": lambda box, region: shape_prior(box, region, parameters) + union(box, region)}
    for weight in EVIDENCE_WEIGHTS:
        priors[f"shape_and_evidence_{weight}"] = (
            lambda box, region, weight=weight: shape_prior(box, region, parameters) + weight * evidence[region])
    return priors


def raw_scores(trainer, stage2: Stage2, logits: torch.Tensor, properties: dict, case: CaseFiles, parameters,
               method: str) -> dict:
    """Dice per box label at the raw resolution of the stage-1 masks, their union with the K networks' corrected
    predictions, and the fusion masks of Eq. 5 made there (what the trainer trains on)."""
    predictions = [stage2.raw_prediction(x, properties) for x in logits]
    fused = stage2.raw_fusion(case, predictions, parameters, method)[0]
    truth = read_image(case.label)[0]
    pseudo = read_image(stage1_mask_path(trainer.folders.preprocessed, case.case_id,
                                         trainer.dataset_json["file_ending"]))[0]
    undecided = dense_label_map(truth, trainer.plans.box_labels) == 0
    boxes = read_boxes(case.boxes)
    scores = {}
    for label in trainer.plans.box_labels:
        inside = box_mask(truth.shape, boxes, label) & undecided
        reference_mask = truth == label
        scores[str(label)] = {"raw_stage1": dice(pseudo == label, reference_mask),
                              "raw_union": dice(vote_counts(pseudo, predictions, label, inside) > 0, reference_mask),
                              "raw_fusion": dice(fused == label, reference_mask)}
    return scores


def case_scores(trainer, stage2: Stage2, networks, stage1, reference, parameters, method: str, case_id: str,
                cache: Path | None, raw_case: CaseFiles) -> dict:
    """Dice of every mask of one case per box label, ``{label: {mask: dice}}``, the stage-1 masks made with
    ``method`` and ``parameters``; the group networks' predictions are read from (or kept in) ``cache`` when given."""
    folder = trainer.folders.preprocessed / trainer.configuration.data_identifier
    data, seg, properties = PreprocessedCases(folder, [case_id]).load(case_id)
    image, dense = np.asarray(data[:]), np.asarray(seg[0])
    truth = np.asarray(open_target(reference, case_id)[0])
    pseudo = np.asarray(open_target(stage1, case_id)[0])
    boxes, box_labels = case_boxes(properties), trainer.plans.box_labels
    densely_known = dense_label_map(dense, box_labels) > 0
    scores = {str(label): {"stage1": dice(pseudo == label, truth == label)} for label in box_labels}
    cached = cache / f"{case_id}.npz" if cache else None
    if cached and cached.is_file():
        logits = torch.from_numpy(np.load(cached)["logits"]).float()
    else:
        network_input = torch.from_numpy(trainer.network_input(case_id, image))
        logits = torch.stack([torch.as_tensor(x).float() for x in stage2.group_logits(networks, network_input, boxes)])
        if cached:
            np.savez_compressed(cached, logits=logits.half().numpy())
    for correction, suffix in ((True, ""), (False, "_uncorrected")):
        adjusted = correct_class_prior(logits, channel_axis=1) if correction else logits
        predictions = [logits_to_segmentation(x, trainer.plans) for x in adjusted]
        for label in box_labels:
            inside = box_mask(truth.shape, boxes, label) & ~densely_known
            votes = vote_counts(pseudo, predictions, label, inside)
            entry, reference_mask = scores[str(label)], truth == label
            for index, prediction in enumerate(predictions):
                entry[f"group_{index}{suffix}"] = dice((prediction == label) & inside, reference_mask)
            entry[f"union{suffix}"] = dice(votes > 0, reference_mask)
            entry[f"majority{suffix}"] = dice(2 * votes > len(predictions) + 1, reference_mask)
            entry[f"consensus{suffix}"] = dice(consensus_override(pseudo == label, votes, len(predictions)),
                                               reference_mask)
            evidence = mean_evidence(adjusted, label)
            for name, prior_of in candidate_priors(votes, predictions, label, evidence, parameters, method).items():
                refined = np.zeros(truth.shape, np.uint8)
                refine_prior(image, properties["spacing"], prior_of, inside, [b for b in boxes if b.label == label],
                             parameters, label, refined, np.zeros(truth.shape, np.float32), str(trainer.device))
                entry[f"{name}{suffix}"] = dice(refined == label, reference_mask)
    for label, entry in raw_scores(trainer, stage2, logits, properties, raw_case, parameters, method).items():
        scores[label].update(entry)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("-c", "--configuration", default="3d_fullres")
    parser.add_argument("-f", "--fold", default="0")
    parser.add_argument("-p", "--plans", default=DEFAULT_PLANS_NAME)
    parser.add_argument("-o", "--output", help="also write the per-case scores to this JSON file")
    parser.add_argument("--cache", type=Path, help="folder keeping the group networks' predictions for later runs")
    args = parser.parse_args()
    trainer, stage2 = stage2_trainer(args.dataset, args.configuration, args.fold, args.plans)
    stage1 = trainer.stage1_store()
    reference, present = trainer.reference_store()
    if reference is None:
        raise SystemExit("the dataset's label maps hold no box label: nothing to compare with")
    networks = [stage2.load_group_network(i) for i in range(trainer.options.group_networks)]
    method, parameters = stage1_settings(trainer.folders.preprocessed)
    cache = cache_folder(args.cache, trainer) if args.cache else None
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
    raw_cases = raw_training_cases(trainer.setup)
    cases = {c: case_scores(trainer, stage2, networks, stage1, reference, parameters, method, c, cache, raw_cases[c])
             for c in trainer.train_cases}
    means = {}
    for label in map(str, trainer.plans.box_labels):
        rows = [cases[c][label] for c in cases if int(label) in present.get(c, [])]
        if not rows:
            print(f"label {label}: no training case's reference holds it")
            continue
        means[label] = {mask: round(float(np.mean([row[mask] for row in rows])), 4) for mask in rows[0]}
        print(f"label {label}, {len(rows)} training cases: {json.dumps(means[label])}")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump({"mean": means, "cases": cases}, handle, indent=1)


if __name__ == "__main__":
    main()
