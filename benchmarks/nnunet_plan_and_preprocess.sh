#!/usr/bin/env bash
# Run nnU-Net v2's plan_and_preprocess on a raw dataset into a fresh, temporary preprocessed folder,
# for a side-by-side measurement with boxunet:
#   boxunet_benchmark command --repeats 3 -- bash benchmarks/nnunet_plan_and_preprocess.sh RAW_ROOT DATASET_ID
# NNUNET_BIN points at the folder holding nnUNetv2_plan_and_preprocess (e.g. a throwaway venv's bin/).
set -euo pipefail
raw_root=$1
dataset=$2
bin=${NNUNET_BIN:-$(dirname "$(command -v nnUNetv2_plan_and_preprocess)")}
out=$(mktemp -d "${TMPDIR:-/tmp}/nnunet_preprocessed_XXXX")
trap 'rm -rf "$out"' EXIT
nnUNet_raw=$raw_root nnUNet_preprocessed=$out nnUNet_results=$out \
    "$bin/nnUNetv2_plan_and_preprocess" -d "$dataset" -np 2 >/dev/null 2>&1
