#!/usr/bin/env bash
# Run a benchmark in the cached environment (results go to benchmarks/results/):
#   scripts/bench.sh distractors            -> benchmarks/distractors.py
#   scripts/bench.sh localizer              -> benchmarks/localizer.py
#   scripts/bench.sh toy_canvas.erasure     -> benchmarks/toy_canvas/erasure.py   (v1, kept for reference)
#   scripts/bench.sh toy_canvas.yardstick   -> benchmarks/toy_canvas/yardstick.py (v2: held out, resumable)
# Extra arguments go to the benchmark (e.g. --quick).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
name=${1:?usage: scripts/bench.sh NAME [args]}; shift
cd "$SURGUN_ROOT"
exec "$SURGUN_PY" "$SURGUN_ROOT/scripts/bench.py" "$name" "$@"
