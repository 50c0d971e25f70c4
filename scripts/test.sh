#!/usr/bin/env bash
# Runs the test suite: installs what is missing first (scripts/setup.sh), then pytest in the pack's venv.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/test_vad.py -k onnx`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/setup.sh"
source "$here/env.sh"
cd "$(dirname "$here")"
# Two workers, a test file each at a time (a file's servers and models are set up once); LATENTSYNC_TEST_WORKERS=0
# runs everything in one process (as does `-n 0` after the other arguments).
exec "$LATENTSYNC_VENV/bin/python" -m pytest -n "${LATENTSYNC_TEST_WORKERS:-2}" --dist loadfile "$@"
