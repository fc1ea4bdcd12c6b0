"""Stage 2's cost: the K group networks' predictions of a fold's training cases and the fusion masks, timed.

Trains the group networks of a BoxThreeStage fold briefly into OUTPUT/stage2 (or reuses the finished ones there,
e.g. copied from another run, so that two code versions fuse with the same networks), then makes the fusion
masks and reports the seconds spent in the group networks' predictions and in the whole fusion store, and the
peak memory. With ``--compare OTHER_OUTPUT`` it also scores this run's fusion masks against another run's (Dice
per box label over the training cases, and the voxels that differ): box-region prediction against
whole-volume prediction. Runs with whatever boxunet is on PYTHONPATH, so an older copy can be timed the same way.

Usage: python benchmarks/stage2_cost.py DATASET OUTPUT [-f 0] [--k 3] [--iters 3] [--compare OTHER_OUTPUT]
"""
import argparse
import json
import resource
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from boxunet.evaluation.metrics import dice
from boxunet.io.images import read_image
from boxunet.training.box.options import BoxThreeStageOptions
from boxunet.training.box.stage2 import Stage2, raw_training_cases
from boxunet.training.box.three_stage import BoxThreeStage
from boxunet.training.run import TrainingRequest, prepare


def compare(output: Path, other: Path, case_ids: list[str], box_labels: list[int], ending: str) -> dict:
    """Dice per box label between the fusion masks of two runs (mean over the cases), and differing voxels."""
    scores, differing = {label: [] for label in box_labels}, 0
    for case_id in case_ids:
        mine = read_image(output / "stage2" / "fusion" / f"{case_id}{ending}")[0]
        theirs = read_image(other / "stage2" / "fusion" / f"{case_id}{ending}")[0]
        differing += int(np.count_nonzero(mine != theirs))
        for label in box_labels:
            if (mine == label).any() or (theirs == label).any():
                scores[label].append(dice(mine == label, theirs == label))
    return {"dice": {str(label): round(float(np.mean(values)), 5) for label, values in scores.items() if values},
            "voxels_differing": differing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("output", type=Path, help="the fold folder of this run (stage2/ goes in it)")
    parser.add_argument("-c", "--configuration", default="3d_fullres")
    parser.add_argument("-f", "--fold", default="0")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3, help="iterations of each group network's single epoch")
    parser.add_argument("--compare", type=Path, help="another run's OUTPUT, to score the fusion masks against")
    args = parser.parse_args()
    setup = prepare(TrainingRequest(args.dataset, args.configuration, args.fold, BoxThreeStage))
    setup = replace(setup, output=args.output)
    options = BoxThreeStageOptions(group_networks=args.k, group_epochs=1, epochs=1, iterations_per_epoch=args.iters,
                                   validation_iterations=1, augmentation_workers=0, progress_bar=False)
    trainer = BoxThreeStage(setup, options)
    stage1 = trainer.stage1_store()
    stage2 = Stage2(setup, options, trainer.group, None, None)
    started = time.perf_counter()
    networks = stage2.train_group(stage1)
    trained = time.perf_counter()
    predict = stage2.group_predictor(networks, trainer.network_input)
    prediction_seconds = []

    def timed_predict(case_id: str):
        start = time.perf_counter()
        predictions = predict(case_id)
        prediction_seconds.append(time.perf_counter() - start)
        return predictions

    stage2.fusion_store(stage1, timed_predict, raw_training_cases(setup))
    result = {"cases": len(prediction_seconds), "group_networks": args.k,
              "group_training_seconds": round(trained - started, 1),
              "prediction_seconds": round(sum(prediction_seconds), 1),
              "prediction_seconds_per_case_median": round(float(np.median(prediction_seconds)), 2),
              "fusion_store_seconds": round(time.perf_counter() - trained, 1),
              "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)}
    if args.compare:
        result["against_other_run"] = compare(args.output, args.compare, setup.train_cases, trainer.plans.box_labels,
                                              stage2.file_ending)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
