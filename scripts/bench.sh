#!/usr/bin/env bash
# Run a benchmark from benchmarks/ in the cached environment:  scripts/bench.sh NAME [args]
# (NAME is a file benchmarks/NAME.py; results go to benchmarks/results/).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
name=${1:?usage: scripts/bench.sh NAME [args]}; shift
exec "$SURGUN_PY" "$SURGUN_ROOT/benchmarks/$name.py" "$@"
