#!/usr/bin/env bash
# The dense demo dataset of the KiTS experiments (Dataset901_KiTSDemoDense: kidney, tumor and cyst as label
# maps, 20 training and 4 test cases at half resolution) with a 2-fold split, generated once into $boxunet_raw.
set -euo pipefail
dataset=Dataset901_KiTSDemoDense
if [ ! -d "$boxunet_raw/$dataset/labelsTs" ]; then
    boxunet_generate_demo -d 901 --name KiTSDemoDense --dense -n 20 --num-test 4 --size-scale 0.5 --overwrite
    python - "$boxunet_raw/$dataset" <<'PYTHON'
import json, sys
from pathlib import Path
folder = Path(sys.argv[1])  # two folds of 10 cases (boxunet reads splits_final.json from the raw folder)
cases = sorted(p.name[:-len(".nii.gz")] for p in (folder / "labelsTr").glob("*.nii.gz"))
folds = [cases[0::2], cases[1::2]]
splits = [{"train": sorted(folds[1 - k]), "val": sorted(folds[k])} for k in range(2)]
(folder / "splits_final.json").write_text(json.dumps(splits, indent=1))
PYTHON
fi
