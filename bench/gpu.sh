#!/usr/bin/env bash
# The GPU benchmark (bench/gpu.py): presets x versions, quantization error, peak VRAM; fits in 8 minutes.
#   bash bench/gpu.sh [--out bench-gpu.json] [--compile reduce-overhead] [--device cpu --tiny]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/scripts/env.sh"
python="$LATENTSYNC_VENV/bin/python"
[ -x "$python" ] || python="$(command -v python3)"
cd "$repo"
case " $* " in
  *" --out "* | *" --out="*) exec "$python" -m bench.gpu "$@" ;;
  *) exec "$python" -m bench.gpu --out bench-gpu.json "$@" ;;
esac
