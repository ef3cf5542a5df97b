#!/usr/bin/env bash
# The GPU check of issue 15: one run, under 8 minutes on one GPU, one JSON (gpu_check.py says
# what it measures). Prepared on a CPU-only machine; run it on the first GPU at hand:
#
#   bash benchmarks/gpu_check.sh              # -> benchmarks/results/gpu_check_<date>.json
#   bash benchmarks/gpu_check.sh --dry_run    # tiny sizes on any machine: checks the script
#   PY=python3 bash benchmarks/gpu_check.sh   # another interpreter than .venv/bin/python
#
# Other arguments go to gpu_check.py (--out=FILE, --budget_s=S, --keep_dir=DIR). The run is
# killed after LIMIT_S seconds (default 480); the JSON then holds what was measured by then.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LIMIT_S=${LIMIT_S:-480}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
export TF_GPU_THREAD_MODE=${TF_GPU_THREAD_MODE:-gpu_private}  # as train.py sets it
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=index,name,driver_version,memory.total,utilization.gpu --format=csv
else
  echo "no nvidia-smi: no GPU driver here${1:+ ($*)}"
fi
start=$(date +%s)
status=0
timeout --signal=TERM --kill-after=20 "$LIMIT_S" "$PY" -m benchmarks.gpu_check "$@" || status=$?
echo "gpu_check.sh: $(( $(date +%s) - start )) s, exit status $status" \
     "$([ "$status" = 124 ] && echo "(killed at LIMIT_S=$LIMIT_S s)")"
exit "$status"
