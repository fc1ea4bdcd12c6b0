#!/usr/bin/env bash
# ACoL stage 1 on 40 KiTS-like box cases (documentation/benchmarks.md): the 40 first real KiTS23 label maps,
# resampled to 1.5 mm, painted with CT-like values, one tight box per tumor component, the kidney as dense label
# (benchmarks/kits23_pseudo_masks.py), then `boxunet_pseudo_labels --method acol` with the given mining parameters
# (default: the defaults), timed with /usr/bin/time. Its report.json scores, per case and on average, the boxes,
# ACoL's CAM and fused maps, its ConvCRF-refined masks and the default ConvCRF method's masks of the same cases.
# peak_gib is the largest single process's peak resident memory (GNU time), the main process or one worker.
# Usage: bash benchmarks/acol_kits_cases.sh KITS23_LABELS_FOLDER WORK_FOLDER ['{"preset": "fan2022"}']
set -euo pipefail
labels=${1:?KITS23_LABELS_FOLDER}
work=$(realpath -m "${2:?WORK_FOLDER}")
mining=${3:-"{}"}
export boxunet_raw=$work/raw boxunet_preprocessed=$work/preprocessed boxunet_results=$work/results
dataset=$boxunet_raw/Dataset931_KitsAcol
if [ ! -f "$dataset/dataset.json" ]; then
    python "$(dirname "$0")/kits23_pseudo_masks.py" "$labels" --cases 40 --spacing 1.5 --write-dataset "$dataset" \
        -o "$work/painted_cases.json"
fi
rm -f "$work"/preprocessed/Dataset931_KitsAcol/pseudo_labels/stage1/region_miner_label*.pth  # time the training too
/usr/bin/time -v -o "$work/acol.time" boxunet_pseudo_labels -d 931 --method acol -np 2 --overwrite \
    --mining-parameters "$mining"
python - "$work" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
report = json.loads((work / "preprocessed/Dataset931_KitsAcol/pseudo_labels/stage1/report.json").read_text())
times = (work / "acol.time").read_text().splitlines()
wall = next(line for line in times if "Elapsed (wall clock)" in line).split()[-1]
peak = int(next(line for line in times if "Maximum resident" in line).split()[-1]) / 2 ** 20
print(json.dumps({"mean": report["mean"], "miners": {label: {"epochs": len(miner["losses"]),
                                                               "trained_now": miner["trained_now"]}
                                                       for label, miner in report["region_miners"].items()},
                  "wall": wall, "peak_gib": round(peak, 2)}, indent=1))
PY
