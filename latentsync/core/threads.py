"""Thread limits for loops of many tiny torch calls.

A call that takes about a millisecond on one core gains little from more intra-op threads, but it waits
for all of them at every op; when another process keeps a core busy, each wait can last a scheduler time
slice, so a loop of small sequential calls slows down 2-100x (silero's 32 ms frames: up to 100x; the
per-frame face crops and paste-back: 2-13x). Big batched work (UNet, VAE, whisper spans, SyncNet, S3FD)
gains more from the threads than it loses under load and must not run inside this.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block with one torch intra-op thread, then give the caller back its own setting.

    torch keeps the setting per thread (threads that first use torch inside the block start with 1), so
    restoring it in `finally` leaves no trace, also when the block raises.
    """
    previous = torch.get_num_threads()
    if previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
