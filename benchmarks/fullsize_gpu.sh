#!/usr/bin/env bash
# The full-size step benchmark (benchmarks/fullsize.py) on a CUDA GPU: every family (SD1.5, SDXL,
# SANA-1.5 1.6B and 4.8B), SurgUn and ESD-x, localised and cross-attention presets, gradient
# checkpointing on and off; peak memory from torch.cuda.max_memory_allocated. Results stream to
# benchmarks/results/fullsize_gpu.jsonl (a rerun skips what is there) with the summary in
# fullsize_gpu.{json,md}. Needs: pip install "comfyui-surgun[diffusers]" (torch with CUDA), or
# the test environment (source scripts/env.sh; PYTHON=$SURGUN_PY).
#   benchmarks/fullsize_gpu.sh                 # bf16 weights (deltas and loss in fp32)
#   DTYPE=float32 benchmarks/fullsize_gpu.sh   # fp32 weights
#   benchmarks/fullsize_gpu.sh --only sdxl     # one family
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else '[SurgUn] no CUDA device visible to torch; this script measures on a GPU (benchmarks/fullsize.py measures on the CPU).')"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" benchmarks/fullsize.py --all --device cuda --dtype "${DTYPE:-bfloat16}" --threads "${THREADS:-8}" \
  --results "benchmarks/results/fullsize_gpu${DTYPE:+_$DTYPE}.jsonl" "$@"
