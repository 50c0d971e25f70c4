"""Video in and out for the command line: frames from a video or a still image, and one mp4 encode at the end.
Every PyAV call of the pack lives in `media/` (`video_stream.py` streams long videos chunk by chunk).

The reference re-encodes the whole frame three times and writes 16 kHz audio (users see blur and dull sound,
LatentSync issue #67). Here the output is encoded once (libx264, else mpeg4) at the input's frame rate, and
the original soundtrack goes along unchanged when the container allows (AAC, MP3), otherwise re-encoded to
AAC at its own sample rate and channel layout.

Phone videos store frames landscape and flag how players turn them (a display matrix); every decode here and in
`frame_reader.py` and `video_stream.py` applies it (`Orientation`), so frames are upright, and what is written
carries no flag.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator, NamedTuple

import av
import numpy as np
import torch
from PIL import Image

from ..core.options import Option
from .orientation import Orientation, image_orientation, video_orientation

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
COPYABLE_AUDIO = {"aac", "mp3"}
MAX_CRF = 51  # x264's scale for 8-bit video; it clamps anything outside 0-51 without a word
CRF = Option("crf", 18, "x264 quality: lower is better and larger (0 is lossless).", 0, MAX_CRF)


def check_crf(crf: int) -> None:
    """Raise `ValueError` for an H.264 quality outside `CRF`'s 0 (lossless) to 51 (worst)."""
    CRF.check(crf)


class NoVideoStream(ValueError):
    """A file that opens but holds no video stream (a sound file with a video suffix)."""

    def __init__(self, path: str | Path):
        super().__init__(f"{path} has no video stream")


class VideoInfo(NamedTuple):
    fps: float | None  # None when the file does not state a frame rate
    frames: int  # 0 when the container does not say
    width: int
    height: int


def file_orientation(path: str | Path) -> Orientation:
    """How players or viewers turn the pixels of `path`: a still image's EXIF orientation, a video's display
    matrix (`orientation.video_orientation`); what `read_frames` and `decode_frames` apply."""
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        try:
            with Image.open(path) as image:
                return image_orientation(image)
        except (OSError, ValueError):  # not an image after all: the read that follows says what it is
            return Orientation()
    return video_orientation(path)


def video_info(path: str | Path) -> VideoInfo:
    """The frame rate, frame count and size shown (the file's rotation applied: `video_orientation`) of a video's
    first video stream, read from its header and first frame. A file FFmpeg cannot open is a `ValueError` naming
    it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise NoVideoStream(path)
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            width, height = stream.codec_context.width, stream.codec_context.height
            frames = int(stream.frames or 0)
    except av.error.FFmpegError as exc:
        raise ValueError(f"cannot decode {path}: {exc}") from exc
    return VideoInfo(float(rate) if rate else None, frames, *video_orientation(path).size(width, height))


def read_frames(path: str | Path, max_frames: int | None = None) -> tuple[torch.Tensor, float | None]:
    """All frames of a video (or the one of a still image) as `[N, H, W, 3]` uint8 RGB, turned upright as players
    show them (`video_orientation`), and the frame rate (None for a still image)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
            return torch.from_numpy(image_orientation(image).apply(pixels).copy())[None], None

    orientation = video_orientation(path)
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise NoVideoStream(path)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 0) or None
        frames = []
        for frame in decode_rgb(container, stream, path, orientation):
            frames.append(frame)
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"{path} holds no video frames")
    return torch.from_numpy(np.stack(frames)), fps


class VideoDecodeError(ValueError):
    """A video stream that stops part-way: a truncated or damaged file."""

    @classmethod
    def after(cls, path: str | Path, frames: int, cause: Exception) -> "VideoDecodeError":
        reason = getattr(cause, "strerror", None) or cause
        return cls(f"{path}: video decoding failed after {_frames(frames)} ({reason}); the file is truncated or "
                   f"damaged")

    @classmethod
    def check_complete(cls, path: str | Path, container, stream, packets: int, frames: int) -> None:
        """Raise if fewer packets were read than an MP4/MOV index lists: FFmpeg ends such a stream silently.
        (Only that family: its index lists every sample, edit-list trims included; other containers' counts
        are estimates.)"""
        listed = stream.frames if "mp4" in container.format.name.split(",") else 0
        if packets < listed:
            raise cls(f"{path}: the video stops after {_frames(frames)} of the {listed} its index lists; the file "
                      f"is truncated")


