#!/usr/bin/env bash
# The main job so far: installs everything (scripts/setup.sh), starts a local ComfyUI 0.3.75 with the
# pack, and runs the VAD sample workflow on a voice it speaks with espeak-ng, or on your own audio:
#   bash scripts/demo.sh [--audio YOUR_VOICE.wav] [--serve]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/setup.sh"
source "$here/env.sh"
exec "$LATENTSYNC_VENV/bin/python" "$here/demo.py" --comfyui "$LATENTSYNC_COMFYUI" --home "$LATENTSYNC_HOME" "$@"
