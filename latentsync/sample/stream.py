"""The sampler's windows run on frames read from a file as they are needed, and handed on as they finish.

The output is cut into segments along the frame plan: each window is one segment, and the frames between
windows (no face, skipped silence, the tail of `audio_shorter="keep"`) are segments of at most a window's
length that pass through unchanged. A segment needs only its own input frames (`frames.read`), the clip's
face alignment (`ClipFaces`, a few numbers a frame) and the `WindowRunner`, so memory does not grow with the
clip and any segment can be made again alone: a resumed run skips the segments already written.
"""
from __future__ import annotations

import queue
import threading
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


def _prepare(frames: FrameSource, faces: ClipFaces, plan: FramePlan, segment: Segment):
    """(segment, its input frames `[n, H, W, 3]` uint8 tensor, its aligned faces or None, seconds taken)."""
    clock = time.perf_counter()
    source_index = plan.source_index[segment.start:segment.stop]
    base = torch.from_numpy(frames.read(source_index))
    window_faces = None
    if segment.window is not None:
        window_faces = faces.select({int(i): base[k] for k, i in enumerate(source_index)}, source_index)
    return segment, base, window_faces, time.perf_counter() - clock


_END = object()


class _Stage:
    """A thread working through a bounded queue, stopped by `stop` (an Event): what it raises reaches the caller."""

    def __init__(self, work: Callable, size: int, stop: threading.Event, name: str):
        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self.stop, self.error = stop, None
        self.thread = threading.Thread(target=self._main, args=(work,), name=name, daemon=True)

    def _main(self, work: Callable) -> None:
        try:
            work()
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller
            self.error = exc
            self.stop.set()

    def put(self, item, until_stopped: bool = True) -> None:
        if self.error is not None:
            raise _Stopped()
        while True:
            try:
                self.queue.put(item, timeout=0.05)
                return
            except queue.Full:
                if (until_stopped and self.stop.is_set()) or not self.thread.is_alive():
                    raise _Stopped() from None

    def get(self):
        while True:
            try:
                return self.queue.get(timeout=0.05)
            except queue.Empty:
                if self.stop.is_set() or (not self.thread.is_alive() and self.queue.empty()):
                    raise _Stopped() from None


class _Stopped(Exception):
    pass


def run_segments(frames: FrameSource, faces: ClipFaces, runner: WindowRunner, segments: Iterable[Segment],
                 write: Callable[[Segment, np.ndarray], None], done: frozenset[str] = frozenset(),
                 on_window: Callable[[Segment, torch.Tensor], None] | None = None, overlap: bool = True) -> int:
    """Make each segment not in `done` (names) and hand its `[n, H, W, 3]` uint8 frames to `write`, in order;
    returns how many were made. `on_window(segment, crops)` sees each window's generated crops (`[n, R, R, 3]`
    float 0-1) once the window is handed to `write`, e.g. for a preview; raising there (a cancel) stops the run
    with that window written.

    With `overlap` (the default) three threads work at once, so the models never wait for the CPU: one reads
    and aligns the next segments, this one samples, one writes the finished ones (at most two segments wait
    between stages, so memory stays bounded). Anything raised (the runner's progress cancelling, `write`
    failing) stops the run after the segment under way; segments already sampled are still written.
    Stage times add up in `runner.seconds` ("read", "write" beside the sampler's own).
    """
    plan, segments = runner.plan, list(segments)
    todo = [segment for segment in segments if segment.name not in done]
    runner.steps_done += sum(s.window.steps for s in segments if s.name in done and s.window is not None)
    runner.seconds.update(read=runner.seconds.get("read", 0.0), write=runner.seconds.get("write", 0.0))

    def sample(segment: Segment, base: torch.Tensor, window_faces) -> tuple[np.ndarray, torch.Tensor | None]:
        if segment.window is None:
            return base.numpy(), None
        out, crops = runner.run(segment.window, window_faces, base)
        return out.numpy(), crops

    def after(segment: Segment, crops: torch.Tensor | None) -> None:  # once the segment is on its way out
        if crops is not None and on_window is not None:
            on_window(segment, crops)

    def timed_write(segment: Segment, images: np.ndarray) -> None:
        clock = time.perf_counter()
        write(segment, images)
        runner.seconds["write"] += time.perf_counter() - clock

    if not overlap:
        for segment in todo:
            segment, base, window_faces, seconds = _prepare(frames, faces, plan, segment)
            runner.seconds["read"] += seconds
            images, crops = sample(segment, base, window_faces)
            timed_write(segment, images)
            after(segment, crops)
        return len(todo)

    stop = threading.Event()

    def read_ahead() -> None:
        for segment in todo:
            item = _prepare(frames, faces, plan, segment)
            runner.seconds["read"] += item[3]
            reader.put(item)
        reader.put(_END)

    def write_behind() -> None:
        while (item := writer.queue.get()) is not _END:
            timed_write(*item)

    reader = _Stage(read_ahead, 2, stop, "latentsync-read")
    writer = _Stage(write_behind, 2, threading.Event(), "latentsync-write")  # stops only when told, or fails
    reader.thread.start()
    writer.thread.start()
    made = 0
    try:
        while (item := reader.get()) is not _END:
            segment, base, window_faces, _ = item
            images, crops = sample(segment, base, window_faces)
            writer.put((segment, images))
            made += 1
            after(segment, crops)
    except _Stopped:
        pass
    finally:
        stop.set()
        try:
            writer.put(_END, until_stopped=False)  # the writer finishes what it was given
        except _Stopped:
            pass
        writer.thread.join()
        reader.thread.join()
    for stage in (writer, reader):
        if stage.error is not None:
            raise stage.error
    return made
