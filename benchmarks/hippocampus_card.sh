#!/usr/bin/env bash
# The MSD Hippocampus card (documentation/hippocampus.md, step 6): on the walk-through's dataset 4 (steps 1-5
# done: dataset, boxes, plans, stage-1 masks), train FullySupervised and BoxThreeStage on the given folds with one
# budget (EPOCHS x 250 iterations, the unit of nnU-Net's nnUNetTrainer_<EPOCHS>epochs), and, when NNUNET_BIN names
# the bin folder of an nnU-Net v2 venv (documentation/benchmarks.md), nnU-Net v2 on the same split; then predict
# the test images (imagesTs) with each model's folds and score them with boxunet_evaluate against labelsTs.
# Usage: bash benchmarks/hippocampus_card.sh EPOCHS "FOLDS" [K] ["MODELS"]
#   EPOCHS: 5, 10, 20, 50, 100, ... (nnU-Net has a trainer of that length); FOLDS e.g. "0" or "0 1 2 3 4";
#   K: BoxThreeStage's group networks (default 3); MODELS: any of FullySupervised nnunet BoxThreeStage (default
#   all three, in that order; nnunet needs NNUNET_BIN).
# Data roots come from boxunet_raw / boxunet_preprocessed / boxunet_results; nnU-Net's go under
# $boxunet_results/nnunet_card. Every step resumes (--c, finished folds are skipped; boxunet folds keep a checkpoint
# after every epoch, so a killed run loses at most one epoch).
set -euo pipefail
epochs=${1:?EPOCHS}
folds=${2:-0}
k=${3:-3}
models=${4:-FullySupervised nnunet BoxThreeStage}
dataset=Dataset004_Hippocampus
raw=$boxunet_raw/$dataset
card=$boxunet_results/$dataset/card_${epochs}x250
mkdir -p "$card"
export boxunet_n_proc_DA=2 nnUNet_n_proc_DA=2

read -r -a fold_list <<< "$folds"

train_boxunet() {  # TRAINER: train the folds, then predict and score the test images
    local trainer=$1 fold options
    for fold in $folds; do
        [ -f "$boxunet_results/$dataset/${trainer}__boxunetPlans__3d_fullres/fold_$fold/checkpoint_final.pth" ] && continue
        options=(--epochs "$epochs" --iters-per-epoch 250 --save-every 1 --c --quiet)
        [ "$trainer" = BoxThreeStage ] && options+=(--k "$k")
        /usr/bin/time -v -o "$card/${trainer}_fold_$fold.time" \
            boxunet_train 4 3d_fullres "$fold" -tr "$trainer" "${options[@]}"
    done
    boxunet_predict -i "$raw/imagesTs" -o "$card/test_$trainer" -d 4 -c 3d_fullres -tr "$trainer" -f "${fold_list[@]}" \
        --continue --quiet
    boxunet_evaluate -d 4 "$raw/labelsTs" "$card/test_$trainer" --no-surface
}

train_nnunet() {  # nnU-Net v2 on boxunet's split, then predict and score the test images
    : "${NNUNET_BIN:?NNUNET_BIN must name the bin folder of an nnU-Net v2 venv (documentation/benchmarks.md)}"
    export nnUNet_raw=$card/nnunet/raw nnUNet_preprocessed=$card/nnunet/preprocessed nnUNet_results=$card/nnunet/results
    mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
    ln -sfn "$raw" "$nnUNet_raw/$dataset"
    if [ ! -d "$nnUNet_preprocessed/$dataset/nnUNetPlans_3d_fullres" ]; then
        "$NNUNET_BIN/nnUNetv2_plan_and_preprocess" -d 4 -c 3d_fullres -np 2
    fi
    # the same split: boxunet's folds (written by its first training) as nnU-Net's splits_final.json
    cp "$boxunet_preprocessed/$dataset/splits_final.json" "$nnUNet_preprocessed/$dataset/splits_final.json"
    local trainer=nnUNetTrainer_${epochs}epochs fold fold_dir resume
    for fold in $folds; do
        fold_dir=$nnUNet_results/$dataset/${trainer}__nnUNetPlans__3d_fullres/fold_$fold
        [ -f "$fold_dir/checkpoint_final.pth" ] && continue
        resume=()
        [ -f "$fold_dir/checkpoint_latest.pth" ] && resume=(--c)
        /usr/bin/time -v -o "$card/nnunet_fold_$fold.time" \
            "$NNUNET_BIN/nnUNetv2_train" 4 3d_fullres "$fold" -tr "$trainer" -device cpu "${resume[@]}"
    done
    "$NNUNET_BIN/nnUNetv2_predict" -i "$raw/imagesTs" -o "$card/test_nnunet" -d 4 -c 3d_fullres -tr "$trainer" \
        -f "${fold_list[@]}" -device cpu --continue_prediction
    boxunet_evaluate -d 4 "$raw/labelsTs" "$card/test_nnunet" --no-surface
}

# one model after the other on an otherwise idle machine (their times compare)
for model in $models; do
    case $model in
        FullySupervised | BoxThreeStage) train_boxunet "$model" ;;
        nnunet) train_nnunet ;;
        *) echo "unknown model $model (FullySupervised, nnunet or BoxThreeStage)" >&2; exit 2 ;;
    esac
done

python - "$card" <<'EOF'
import json, sys
from pathlib import Path
card = Path(sys.argv[1])
for name in ("FullySupervised", "BoxThreeStage", "nnunet"):
    summary = card / f"test_{name}" / "summary.json"
    if summary.is_file():
        mean = json.loads(summary.read_text())["mean"]
        print(f"{name}: test Dice " + ", ".join(f"label {k} {v['Dice']:.4f}" for k, v in mean.items()))
EOF
