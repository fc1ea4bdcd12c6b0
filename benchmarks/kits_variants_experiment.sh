#!/usr/bin/env bash
# The seed KiTS variants on the built-in synthetic data (documentation/kits_variants.md, "Results"): fold 0
# of the dense demo dataset with the same budget for the plain 3d_fullres Trainer, TwoStepAttention,
# KiTSLocalizationEnsemble and KiTSCoarseToFine (every pipeline stage gets the budget), then the test images
# through each, with KiTS metrics and the pipelines' per-case reports.
# Usage: bash benchmarks/kits_variants_experiment.sh [EPOCHS] [ITERATIONS] [TRAINERS]
# (TRAINERS: a quoted, space-separated subset, by default all four)
# Data roots come from the boxunet_raw / boxunet_preprocessed / boxunet_results environment variables.
set -euo pipefail
epochs=${1:-10}
iterations=${2:-25}
trainers=${3:-Trainer TwoStepAttention KiTSLocalizationEnsemble KiTSCoarseToFine}
dataset=Dataset901_KiTSDemoDense
bash "$(dirname "$0")/prepare_kits_demo_dense.sh"
boxunet_plan_and_preprocess -d 901 --gpu-memory-gb 0.25 -np 2 -c 3d_fullres --quiet
results=$boxunet_results/$dataset
for trainer in $trainers; do
    /usr/bin/time -f "$trainer training: %e s, peak %M KB" \
        boxunet_train 901 3d_fullres 0 -tr "$trainer" --epochs "$epochs" --iters-per-epoch "$iterations" \
        --val-iters 5 --c --quiet
    output=$results/test_$trainer
    /usr/bin/time -f "$trainer prediction: %e s, peak %M KB" \
        boxunet_predict -i "$boxunet_raw/$dataset/imagesTs" -o "$output" -d 901 -c 3d_fullres -tr "$trainer" \
        -f 0 --continue --quiet
    boxunet_evaluate "$boxunet_raw/$dataset/labelsTs" "$output" -d 901 -np 2
    python -c "import json, sys; print(json.dumps(json.load(open(sys.argv[1])).get('details', {}), indent=1))" \
        "$output/prediction_report.json"
done
