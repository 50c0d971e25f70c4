#!/usr/bin/env bash
# Installs everything the pack, its demo and its tests need, into a cache folder outside the clone
# (reused when present): a Python venv with ComfyUI's requirements and ours, and ComfyUI 0.3.75.
# Debian packages (chromium for the browser tests, espeak-ng for the demo voice, strace for the offline test)
# are installed when running as root. Idempotent: a second run only checks.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
source "$here/env.sh"

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v espeak-ng >/dev/null || missing+=(espeak-ng)
  command -v strace >/dev/null || missing+=(strace)  # the offline test traces the pack's network calls
  if [ ${#missing[@]} -gt 0 ]; then
    echo "[setup] apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" fonts-liberation >/dev/null
  fi
fi

stamp="$LATENTSYNC_VENV/.installed"
want="$(cat "$repo/requirements.txt" "$here/requirements-comfyui.txt" "$here/requirements-test.txt" "$here/constraints.txt" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  [ -x "$LATENTSYNC_VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$LATENTSYNC_VENV"
  pip() {  # quiet, and without the noise about local index folders that lack a package
    "$LATENTSYNC_VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$here/constraints.txt" "$@" \
      2> >(grep -v "is neither a file nor a directory" >&2)
  }
  echo "[setup] torch (this takes a few minutes the first time)"
  pip torch torchvision
  # torchaudio and spandrel pin torch loosely; --no-deps keeps pip from touching torch.
  pip --no-deps torchaudio spandrel
  echo "[setup] ComfyUI's requirements, the pack's and the tests'"
  pip -r "$here/requirements-comfyui.txt" -r "$repo/requirements.txt" -r "$here/requirements-test.txt"
  echo "$want" > "$stamp"
fi

"$LATENTSYNC_VENV/bin/python" "$here/comfyui.py" install --dest "$LATENTSYNC_COMFYUI"