def _frames(count: int) -> str:
    return f"{count} frame" if count == 1 else f"{count} frames"


def decode_rgb(container, stream, path: str | Path, orientation: Orientation) -> Iterator[np.ndarray]:
    """The frames of `stream` as `[H, W, 3]` uint8 RGB, turned as `orientation` says (`video_orientation`). A
    damaged or truncated file is a `VideoDecodeError` naming the file and how many frames it gave: FFmpeg's own
    error names neither ("Invalid data found when processing input: 'avcodec_receive_frame()'"), or there is none
    at all."""
    for frame in demux_decode(container, stream, path):
        yield orientation.rgb(frame)


def demux_decode(container, stream, path: str | Path, *others) -> Iterator:
    """The decoded `av.VideoFrame`s of `stream`, in file order with the undecoded packets of the streams
    `others` (e.g. audio to copy as it comes, without buffering); errors as in `decode_rgb`."""
    packets = frames = 0
    try:
        for packet in container.demux(stream, *others):
            if packet.stream is not stream:
                yield packet
                continue
            packets += packet.size > 0  # not the empty packet that flushes the decoder
            for frame in packet.decode():
                yield frame
                frames += 1
    except av.error.FFmpegError as exc:
        raise VideoDecodeError.after(path, frames, exc) from exc
    VideoDecodeError.check_complete(path, container, stream, packets, frames)


