#!/usr/bin/env bash
# Set up, then run the test suite (fast tier; add --runslow for real-model checks, --runfuzz for
# the 10,000-input checker fuzzing). Data: $RLSF_DATA_DIR, else ../shared/data when present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
if [ -z "${RLSF_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
    export RLSF_DATA_DIR="$(cd ../shared/data && pwd)"
fi
exec python -m pytest -q "$@"
