#!/usr/bin/env bash
# The one GPU check (about 10 minutes on one H100/H200): a subset of the full profile
# and the monitor overhead on ResNet-56 at batch 128.  Usage, from the repository root:
#     bash benchmarks/gpu_check.sh OUT_DIR
# Uses the machine's python3 (its torch); the package is imported from this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu_check_out}}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
nvidia-smi -L 2>/dev/null || echo "nvidia-smi: no GPU visible"
timeout 570 "$PY" benchmarks/gpu_check.py "$out"
