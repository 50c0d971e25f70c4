"""A video's frames by index, decoded when they are asked for, so a long clip is never held whole.

`VideoFrames.scan()` is the first pass: every frame once, in order, while its timestamp is recorded (and the
caller finds the faces). `read(indices)` then gives any frames again: reads that go forward continue the
decoder; a read that goes back (the ping-pong loop of audio longer than the video) seeks to the keyframe before
it and decodes from there. Decoded frames are kept up to `cache_bytes`, newest first, so the next window of a
backward run is usually already there. A still image is one frame. Frames are upright as players show them
(the file's rotation flag applied: `video.Orientation`).
"""
from __future__ import annotations

from collections import OrderedDict
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from .video import (IMAGE_SUFFIXES, NoVideoStream, Orientation, VideoDecodeError, demux_decode, file_orientation,
                    read_frames, video_orientation)

DEFAULT_CACHE_BYTES = 256 << 20


class VideoFrames:
    """Frames of `path` (a video, or a still image) by index: `[n, H, W, 3]` uint8 RGB."""

    def __init__(self, path: str | Path, cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"video file not found: {self.path}")
        self.still = self.path.suffix.lower() in IMAGE_SUFFIXES
        self.cache_bytes = int(cache_bytes)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._container = self._decoder = None
        self._next = 0  # index of the frame the open decoder gives next
        self.pts: np.ndarray | None = None  # [N] int64 presentation timestamps, known after `scan`
        self.times: np.ndarray | None = None  # [N] float64 seconds from the first frame, known after `scan`
        self.truncated: str | None = None  # the decoder's message when the file stopped early
        self.orientation = Orientation()  # how the stored frames are turned to be shown
        if self.still:
            self.orientation = file_orientation(self.path)  # read_frames applies it; kept for the warning
            self._image = read_frames(self.path)[0][0].numpy()
            self.height, self.width = self._image.shape[:2]
            self.rate: Fraction | None = None
            return
        with av.open(str(self.path)) as container:
            if not container.streams.video:
                raise NoVideoStream(self.path)
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            self.rate = stream.average_rate or stream.guessed_rate or None
        self.orientation = video_orientation(self.path)
        self.width, self.height = self.orientation.size(width, height)

    @property
    def orientation_warning(self) -> str | None:
        """What the file's rotation flag made of its frames, for a run's warnings (None when it has none)."""
        return self.orientation.warning(self.path)

    @property
    def fps(self) -> float | None:
        """The stated frame rate (None for a still image or a file that states none)."""
        return float(self.rate) if self.rate else None

    @property
    def frame_hw(self) -> tuple[int, int]:
        return int(self.height), int(self.width)

    def __len__(self) -> int:
        if self.still:
            return 1
        if self.pts is None:
            raise RuntimeError("the frame count is known after scan()")
        return len(self.pts)

    def constant_rate_index(self, fps: float, tolerance: float = 0.1) -> np.ndarray | None:
        """For a variable frame rate (frame durations that differ by more than `tolerance`), the input frame shown
        at each tick of a constant `fps` clock over the clip's duration (`[M]` indices into the frames), so the
        output keeps the timing the audio follows; None when the frames are evenly spaced already."""
        if self.times is None or len(self.times) < 3:
            return None
        steps = np.diff(self.times)
        typical = float(np.median(steps))
        if typical <= 0 or np.all(np.abs(steps - typical) <= tolerance * typical):
            return None
        duration = float(self.times[-1]) + typical
        ticks = np.arange(max(1, int(round(duration * fps)))) / fps
        return np.clip(np.searchsorted(self.times, ticks + 1e-6, side="right") - 1, 0, len(self.times) - 1)

    # -- decoding ------------------------------------------------------------------------------------------
    def _open(self, seek_pts: int | None = None) -> None:
        self.close()
        self._container = av.open(str(self.path))
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._stream = stream
        if seek_pts is not None:
            self._container.seek(int(seek_pts), stream=stream, backward=True, any_frame=False)
        self._decoder = demux_decode(self._container, stream, self.path)

    def scan(self) -> Iterator[np.ndarray]:
        """Every frame once, in order (`[H, W, 3]` uint8), recording timestamps. A file that stops early ends the
        scan there: `truncated` says where and why, and the frames before it are the clip."""
        if self.still:
            self.pts, self.times = np.zeros(1, np.int64), np.zeros(1)
            yield self._image
            return
        self._open()
        pts: list[int] = []
        try:
            for frame in self._decoder:
                pts.append(frame.pts if frame.pts is not None else (pts[-1] + 1 if pts else 0))
                yield self.orientation.rgb(frame)
        except VideoDecodeError as exc:
            self.truncated = str(exc)
        finally:
            self.close()
            self.pts = np.asarray(pts, np.int64)
            base = float(self._stream.time_base or 0) if hasattr(self, "_stream") else 0.0
            self.times = (self.pts - (self.pts[0] if len(pts) else 0)) * base
        if not pts:
            raise ValueError(f"{self.path} holds no video frames" + (f" ({self.truncated})" if self.truncated else ""))

    def restore(self, pts: np.ndarray, truncated: str | None = None) -> None:
        """Take the timestamps (and where the file stopped) from an earlier `scan` of this file."""
        self.pts = np.asarray(pts, np.int64)
        self.truncated = truncated
        if not self.still:
            with av.open(str(self.path)) as container:
                base = float(container.streams.video[0].time_base or 0)
            self.times = (self.pts - self.pts[0]) * base

    def _index_of(self, frame) -> int | None:
        if frame.pts is None:
            return None
        at = int(np.searchsorted(self.pts, frame.pts))
        return at if at < len(self.pts) and self.pts[at] == frame.pts else None

    def _keep(self, index: int, image: np.ndarray) -> None:
        self._cache[index] = image
        self._cache.move_to_end(index)
        while len(self._cache) > 1 and len(self._cache) * image.nbytes > self.cache_bytes:
            self._cache.popitem(last=False)

    def _decode_to(self, target: int, wanted: dict[int, np.ndarray], need: set[int]) -> None:
        """Decode forward until frame `target` is decoded, keeping the frames of `need` in `wanted`."""
        if self._decoder is None or target < self._next:
            seek = int(self.pts[target]) if target > 0 else None
            self._open(seek)
            self._next = -1 if seek is not None else 0  # found from the first frame's timestamp after a seek
        for frame in self._decoder:
            index = self._index_of(frame) if self._next < 0 else self._next
            if index is None or (self._next < 0 and index > target):  # the seek landed badly: decode from the top
                self._open()
                self._next = 0
                return self._decode_to(target, wanted, need)
            self._next = index + 1
            image = self.orientation.rgb(frame)
            self._keep(index, image)
            if index in need:
                wanted[index] = image
            if index >= target:
                return
        raise VideoDecodeError(f"{self.path}: frame {target} could not be decoded again (the file changed?)")

    def read(self, indices) -> np.ndarray:
        """The frames `indices` (any order, repeats allowed) as `[n, H, W, 3]` uint8."""
        indices = np.asarray(indices, np.int64).reshape(-1)
        if self.still:
            return np.broadcast_to(self._image, (len(indices), *self._image.shape)).copy()
        count = len(self)
        if len(indices) and (indices.min() < 0 or indices.max() >= count):
            raise IndexError(f"frame indices must be from 0 to {count - 1}, got {indices.min()}..{indices.max()}")
        wanted = {int(i): self._cache[int(i)] for i in set(indices.tolist()) if int(i) in self._cache}
        need = set(indices.tolist()) - set(wanted)
        while need - set(wanted):
            self._decode_to(min(need - set(wanted)), wanted, need)
        out = np.empty((len(indices), self.height, self.width, 3), np.uint8)
        for row, index in enumerate(indices.tolist()):
            out[row] = wanted[index]
        return out

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._decoder = None

    def __enter__(self) -> "VideoFrames":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RetimedFrames:
    """`frames` seen through `index` (e.g. `constant_rate_index`): frame i here is frame `index[i]` there."""

    def __init__(self, frames: VideoFrames, index: np.ndarray):
        self.frames, self.index = frames, np.asarray(index, np.int64)
        self.still, self.truncated = frames.still, frames.truncated
        self.width, self.height, self.frame_hw = frames.width, frames.height, frames.frame_hw

    def __len__(self) -> int:
        return len(self.index)

    def read(self, indices) -> np.ndarray:
        return self.frames.read(self.index[np.asarray(indices, np.int64)])

    def __enter__(self) -> "RetimedFrames":
        return self

    def __exit__(self, *exc) -> None:
        self.frames.close()
