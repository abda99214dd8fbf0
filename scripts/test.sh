#!/usr/bin/env bash
# Run the test suite: tests/core (pure torch), tests/nodes (ComfyUI's executor in process),
# tests/e2e (a real ComfyUI server). Builds or reuses the cached environment first.
# Extra arguments go to pytest, e.g.  scripts/test.sh tests/core -x
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
cd "$SURGUN_ROOT"
if [ $# -eq 0 ]; then set -- tests; fi
exec "$(dirname "$SURGUN_PY")/pytest" -q "$@"  # the console script: the repository root stays off sys.path
