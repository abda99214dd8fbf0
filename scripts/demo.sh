#!/usr/bin/env bash
# The main job: erase a concept end to end through ComfyUI's real executor, no download.
# Builds or reuses the cached environment first. Extra arguments go to scripts/demo.py
# (--out DIR, --steps N, --seed N).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "$SURGUN_PY" "$SURGUN_ROOT/scripts/demo.py" "$@"
