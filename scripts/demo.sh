#!/usr/bin/env bash
# Set up boxunet and run the main job on the built-in synthetic KiTS-like dataset (Dataset900_KiTSDemo):
# generate 20 training + 4 test cases -> verify, fingerprint, plan and preprocess -> train fold 0 of
# 3d_fullres briefly and validate it at the original geometry -> predict the test images -> evaluate them
# against their labels. Sized for a 2-core CPU (half-resolution phantoms, a 0.25 GB memory budget,
# 10 short epochs): about 10 minutes. Data goes to ./boxunet_data/ unless the
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
boxunet_train 900 3d_fullres 0 --epochs 10 --iters-per-epoch 20 --val-iters 5 --c --quiet
predictions=${boxunet_results}/Dataset900_KiTSDemo/demo_predictions_imagesTs
boxunet_predict -i "$boxunet_raw/Dataset900_KiTSDemo/imagesTs" -o "$predictions" -d 900 -c 3d_fullres -f 0 --continue --quiet
boxunet_evaluate "$boxunet_raw/Dataset900_KiTSDemo/labelsTs" "$predictions" -d 900
echo "validation summary: $boxunet_results/Dataset900_KiTSDemo/Trainer__boxunetPlans__3d_fullres/fold_0/validation/summary.json"
echo "test-set predictions and summary.json: $predictions"
