#!/usr/bin/env bash
# The GPU benchmark (bench/gpu.py): presets x versions, quantization error, peak VRAM; fits in 8 minutes.
# Then per preset the real-time factor of a prepared run (bench/prepared.py: the full-size 1.5 UNet with random
# weights, the prepared video made once with one voice, then a second voice; rtf_prepared against rtf_cold),
# all in OUT-prepared.json; skipped with --tiny or LATENTSYNC_BENCH_PREPARED=0. The two parts together can pass a
# device call's 10 minutes: run them as two calls, LATENTSYNC_BENCH_PREPARED=0 first, then LATENTSYNC_BENCH_GPU=0.
#   bash bench/gpu.sh [--out bench-gpu.json] [--compile reduce-overhead] [--device cpu --tiny]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/scripts/env.sh"
python="$LATENTSYNC_VENV/bin/python"
[ -x "$python" ] || python="$(command -v python3)"
cd "$repo"
out=bench-gpu.json device=cuda tiny=0 previous=
for arg in "$@"; do
  case "$previous" in --out) out="$arg" ;; --device) device="$arg" ;; esac
  case "$arg" in --out=*) out="${arg#--out=}" ;; --device=*) device="${arg#--device=}" ;; --tiny) tiny=1 ;; esac
  previous="$arg"
done
if [ "${LATENTSYNC_BENCH_GPU:-1}" != 0 ]; then
  case " $* " in
    *" --out "* | *" --out="*) "$python" -m bench.gpu "$@" ;;
    *) "$python" -m bench.gpu --out bench-gpu.json "$@" ;;
  esac
fi
[ "$tiny" = 0 ] && [ "${LATENTSYNC_BENCH_PREPARED:-1}" != 0 ] || exit 0
presets=$("$python" -c 'from latentsync.sample.presets import PRESETS; print(",".join(PRESETS))')
"$python" -m bench.prepared --preset "$presets" --device "$device" --unet-version 1.5 --height 1920 \
  --seconds "${LATENTSYNC_BENCH_PREPARED_SECONDS:-4}" --threads 0 --out "${out%.json}-prepared.json" \
  | grep -E '^(cold|baseline|prepared)|"rtf_(cold|prepared)"' || echo "the prepared runs failed"
