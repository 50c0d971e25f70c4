"""Short test clips cut from the shared media with PyAV (no ffmpeg binary needed)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def read_frames(src: Path, count: int, width: int | None = None) -> tuple[np.ndarray, Fraction]:
    """The first `count` frames as uint8 RGB `[N, H, W, 3]` (scaled to `width` when given) and the frame rate."""
    frames = []
    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        for frame in container.decode(stream):
            if width:
                frame = frame.reformat(width=width, height=round(frame.height * width / frame.width / 2) * 2)
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return np.stack(frames), Fraction(rate)


def write_clip(dst: Path, frames: np.ndarray, fps: Fraction | float) -> Path:
    """`[N, H, W, 3]` uint8 RGB frames as an H.264 (or MPEG-4) mp4 without audio."""
    with av.open(str(dst), "w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(100000))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "12"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return dst


def cut_clip(src: Path, dst: Path, count: int, width: int | None = None) -> Path:
    frames, rate = read_frames(src, count, width)
    return write_clip(dst, frames, rate)


def cut_voice(src: Path, dst: Path, seconds: float) -> Path:
    """The first `seconds` of an audio file as a mono 16-bit WAV at its own rate."""
    import wave

    from latentsync.media.audio import load_audio

    waveform, rate = load_audio(src)
    samples = (waveform.mean(0)[: round(seconds * rate)].numpy() * 32767).astype(np.int16)
    with wave.open(str(dst), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return dst
