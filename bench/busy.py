"""A machine with one core taken, as a user's laptop or a shared CI runner has it while the pack runs."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import time


@contextlib.contextmanager
def one_core_busy():
    """A second process spinning on one core for the duration of the block."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let the scheduler settle it on a core
        yield
    finally:
        busy.kill()
        busy.wait()
