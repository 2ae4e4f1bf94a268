#!/usr/bin/env bash
# The GPU check before the GPU-day, on a fresh GPU machine (no network; zstandard/datatrove not needed), < 8 minutes:
#   MFU and peak memory, plain vs chunked loss, at micro-batch 16 and at the largest that fits (each point its own
#   process); the Trainer with accumulation, checkpoint, kill and resume; eval and generation throughput.
#
#   bash bench/gpu_check.sh            # print the results (and $OUT/gpu_check.json when OUT is set)
#   bash bench/gpu_check.sh --record   # also write BENCHMARKS.md sections gpu-check-* (`ledgerlm plan` then reads the MFU)
#
# The same code runs on the CPU in the default tests: `python -m bench.gpu_check all --dry-run` (tests/test_gpu_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA GPU visible to $PY (for the CPU dry run: $PY -m bench.gpu_check all --dry-run)" >&2
  exit 2
fi
# one inductor cache for every point's process: the trainer's resume and same-shape points reuse compiled graphs
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$(mktemp -d /tmp/gpu_check_inductor.XXXX)}
"$PY" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(), 'torch', torch.__version__)"
json=${OUT:-/tmp}/gpu_check.json
timeout 470 "$PY" -m bench.gpu_check all --json "$json" "$@"
echo "gpu_check: results in $json"
