#!/usr/bin/env bash
# Set up boxunet and run the main job on the built-in synthetic KiTS-like dataset (Dataset900_KiTSDemo):
# generate 20 training + 4 test cases (tumors given as boxes only; each case cropped to its kidneys) -> verify,
# fingerprint, plan and preprocess -> stage-1 pseudo masks from the boxes -> train fold 0 of 3d_fullres with the
# three-stage box trainer (2 group networks and fusion masks, then the final network with VWCE) and validate it
# at the original geometry -> predict the test images -> evaluate them -> one table: boxes vs stage-1 vs fusion
# masks (training cases) and the box-trained model's test Dice, with the file each figure comes from.
# Sized for a 2-core CPU (bfloat16 training steps where the CPU has them); documentation/demo_dataset.md gives
# the time and the results. Data goes to ./boxunet_data/ unless the boxunet_raw / boxunet_preprocessed /
# boxunet_results environment variables say otherwise. Rerunning resumes: the dataset is kept, finished cases
# are skipped, training continues (--c).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export boxunet_raw=${boxunet_raw:-$PWD/boxunet_data/raw}
export boxunet_preprocessed=${boxunet_preprocessed:-$PWD/boxunet_data/preprocessed}
export boxunet_results=${boxunet_results:-$PWD/boxunet_data/results}
if [ ! -d "$boxunet_raw/Dataset900_KiTSDemo/labelsTs" ]; then
    boxunet_generate_demo -d 900 -n 20 --num-test 4 --size-scale 0.75 --crop-margin 15 --no-cysts --overwrite
fi
boxunet_plan_and_preprocess -d 900 -np 2 -c 3d_fullres --gpu-memory-gb 0.25
boxunet_pseudo_labels -d 900 -np 2
boxunet_train 900 3d_fullres 0 --k 2 --group-epochs 1 --epochs 14 --iters-per-epoch 50 --val-iters 5 --loss vwce_dice --c
predictions=${boxunet_results}/Dataset900_KiTSDemo/demo_predictions_imagesTs
boxunet_predict -i "$boxunet_raw/Dataset900_KiTSDemo/imagesTs" -o "$predictions" -d 900 -c 3d_fullres -f 0 --continue --quiet
boxunet_evaluate "$boxunet_raw/Dataset900_KiTSDemo/labelsTs" "$predictions" -d 900
echo
echo "Box supervision on the demo (tumor Dice against the dense labels, which training never saw):"
boxunet_box_report -d 900 --test "$predictions"
model=$boxunet_results/Dataset900_KiTSDemo/BoxThreeStage__boxunetPlans__3d_fullres/fold_0
echo "pictures of boxes and masks: $boxunet_preprocessed/Dataset900_KiTSDemo/pseudo_labels/stage1/pictures/ (stage 1),"
echo "    $model/stage2/fusion/pictures/ (stage 1 and fusion)"
echo "every test metric: $predictions/summary.json; the training log: $model/training_log.txt"
