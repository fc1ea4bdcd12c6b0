#!/usr/bin/env bash
# Set up boxunet and run the main job on the built-in synthetic KiTS-like dataset (Dataset900_KiTSDemo):
# generate 20 cases -> verify, fingerprint, plan and preprocess. Data goes to ./boxunet_data/ unless the
# boxunet_raw / boxunet_preprocessed / boxunet_results environment variables say otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export boxunet_raw=${boxunet_raw:-$PWD/boxunet_data/raw}
export boxunet_preprocessed=${boxunet_preprocessed:-$PWD/boxunet_data/preprocessed}
export boxunet_results=${boxunet_results:-$PWD/boxunet_data/results}
if [ ! -f "$boxunet_raw/Dataset900_KiTSDemo/dataset.json" ]; then
    boxunet_generate_demo -d 900 -n 20
fi
boxunet_plan_and_preprocess -d 900 --gpu-memory-gb 1 -np 2
