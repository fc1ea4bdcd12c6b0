#!/usr/bin/env bash
# Install boxunet and its dependencies into the current Python environment.
# torch is installed first as the local CPU build 2.13.0 when no torch is present, so that pip does not
# pull a multi-GB CUDA build; any torch >= 2.1 that is already installed is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    "$PYTHON" -m pip install --quiet "torch==2.13.0"
fi
"$PYTHON" -m pip install --quiet -e ".[test]"
