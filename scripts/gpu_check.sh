#!/usr/bin/env bash
# The GPU check: the CUDA tests, timed training steps of every paper-scale run and the LM engine on a tiny model,
# in under 8 minutes on one GPU -> benchmarks/results/gpu.json. Without a GPU: a dry run that writes nothing.
# What it runs and why: scripts/gpu_check.py. Usage: bash scripts/gpu_check.sh [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
python=.venv/bin/python
[ -x "$python" ] || python=python3
# the script keeps to its own budget; this stops it should something hang (a collective, a driver)
exec timeout --kill-after=10 480 "$python" scripts/gpu_check.py "$@"
