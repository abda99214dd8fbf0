#!/usr/bin/env bash
# Find (or install) the Chromium the browser tests drive, and print its path.
#
#   SURGUN_CHROMIUM   a Chromium/Chrome binary to use instead (nothing is installed then)
#
# Playwright (tests/requirements.txt) cannot download its own browser build where these tests
# run, so they drive the system's Chromium: Debian/Ubuntu's `chromium` package, installed here
# with apt-get when it is missing (as root, or through sudo without a password).
set -euo pipefail

say() { echo "[SurgUn] $*" >&2; }

if [ -n "${SURGUN_CHROMIUM:-}" ]; then
  if [ -x "$SURGUN_CHROMIUM" ]; then echo "$SURGUN_CHROMIUM"; exit 0; fi
  say "SURGUN_CHROMIUM=$SURGUN_CHROMIUM is not an executable file; point it at a Chromium binary or unset it."
  exit 2
fi

for bin in /usr/bin/chromium /usr/bin/chromium-browser; do
  # Ubuntu's chromium-browser can be a snap shim that prints a notice instead of running
  if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then echo "$bin"; exit 0; fi
done

if ! command -v apt-get >/dev/null 2>&1; then
  say "Chromium is not installed and this system has no apt-get. Install Chromium and set SURGUN_CHROMIUM=/path/to/chromium."
  exit 2
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  say "Chromium is not installed and installing it needs root: run 'sudo apt-get install -y chromium', or set SURGUN_CHROMIUM=/path/to/chromium."
  exit 2
fi
say "installing Debian's chromium for the browser tests (apt-get, about a minute)"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq >&2 || say "apt-get update failed; trying the package lists already present"
"${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-liberation >&2 \
  || { say "apt-get could not install chromium (see above). Install it by hand or set SURGUN_CHROMIUM."; exit 2; }
for bin in /usr/bin/chromium /usr/bin/chromium-browser; do
  if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
done
say "apt-get installed chromium but no /usr/bin/chromium was found; set SURGUN_CHROMIUM=/path/to/chromium."
exit 2
