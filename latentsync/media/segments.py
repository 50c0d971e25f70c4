"""A long output written as short segment files, then joined into one mp4 with the soundtrack.

Each segment is an H.264 mp4 of its own frames without B-frames (every packet's decode time is its
presentation time), written under a temporary name and renamed when complete, so a run killed at any moment
leaves only whole segments. `join_segments` copies the segments' packets one after the other, shifted to their
place in time (nothing is encoded again), and adds the audio cut at the video's end.
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .video import CRF, SoundTrack, _video_stream, check_crf, encode_frames


class DiskFull(OSError):
    """The output's disk filled up; what was finished is kept."""


@contextmanager
def written_whole(path: Path, temporary: Path, kept: str = ""):
    """Write `temporary` in the block, then rename it to `path`: the file appears whole or not at all. On any
    failure the temporary file goes; a full disk is a `DiskFull` naming `path` (and `kept`: what survives)."""
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise DiskFull(errno.ENOSPC, f"the disk is full while writing {path} ({exc.strerror or exc})"
                                         + (f"; {kept}" if kept else "")) from exc
        raise
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def frame_rate(fps: float | Fraction) -> Fraction:
    return fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(100_000)


def write_segment(path: str | Path, frames: np.ndarray, fps: float | Fraction, crf: int = CRF.default) -> Path:
    """Encode `[n, H, W, 3]` uint8 frames as the segment file `path` (odd sizes lose their last row/column).
    The file appears whole or not at all; a full disk is a `DiskFull` that names it."""
    check_crf(crf)
    path = Path(path)
    height, width = (int(frames.shape[1]) // 2) * 2, (int(frames.shape[2]) // 2) * 2
    with written_whole(path, path.with_name(path.name + ".tmp"), "the segments finished before it are kept") as temporary:
        with av.open(str(temporary), "w", format="mp4") as container:
            video = _video_stream(container, frame_rate(fps), width, height, crf, b_frames=False)
            encode_frames(container, video, frames)
            container.mux(video.encode(None))
    return path


def segment_frames(path: str | Path) -> int:
    """How many frames a segment file holds (from its index; nothing is decoded)."""
    with av.open(str(path)) as container:
        return int(container.streams.video[0].frames)


def join_segments(paths: list[Path], out: str | Path, fps: float | Fraction, audio: str | Path | None = None) -> Path:
    """One mp4 at `out`: the video packets of `paths` in order (each segment starts where the one before ended),
    then the first audio stream of `audio` cut at the video's end. Written under a temporary name and renamed."""
    if not paths:
        raise ValueError("no segments to join")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rate = frame_rate(fps)
    frames = 0
    kept = "the segments are kept: free space and run again with --resume"
    with written_whole(out, out.with_name(out.name + ".tmp.mp4"), kept) as temporary:
        with av.open(str(temporary), "w", format="mp4") as container:
            with av.open(str(paths[0])) as first:
                video = container.add_stream_from_template(first.streams.video[0])
            sound = SoundTrack(container, audio) if audio is not None else None
            try:
                for path in paths:
                    with av.open(str(path)) as segment:
                        stream = segment.streams.video[0]
                        shift = round(Fraction(frames) / rate / stream.time_base)
                        for packet in segment.demux(stream):
                            if packet.dts is None:  # the demuxer's flush packet
                                continue
                            packet.pts += shift
                            packet.dts += shift
                            packet.stream = video
                            container.mux(packet)
                            frames += 1
                if sound is not None:
                    sound.write(float(frames / rate))
            finally:
                if sound is not None:
                    sound.close()
    return out
