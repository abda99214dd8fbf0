# shellcheck shell=bash
# Sourced by scripts/test.sh and scripts/demo.sh: finds (or builds) the cached
# test environment and ComfyUI 0.33.0, both outside the repository.
#
#   SURGUN_CACHE   cache root               (default: ~/.cache/surgun)
#   COMFYUI_PATH   a ComfyUI 0.33.0 checkout (default: $SURGUN_CACHE/comfyui-783545f6)
#   SURGUN_PYTHON  interpreter for the venv  (default: python3.11, else python3)
#
# After sourcing: $SURGUN_PY is the venv's python and $COMFYUI_PATH is exported.

COMFYUI_COMMIT=783545f689a0af730065994b46b382ae24844c99
COMFYUI_URL=${COMFYUI_URL:-https://github.com/comfyanonymous/ComfyUI.git}
SURGUN_CACHE=${SURGUN_CACHE:-$HOME/.cache/surgun}
SURGUN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

_surgun_die() {
  echo "[SurgUn] $*" >&2
  exit 2
}

_surgun_find_comfyui() {
  COMFYUI_PATH=${COMFYUI_PATH:-$SURGUN_CACHE/comfyui-${COMFYUI_COMMIT:0:8}}
  if [ -f "$COMFYUI_PATH/comfy/model_base.py" ]; then
    export COMFYUI_PATH
    return 0
  fi
  echo "[SurgUn] ComfyUI not found at $COMFYUI_PATH; cloning $COMFYUI_URL @ ${COMFYUI_COMMIT:0:8}" >&2
  mkdir -p "$(dirname "$COMFYUI_PATH")"
  local tmp="$COMFYUI_PATH.partial.$$"
  rm -rf "$tmp"
  if git clone --quiet --filter=blob:none "$COMFYUI_URL" "$tmp" 2>/dev/null \
      && git -C "$tmp" checkout --quiet "$COMFYUI_COMMIT" 2>/dev/null; then
    mv "$tmp" "$COMFYUI_PATH"
    export COMFYUI_PATH
    return 0
  fi
  rm -rf "$tmp"
  _surgun_die "ComfyUI 0.33.0 is needed and could not be cloned (no network?).
  Provide a checkout of commit $COMFYUI_COMMIT in one of two ways:
    export COMFYUI_PATH=/path/to/ComfyUI        # an existing checkout at that commit
    or place it at $SURGUN_CACHE/comfyui-${COMFYUI_COMMIT:0:8}
  (git clone $COMFYUI_URL && git -C ComfyUI checkout $COMFYUI_COMMIT)"
}

_surgun_build_venv() {
  local py=${SURGUN_PYTHON:-}
  if [ -z "$py" ]; then
    if command -v python3.11 >/dev/null 2>&1; then py=python3.11; else py=python3; fi
  fi
  # The venv is keyed on everything that decides its contents.
  local key
  key=$( { echo "torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0"; "$py" --version 2>&1;
           cat "$COMFYUI_PATH/requirements.txt" "$SURGUN_ROOT/tests/requirements.txt"; } \
         | sha256sum | cut -c1-12)
  SURGUN_VENV=$SURGUN_CACHE/venv-$key
  SURGUN_PY=$SURGUN_VENV/bin/python
  if [ -f "$SURGUN_VENV/.complete" ]; then
    return 0
  fi
  echo "[SurgUn] building the test environment at $SURGUN_VENV (about 4 minutes, 7 GB)" >&2
  rm -rf "$SURGUN_VENV"
  "$py" -m venv "$SURGUN_VENV" || _surgun_die "could not create a venv with $py; set SURGUN_PYTHON to a Python 3.10+ interpreter"
  local pip=("$SURGUN_PY" -m pip install --quiet --disable-pip-version-check)
  # torch/torchvision/torchaudio are pinned to releases that work together with
  # ComfyUI 0.33 (it imports torchvision and torchaudio at start-up).
  "${pip[@]}" torch==2.14.1 torchvision==0.29.1 || _surgun_die "pip could not install torch==2.14.1 torchvision==0.29.1"
  "${pip[@]}" --no-deps torchaudio==2.11.0 || _surgun_die "pip could not install torchaudio==2.11.0"
  grep -v -E '^(torch|torchvision|torchaudio)([^a-z_-]|$)' "$COMFYUI_PATH/requirements.txt" > "$SURGUN_VENV/comfy-requirements.txt"
  "${pip[@]}" -r "$SURGUN_VENV/comfy-requirements.txt" -r "$SURGUN_ROOT/tests/requirements.txt" \
    || _surgun_die "pip could not install ComfyUI's requirements (see above)"
  touch "$SURGUN_VENV/.complete"
}

_surgun_find_comfyui
_surgun_build_venv
export COMFYUI_PATH SURGUN_PY SURGUN_ROOT SURGUN_CACHE
