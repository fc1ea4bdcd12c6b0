#!/usr/bin/env bash
# Prediction with the exported ONNX graph against PyTorch fp32 and bf16 on the same real cases, in one run
# (documentation/benchmarks.md): the MSD Hippocampus walk-through's dataset 4 (documentation/hippocampus.md, steps
# 1-3), a short FullySupervised fold 0 (trained here unless it exists), its 27 held-out test images.
# Usage: bash benchmarks/onnx_vs_torch.sh OUTPUT_FOLDER   (boxunet_raw / _preprocessed / _results set)
set -euo pipefail
out=${1:?OUTPUT_FOLDER}
mkdir -p "$out"
model=$boxunet_results/Dataset004_Hippocampus/FullySupervised__boxunetPlans__3d_fullres
images=$boxunet_raw/Dataset004_Hippocampus/imagesTs
[ -f "$model/fold_0/checkpoint_final.pth" ] || \
    boxunet_train 4 3d_fullres 0 -tr FullySupervised --epochs 2 --iters-per-epoch 100 --val-iters 5 --quiet
boxunet_export_onnx -d 4 -c 3d_fullres -tr FullySupervised -f 0
for run in torch:fp32 torch:bf16 onnxruntime:fp32; do
    backend=${run%%:*} precision=${run##*:}
    boxunet_benchmark predict -d 4 -c 3d_fullres -tr FullySupervised -f 0 -i "$images" --repeats 3 \
        --backend "$backend" --precision "$precision" -o "$out/time_${backend}_$precision.json"
    boxunet_predict -i "$images" -o "$out/labels_${backend}_$precision" -d 4 -c 3d_fullres -tr FullySupervised -f 0 \
        --backend "$backend" --precision "$precision" --quiet
done
python - "$out" <<'PYTHON'
import json, sys
from pathlib import Path
import numpy as np
import SimpleITK as sitk
out = Path(sys.argv[1])
reference = out / "labels_torch_fp32"
for other in ("labels_onnxruntime_fp32", "labels_torch_bf16"):
    differing = total = 0
    for file in sorted(reference.glob("*.nii.gz")):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(file)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(out / other / file.name)))
        differing += int((a != b).sum())
        total += a.size
    print(f"{other} vs labels_torch_fp32: {differing} of {total} voxels differ ({100 * differing / total:.4f} %)")
for file in sorted(out.glob("time_*.json")):
    record = json.loads(file.read_text())
    print(file.stem, {mode: (record[mode]["median_seconds_per_case"], record[mode]["median_network_seconds_per_case"],
                             record[mode]["peak_process_rss_gb"]) for mode in ("with_tta", "without_tta")})
PYTHON
