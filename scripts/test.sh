#!/usr/bin/env bash
# Set up boxunet and run the whole test suite (the command CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PYTHON=${PYTHON:-python3}
exec "$PYTHON" -m pytest tests -q -p no:cacheprovider "$@"
