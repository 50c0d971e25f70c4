"""What a sampler run tells as it goes, beyond `progress(done, total)`: every UNet step of every window, with
the window's current estimate of the clean latents and the time left.

`lipsync()` (and the streamed and cast runs, which share its `WindowRunner`) take a plain `progress(done, total)`
callable, or a `StepProgress`: the same call, plus `step(StepInfo)` after every step. The library imports no
ComfyUI: the node adapter turns `StepInfo.latents` into the editor's live previews (ComfyUI's own latent
preview), the CLI turns it into one line per window.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from torch import Tensor

__all__ = ["StepInfo", "StepProgress", "StepClock", "format_seconds", "step_text"]


@dataclass(frozen=True)
class StepInfo:
    """One UNet step of one window. `window` counts from 0 among the plan's `windows`; `step` from 1 to
    `steps` within it; `done`/`total` are the whole run's steps. `latents` is the window's predicted clean
    latents `[F, 4, h, w]` after this step (the x0 estimate, scaled as the UNet's: what ComfyUI's samplers
    preview), None for a step made on a cluster's worker. `seconds_left` is None until a pace is known."""

    window: int
    windows: int
    step: int
    steps: int
    done: int
    total: int
    latents: Tensor | None
    seconds_left: float | None = None


class StepProgress:
    """A progress callback that also sees every step. Subclass and override `__call__` and/or `step`."""

    def __call__(self, done: int, total: int) -> None:  # as a plain `progress(done, total)`
        pass

    def step(self, info: StepInfo) -> None:
        pass


class StepClock:
    """Time left, from the pace of the steps done since the first one seen (a resumed run starts part way)."""

    def __init__(self, now=time.perf_counter):
        self.now, self.first = now, None

    def seconds_left(self, done: int, total: int) -> float | None:
        now = self.now()
        if self.first is None or done <= self.first[0]:
            self.first = self.first or (done, now)
            return None
        start_done, start = self.first
        return (now - start) / (done - start_done) * max(total - done, 0)


def format_seconds(seconds: float | None) -> str:
    """`1:05:09`, `4:07`, `0:09`; `?` when unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def step_text(info: StepInfo) -> str:
    """`window 2/5, step 7/20, 0:41 left` (`estimating time left` before the pace is known)."""
    left = "estimating time left" if info.seconds_left is None else f"{format_seconds(info.seconds_left)} left"
    return f"window {info.window + 1}/{info.windows}, step {info.step}/{info.steps}, {left}"
