#!/usr/bin/env bash
# KiTS-style configurations on the built-in synthetic data (documentation/kits.md, "Results"): the dense demo
# dataset (kidney, tumor, cyst all as label maps), planned with a cascade, two cross-validation folds;
# 3d_lowres (both folds, so that every case has a held-out lowres prediction), 3d_cascade_fullres and
# 3d_fullres (fold 0) with the same budget, then the test images through each with KiTS metrics.
# Usage: bash benchmarks/kits_cascade_experiment.sh [EPOCHS] [ITERATIONS]
# Data roots come from the boxunet_raw / boxunet_preprocessed / boxunet_results environment variables.
set -euo pipefail
epochs=${1:-10}
iterations=${2:-25}
dataset=Dataset901_KiTSDemoDense
bash "$(dirname "$0")/prepare_kits_demo_dense.sh"
boxunet_plan_and_preprocess -d 901 --gpu-memory-gb 0.25 --cascade -np 2 -c 3d_fullres 3d_lowres --quiet
common=(--epochs "$epochs" --iters-per-epoch "$iterations" --val-iters 5 --c --quiet)
for fold in 0 1; do
    boxunet_train 901 3d_lowres "$fold" "${common[@]}"
done
boxunet_train 901 3d_cascade_fullres 0 "${common[@]}"
boxunet_train 901 3d_fullres 0 "${common[@]}"
results=$boxunet_results/$dataset
for configuration in 3d_lowres 3d_cascade_fullres 3d_fullres; do
    folds=(0)
    [ "$configuration" = 3d_lowres ] && folds=(0 1)
    output=$results/test_$configuration
    /usr/bin/time -f "$configuration prediction: %e s, peak %M KB" \
        boxunet_predict -i "$boxunet_raw/$dataset/imagesTs" -o "$output" -d 901 -c "$configuration" \
        -f "${folds[@]}" --continue --quiet
    boxunet_evaluate "$boxunet_raw/$dataset/labelsTs" "$output" -d 901 -np 2
done
