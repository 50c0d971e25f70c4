"""The sampler's windows run on frames read from a file as they are needed, and handed on as they finish.

The output is cut into segments along the frame plan: each window is one segment, and the frames between
windows (no face, skipped silence, the tail of `audio_shorter="keep"`) are segments of at most a window's
length that pass through unchanged. A segment needs only its own input frames (`frames.read`), the clip's
face alignment (`ClipFaces`, a few numbers a frame) and the `WindowRunner`, so memory does not grow with the
clip and any segment can be made again alone: a resumed run skips the segments already written.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

import numpy as np
import torch

from ..face.window_crops import ClipFaces
from .frame_plan import FramePlan, Window
from .sampler import WindowRunner


class FrameSource(Protocol):
    def read(self, indices) -> np.ndarray:
        """Input frames `indices` as `[n, H, W, 3]` uint8."""
        ...


@dataclass(frozen=True)
class Segment:
    """Output frames `start ... stop - 1`: a window's, or frames that pass through (`window` None)."""

    start: int
    stop: int
    window: Window | None = None

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def name(self) -> str:
        return f"{self.start:08d}-{self.stop:08d}"


def plan_segments(plan: FramePlan, passthrough: int = 16) -> list[Segment]:
    """Every output frame in exactly one segment, in order: the plan's windows, and the frames between them in
    pieces of at most `passthrough` frames."""
    segments: list[Segment] = []
    at = 0
    for window in sorted(plan.windows, key=lambda w: w.start):
        segments += [Segment(a, min(a + passthrough, window.start)) for a in range(at, window.start, passthrough)]
        segments.append(Segment(window.start, window.stop, window))
        at = window.stop
    segments += [Segment(a, min(a + passthrough, plan.frames)) for a in range(at, plan.frames, passthrough)]
    return segments


def run_segments(frames: FrameSource, faces: ClipFaces, runner: WindowRunner, segments: Iterable[Segment],
                 write: Callable[[Segment, np.ndarray], None], done: frozenset[str] = frozenset(),
                 on_window: Callable[[Segment, torch.Tensor], None] | None = None) -> int:
    """Make each segment not in `done` (names) and hand its `[n, H, W, 3]` uint8 frames to `write`; returns how
    many were made. `on_window(segment, crops)` sees each window's generated crops (`[n, R, R, 3]` float 0-1),
    e.g. for a preview; it, `write` and the runner's progress may raise to stop after the current segment."""
    plan, made = runner.plan, 0
    runner.seconds.update(read=runner.seconds.get("read", 0.0), write=runner.seconds.get("write", 0.0))
    for segment in segments:
        if segment.name in done:
            runner.steps_done += segment.window.steps if segment.window is not None else 0
            continue
        clock = time.perf_counter()
        source_index = plan.source_index[segment.start:segment.stop]
        base = torch.from_numpy(frames.read(source_index))
        if segment.window is None:
            out = base
            runner.timed("read", clock)
        else:
            window_faces = faces.select({int(i): base[k] for k, i in enumerate(source_index)}, source_index)
            runner.timed("read", clock)
            out, crops = runner.run(segment.window, window_faces, base)
            if on_window is not None:
                on_window(segment, crops)
        clock = time.perf_counter()
        write(segment, out.numpy())
        runner.timed("write", clock)
        made += 1
    return made
