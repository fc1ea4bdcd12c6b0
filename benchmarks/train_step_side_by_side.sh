#!/usr/bin/env bash
# One training iteration side by side (documentation/benchmarks.md): nnU-Net v2's train_step and boxunet's in bf16
# and fp32, at the demo dataset's small plan (--gpu-memory-gb 1) and its full plan, one after the other.
# Usage: NNUNET_BIN=/tmp/nnunet_venv/bin bash benchmarks/train_step_side_by_side.sh ROOT
#   ROOT: a scratch folder (raw data, two preprocessed roots and the JSON results go there).
set -euo pipefail
root=${1:?ROOT}
: "${NNUNET_BIN:?NNUNET_BIN must name the bin folder of an nnU-Net v2 venv (documentation/benchmarks.md)}"
export boxunet_raw=$root/raw boxunet_results=$root/results
[ -d "$boxunet_raw/Dataset900_KiTSDemo" ] || boxunet_generate_demo -d 900 -n 20
for plan in small full; do
    export boxunet_preprocessed=$root/preprocessed_$plan
    budget=(); [ $plan = small ] && budget=(--gpu-memory-gb 1)
    [ -f "$boxunet_preprocessed/Dataset900_KiTSDemo/boxunet_plans.json" ] || \
        boxunet_plan_and_preprocess -d 900 -c 3d_fullres -np 2 "${budget[@]}"
done
for plan in small full; do
    export boxunet_preprocessed=$root/preprocessed_$plan
    iterations=6; [ $plan = full ] && iterations=2
    "$NNUNET_BIN/python" "$(dirname "$0")/nnunet_train_step.py" \
        "$boxunet_preprocessed/Dataset900_KiTSDemo/boxunet_plans.json" 3d_fullres --iterations $iterations \
        --warmup 1 > "$root/${plan}_nnunet.json"
    for precision in bf16 fp32; do
        boxunet_benchmark train -d 900 -c 3d_fullres --iterations $iterations --warmup 1 --precision $precision \
            -o "$root/${plan}_boxunet_$precision.json"
    done
done
grep -H '"median_seconds_per_iteration"\|"peak_rss_gb"' "$root"/*.json
