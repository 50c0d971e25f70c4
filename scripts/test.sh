#!/usr/bin/env bash
# Runs the test suite: installs what is missing first (scripts/setup.sh), then pytest in the pack's venv.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/test_vad.py -k onnx`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/setup.sh"
source "$here/env.sh"
cd "$(dirname "$here")"
exec "$LATENTSYNC_VENV/bin/python" -m pytest "$@"
