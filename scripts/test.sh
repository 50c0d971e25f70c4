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
workers="${LATENTSYNC_TEST_WORKERS:-2}"
if [ "$workers" != 0 ]; then
  # Each worker, and the ComfyUI servers and subprocesses it starts, on one OpenMP thread (unless set): two workers
  # then share two cores instead of four threads spinning against each other (10.7 instead of 11.7-13.5 minutes).
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
fi
exec "$LATENTSYNC_VENV/bin/python" -m pytest -n "$workers" --dist loadfile "$@"
