#!/usr/bin/env bash
# Set up, then run the main job on the embedded default: SmolLM2-135M-Instruct, SFT on Game of 24
# solver demonstrations, RLSF (PPO, token-level rewards), held-out evaluation before and after,
# and the equal-time baseline (SFT continued for as long as RL took) evaluated beside it.
# Extra arguments go to `rlsf pipeline` (e.g. --steps 60 --sft.steps 200 for a longer run).
# Data: $RLSF_DATA_DIR, else ../shared/data when present, else the tree-of-thoughts-llm package.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
if [ -z "${RLSF_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
    export RLSF_DATA_DIR="$(cd ../shared/data && pwd)"
fi
exec rlsf pipeline --config configs/game24.yaml "$@"
