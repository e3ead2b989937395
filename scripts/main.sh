#!/usr/bin/env bash
# Set up, then run the main job on the embedded default: SmolLM2-135M-Instruct, SFT on Game of 24
# solver demonstrations, RLSF (PPO, token-level rewards), held-out evaluation before and after.
# Extra arguments go to `rlsf pipeline` (e.g. --steps 60 --sft.steps 200 for a longer run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec rlsf pipeline --config configs/game24.yaml "$@"
