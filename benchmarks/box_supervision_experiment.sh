#!/usr/bin/env bash
# Box supervision on the built-in synthetic dataset (documentation/box_supervision.md, Table-1/2 style):
# stage-1 pseudo masks, BoxThreeStage (K group networks, fusion masks, VWCE), and FullySupervised with the
# same final-network budget, on fold 0 of the half-resolution demo dataset (as scripts/demo.sh plans it).
# Usage: bash benchmarks/box_supervision_experiment.sh [EPOCHS] [ITERATIONS] [GROUP_EPOCHS] [LOSS] [CASES]
# CASES training cases (default 20, Dataset900_KiTSDemo as in the demo; any other number makes
# Dataset902_KiTSDemoN<CASES>, so that each group network of K = 3 sees CASES x 4/5 / 3 cases; remove an
# existing Dataset902 of another size first).
# Data roots come from the boxunet_raw / boxunet_preprocessed / boxunet_results environment variables.
set -euo pipefail
epochs=${1:-40}
iterations=${2:-25}
group_epochs=${3:-20}
loss=${4:-vwce}
cases=${5:-20}
if [ "$cases" = 20 ]; then id=900 name=KiTSDemo; else id=902 name=KiTSDemoN$cases; fi
if [ ! -d "$boxunet_raw/Dataset${id}_$name/labelsTs" ]; then
    boxunet_generate_demo -d "$id" --name "$name" -n "$cases" --num-test 4 --size-scale 0.5 --overwrite
fi
boxunet_plan_and_preprocess -d "$id" --gpu-memory-gb 0.25 -np 2 -c 3d_fullres --quiet
boxunet_pseudo_labels -d "$id" -np 2
common=(--epochs "$epochs" --iters-per-epoch "$iterations" --val-iters 5 --c --quiet)
boxunet_train "$id" 3d_fullres 0 -tr FullySupervised "${common[@]}"
boxunet_train "$id" 3d_fullres 0 -tr BoxThreeStage --k 3 --group-epochs "$group_epochs" --loss "$loss" "${common[@]}"
python benchmarks/box_stage2_masks.py "$id" -o "$boxunet_results/Dataset${id}_$name/stage2_masks_fold_0.json"
results=$boxunet_results/Dataset${id}_$name
python - "$results" <<'EOF'
import json, sys
from pathlib import Path
results = Path(sys.argv[1])
for trainer in ("FullySupervised", "BoxThreeStage"):
    fold = results / f"{trainer}__boxunetPlans__3d_fullres" / "fold_0"
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    print(f"{trainer}: validation Dice per label {json.dumps({k: round(v['Dice'], 4) for k, v in summary['mean'].items()})}")
    if (fold / "box_report.json").is_file():
        print(f"{trainer}: training-case masks vs reference {json.loads((fold / 'box_report.json').read_text())['mean']}")
EOF
