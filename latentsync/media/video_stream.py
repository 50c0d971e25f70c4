"""Long videos a chunk of frames at a time: `VideoChunkReader` decodes the frames (audio packets pass straight
through to the output as they come) and `VideoChunkWriter` encodes frames as they are handed over, so memory
does not grow with the length.

The writer encodes H.264 (libx264, else mpeg4; yuv420p, whose sizes must be even) in the container the output's
suffix names, at the source's frame rate with its timestamps (variable frame rates survive); the audio stream
is copied when that container takes it as is, otherwise dropped (and the summary says so).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from .video import CRF, NoVideoStream, _video_stream, check_crf, copy_audio_packet, demux_decode, video_orientation

# Audio codecs the MP4/MOV muxer accepts without transcoding.
MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac"}


class VideoChunkReader:
    """A video's first video stream, opened for `chunks`: its size (as shown: the file's rotation flag applied to
    the size and to every frame, `orientation_warning` says so), frame rate (25 if the file states none) and start
    time are known before the frames are decoded."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.container = av.open(str(self.path))
        if not self.container.streams.video:
            self.container.close()
            raise NoVideoStream(self.path)
        self.video = self.container.streams.video[0]
        self.video.thread_type = "AUTO"
        self.audio = self.container.streams.audio[0] if self.container.streams.audio else None
        self.orientation = video_orientation(self.path)
        self.orientation_warning = self.orientation.warning(self.path)
        self.width, self.height = self.orientation.size(self.video.codec_context.width,
                                                        self.video.codec_context.height)
        self.rate: Fraction = self.video.average_rate or self.video.guessed_rate or Fraction(25)
        start = self.video.start_time
        self.start = float(start * self.video.time_base) if start is not None else 0.0

    def chunks(self, size: int, audio_to: "VideoChunkWriter | None" = None
               ) -> Iterator[tuple[np.ndarray, list[float]]]:
        """`[n, H, W, 3]` uint8 RGB frames, `size` at a time (the last may be fewer), with each frame's time in
        seconds. The audio packets go to `audio_to` as they are read, when it took the audio. A damaged or
        truncated file is a `VideoDecodeError` naming it."""
        copy = audio_to is not None and audio_to.audio is not None
        others = [self.audio] if copy else []
        frames: list[np.ndarray] = []
        times: list[float] = []
        done = 0
        for item in demux_decode(self.container, self.video, self.path, *others):
            if isinstance(item, av.Packet):  # an audio packet, passed through undecoded
                copy_audio_packet(item, audio_to.audio, audio_to.container, self.start)
                continue
            frames.append(self.orientation.rgb(item))
            times.append(item.time if item.time is not None else self.start + (done + len(times)) / self.rate)
            if len(frames) >= size:
                yield np.stack(frames), times
                done += len(frames)
                frames, times = [], []
        if frames:
            yield np.stack(frames), times

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "VideoChunkReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoChunkWriter:
    """An H.264 video of `size` (even width and height) at `source`'s frame rate, with `source`'s audio stream
    when the container takes it unchanged; `audio` says what became of it ("copied (aac)", "dropped (...)",
    "none"). Closing flushes the encoder (unless an error is under way) and finishes the file."""

    def __init__(self, path: str | Path, source: VideoChunkReader, size: tuple[int, int], crf: int = CRF.default):
        check_crf(crf)
        self.path = Path(path)
        self.rate, self.start = source.rate, source.start
        self.container = av.open(str(self.path), "w")
        try:
            self.video = _video_stream(self.container, self.rate, size[0], size[1], crf)
            self.codec = self.video.codec_context.name
            self.audio, self.audio_note = self._audio_stream(source.audio)
        except BaseException:
            self.container.close()
            raise
        self.count, self.last_pts = 0, -1

    def _audio_stream(self, audio_in):
        if audio_in is None:
            return None, "none"
        name = audio_in.codec_context.name
        if self.path.suffix.lower() in (".mp4", ".m4v", ".mov") and name not in MP4_AUDIO:
            return None, f"dropped ({name} cannot be copied into {self.path.suffix})"
        return self.container.add_stream_from_template(audio_in), f"copied ({name})"

    def write(self, frames: np.ndarray, times: list[float]) -> None:
        """Encode `[n, H, W, 3]` uint8 RGB frames shown at `times` (seconds on the source's clock)."""
        for frame, when in zip(frames, times):
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            # Timestamps follow the source on the output's 1/rate clock, always increasing.
            self.last_pts = max(self.last_pts + 1, round((when - self.start) * self.rate))
            picture.pts = self.last_pts
            self.container.mux(self.video.encode(picture))
            self.count += 1

    def close(self, flush: bool = True) -> None:
        try:
            if flush:
                self.container.mux(self.video.encode(None))
        finally:
            self.container.close()

    def __enter__(self) -> "VideoChunkWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(flush=exc_type is None)
