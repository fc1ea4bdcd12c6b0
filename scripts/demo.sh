#!/usr/bin/env bash
# Set up boxunet and run the main job on the built-in synthetic KiTS-like dataset (Dataset900_KiTSDemo):
# generate 20 training + 4 test cases (tumors given as boxes only) -> verify, fingerprint, plan and
# preprocess -> train fold 0 of 3d_fullres from the boxes with the three-stage box trainer (stage-1 ConvCRF
# pseudo masks, 2 group networks and fusion masks, the final network with VWCE) briefly and validate it at
# the original geometry against the dense tumor labels -> predict the test images -> evaluate them.
# Sized for a 2-core CPU (half-resolution phantoms, a 0.25 GB memory budget, short epochs): 11m10s
# measured from scratch on 2 cores. Such short training does not yet find the small tumors. Data goes to ./boxunet_data/ unless the
# boxunet_raw / boxunet_preprocessed / boxunet_results environment variables say otherwise.
# Rerunning resumes: the dataset is kept, finished cases are skipped, training continues (--c).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export boxunet_raw=${boxunet_raw:-$PWD/boxunet_data/raw}
export boxunet_preprocessed=${boxunet_preprocessed:-$PWD/boxunet_data/preprocessed}
export boxunet_results=${boxunet_results:-$PWD/boxunet_data/results}
if [ ! -d "$boxunet_raw/Dataset900_KiTSDemo/labelsTs" ]; then
    boxunet_generate_demo -d 900 -n 20 --num-test 4 --size-scale 0.5 --overwrite
fi
boxunet_plan_and_preprocess -d 900 --gpu-memory-gb 0.25 -np 2 -c 3d_fullres
boxunet_pseudo_labels -d 900 -np 2
boxunet_train 900 3d_fullres 0 --k 2 --group-epochs 1 --epochs 8 --iters-per-epoch 20 --val-iters 5 --c --quiet
predictions=${boxunet_results}/Dataset900_KiTSDemo/demo_predictions_imagesTs
boxunet_predict -i "$boxunet_raw/Dataset900_KiTSDemo/imagesTs" -o "$predictions" -d 900 -c 3d_fullres -f 0 --continue --quiet
boxunet_evaluate "$boxunet_raw/Dataset900_KiTSDemo/labelsTs" "$predictions" -d 900
model=$boxunet_results/Dataset900_KiTSDemo/BoxThreeStage__boxunetPlans__3d_fullres/fold_0
echo "stage-1 pseudo masks vs boxes (Dice against the dense tumor labels): $boxunet_preprocessed/Dataset900_KiTSDemo/pseudo_labels/stage1/report.json"
echo "boxes, stage-1 and fusion masks of the training cases: $model/box_report.json"
echo "validation summary: $model/validation/summary.json"
echo "test-set predictions and summary.json: $predictions"
