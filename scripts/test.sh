#!/usr/bin/env bash
# Set up, then run the test suite (fast tier; add --runslow for real-model checks).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec python -m pytest -q "$@"
