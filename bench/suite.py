"""Test-suite benchmark: the suite's wall time on a quiet machine and with one core busy (issue 21).

Runs the README's test command (`scripts/test.sh`: pytest on two workers in the pack's venv, `CI=true`) twice in
a clean clone of this repository's HEAD: once on a quiet machine, once while a busy-loop process occupies one
core. Prints each run's
wall time and result, and the busy/quiet ratio. Goals: quiet <= 12 minutes of tests after set-up; busy passes
in <= 2x the quiet time.

    python -m bench.suite [--runs quiet busy] [--pytest-args "-x -q"]

Set-up (venv, ComfyUI, Chromium) must be done first (`bash scripts/setup.sh`); it is not timed. Nothing else
should run on the machine meanwhile: the point is to measure the suite, not the neighbours.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.busy import one_core_busy

REPO = Path(__file__).resolve().parents[1]
GOAL_QUIET_S = 12 * 60
GOAL_RATIO = 2.0


def run_suite(clone: Path, pytest_args: list[str]) -> tuple[float, int, str]:
    """(seconds, exit code, pytest's summary line) of one run of the test command in `clone`."""
    env = dict(os.environ, CI="true")
    env.setdefault("LATENTSYNC_SHARED", str(REPO.parent / "shared"))
    start = time.perf_counter()
    # scripts/test.sh: the README's command (its set-up check takes a second once set-up is done).
    out = subprocess.run(["bash", "scripts/test.sh", "-p", "no:cacheprovider", "-rfE", *pytest_args],
                         cwd=clone, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = [line for line in out.stdout.splitlines() if re.search(r"\b(passed|failed|error)", line)]
    failed = [line for line in out.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    if out.returncode:
        print(out.stdout[-6000:], file=sys.stderr)
    summary = lines[-1].strip("= ") if lines else out.stderr[-300:]
    return seconds, out.returncode, "; ".join([summary, *failed])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", choices=("quiet", "busy"), default=["quiet", "busy"])
    parser.add_argument("--pytest-args", default="-q", help="arguments for pytest (default: -q)")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        for name in args.runs:
            with one_core_busy() if name == "busy" else contextlib.nullcontext():
                results[name] = run_suite(clone, shlex.split(args.pytest_args))
            seconds, code, summary = results[name]
            print(f"{name:6} {seconds / 60:6.1f} min  exit {code}  {summary}", flush=True)
    ok = all(code == 0 for _, code, _ in results.values())
    if "quiet" in results:
        ok &= results["quiet"][0] <= GOAL_QUIET_S
        print(f"quiet: {results['quiet'][0] / 60:.1f} min (goal <= {GOAL_QUIET_S / 60:.0f})")
    if {"quiet", "busy"} <= set(results):
        ratio = results["busy"][0] / results["quiet"][0]
        ok &= ratio <= GOAL_RATIO
        print(f"busy/quiet: {ratio:.2f}x (goal <= {GOAL_RATIO:.0f}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