def decode_frames(path: str | Path) -> tuple[Iterator[np.ndarray], float, int]:
    """RGB uint8 frames of a video's first video stream as players show them, one at a time; also its fps and
    frame count (0 if the container does not say). A still image is one frame at 0 fps."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    if path.suffix.lower() in IMAGE_SUFFIXES:  # through PIL, which reads EXIF orientation
        return iter(read_frames(path)[0].numpy()), 0.0, 1
    orientation = video_orientation(path)
    container = av.open(str(path))
    if not container.streams.video:
        container.close()
        raise NoVideoStream(path)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    fps = float(stream.average_rate or stream.guessed_rate or 0)

    def frames() -> Iterator[np.ndarray]:
        with container:
            yield from decode_rgb(container, stream, path, orientation)

    return frames(), fps, int(stream.frames or 0)


def _uint8(frame: torch.Tensor) -> np.ndarray:
    if frame.dtype != torch.uint8:
        frame = (frame.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    return frame.numpy()


def _video_stream(container, fps: float | Fraction, width: int, height: int, crf: int, b_frames: bool = True):
    """An H.264 (libx264, else mpeg4) yuv420p stream; a `Fraction` rate (a source's own) is kept exactly.
    `b_frames=False` makes every packet's decode time its presentation time, so files join by copying packets."""
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(100_000)
    if "libx264" in av.codecs_available:
        stream = container.add_stream("libx264", rate=rate)
        stream.options = {"crf": str(crf), "preset": "medium", **({} if b_frames else {"bf": "0"})}
    else:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.bit_rate = 8_000_000  # mpeg4 has no crf; this is visually lossless for typical talking heads
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    return stream


def encode_frames(container, video, frames) -> None:
    """Encode `[n, H, W, 3]` frames (float 0-1 or uint8; cut to the stream's even size) into `video`."""
    for frame in frames:
        array = _uint8(torch.as_tensor(frame))[:video.height, :video.width]
        container.mux(video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")))


class SoundTrack:
    """The first audio stream of the file `audio`, added to an output `container`: copied when its codec is
    one an mp4 carries as is, else encoded to AAC. `write(duration)` puts in the audio up to the video's end."""

    def __init__(self, container, audio: str | Path):
        self.source = av.open(str(audio))
        try:
            if not self.source.streams.audio:
                raise ValueError(f"{audio} has no audio stream")
            audio_in = self.audio_in = self.source.streams.audio[0]
            self.copy = audio_in.codec_context.name in COPYABLE_AUDIO
            if self.copy:
                self.audio_out = container.add_stream(audio_in.codec_context.name, rate=audio_in.rate)
                self.audio_out.codec_context.extradata = audio_in.codec_context.extradata
                self.audio_out.codec_context.layout = audio_in.layout
                self.audio_out.time_base = audio_in.time_base
            else:
                self.audio_out = container.add_stream("aac", rate=audio_in.rate)
                channels = audio_in.layout.nb_channels
                # WAV files often leave the layout unnamed ("1 channels"), which AAC refuses.
                self.audio_out.layout = {1: "mono", 2: "stereo"}.get(channels, audio_in.layout.name)
                self.audio_out.format = "fltp"  # the native AAC encoder's only sample format
                # 96 kb/s a channel, within what AAC can carry at low sample rates (6144 bits a frame).
                self.audio_out.bit_rate = min(96_000, int(6144 * audio_in.rate / 1024 * 0.9)) * channels
        except BaseException:
            self.source.close()
            raise
        self.container = container

    def write(self, duration: float) -> None:
        write = _copy_audio if self.copy else _encode_audio
        write(self.source, self.audio_in, self.audio_out, self.container, duration)

    def close(self) -> None:
        self.source.close()


def write_video(path: str | Path, frames: torch.Tensor, fps: float, audio: str | Path | None = None,
                crf: int = CRF.default) -> Path:
    """Write `[M, H, W, 3]` frames (float 0-1 or uint8) as an mp4 at `fps`, with the first audio stream of the
    file `audio` (cut at the video's end). Odd frame sizes lose their last row/column (yuv420p needs even)."""
    check_crf(crf)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = (int(frames.shape[1]) // 2) * 2, (int(frames.shape[2]) // 2) * 2
    with av.open(str(path), "w", format="mp4") as container:
        video = _video_stream(container, fps, width, height, crf)
        sound = SoundTrack(container, audio) if audio is not None else None
        try:
            encode_frames(container, video, frames)
            container.mux(video.encode(None))
            if sound is not None:
                sound.write(len(frames) / float(fps))
        finally:
            if sound is not None:
                sound.close()
    return path


def _copy_audio(source, audio_in, audio_out, container, duration: float) -> None:
    for packet in source.demux(audio_in):
        if packet.dts is not None and packet.pts is not None and float(packet.pts * audio_in.time_base) >= duration:
            break
        copy_audio_packet(packet, audio_out, container)


def copy_audio_packet(packet, audio_out, container, start: float = 0.0) -> None:
    """Mux a demuxed audio packet unchanged into `audio_out`, moved `start` seconds earlier (when the video's
    timestamps are rebased to 0, so the two stay in sync); the demuxer's flush packet is skipped. Negative times
    (AAC priming) are kept: the muxer writes them as an edit list."""
    if packet.dts is None:
        return
    offset = round(start / packet.time_base) if start else 0
    if offset:
        packet.pts = None if packet.pts is None else packet.pts - offset
        packet.dts -= offset
    packet.stream = audio_out
    container.mux(packet)


def _encode_audio(source, audio_in, audio_out, container, duration: float) -> None:
    resampler = av.AudioResampler(format=audio_out.codec_context.format, layout=audio_out.layout,
                                  rate=audio_out.rate)
    written, limit = 0, int(round(duration * audio_out.rate))
    for frame in source.decode(audio_in):
        frame.pts = None
        for chunk in resampler.resample(frame):
            if written >= limit:
                break
            if written + chunk.samples > limit:
                array = chunk.to_ndarray()[..., : limit - written]
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(array), format=chunk.format.name,
                                                   layout=chunk.layout.name)
                chunk.sample_rate = audio_out.rate
            chunk.pts = written
            written += chunk.samples
            container.mux(audio_out.encode(chunk))
        if written >= limit:
            break
    container.mux(audio_out.encode(None))
