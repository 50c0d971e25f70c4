"""Audio in: decode files, check samples, and bring any waveform to 16 kHz mono.

Everything downstream (VAD, whisper features) works on 16 kHz mono float32, the rate both silero-vad
and whisper were trained at. Resampling is polyphase (scipy), in memory; no ffmpeg binary is needed.
"""
from __future__ import annotations

import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

SAMPLE_RATE = 16000
MIN_SAMPLES = 512  # one silero frame: 32 ms at 16 kHz
STREAMED_WAV_LENGTH = 0x7F000000  # data lengths from here up are placeholders of streaming writers


class AudioError(ValueError):
    """The audio cannot be used as given; the message says why and what to do."""


def to_mono_16k(waveform: torch.Tensor | np.ndarray, sample_rate: int) -> torch.Tensor:
    """Return `waveform` as a 1-D float32 tensor at 16 kHz.

    `waveform` is `[T]`, `[C, T]` or ComfyUI's `[1, C, T]`; channels are averaged. Raises `AudioError`
    for a batch of several clips, a bad sample rate, non-finite samples, or under 32 ms of audio.
    """
    audio = torch.as_tensor(waveform).detach().to("cpu", torch.float32)
    if audio.ndim == 3:
        if audio.shape[0] != 1:
            raise AudioError(f"expected one audio clip, got a batch of {audio.shape[0]}; split the batch first")
        audio = audio[0]
    if audio.ndim == 2:
        audio = audio.mean(dim=0)
    if audio.ndim != 1:
        raise AudioError(f"expected audio shaped [T], [C, T] or [1, C, T], got {tuple(waveform.shape)}")
    if not (isinstance(sample_rate, (int, np.integer)) or float(sample_rate).is_integer()) or sample_rate <= 0:
        raise AudioError(f"sample rate must be a positive whole number of Hz, got {sample_rate!r}")
    sample_rate = int(sample_rate)
    problem = sample_problem(audio, sample_rate)
    if problem:
        raise AudioError(problem)
    if sample_rate == SAMPLE_RATE:
        return audio.contiguous()
    from scipy.signal import resample_poly

    ratio = Fraction(SAMPLE_RATE, sample_rate)
    out = resample_poly(audio.numpy(), ratio.numerator, ratio.denominator)
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


def load_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """Decode the first audio stream of a file (wav, flac, mp3, m4a, mp4, ...) to `[C, T]` float32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path} has no audio stream")
            stream = container.streams.audio[0]
            chunks = [frame.to_ndarray() for frame in _planar_float(container.decode(stream))]
            sample_rate = stream.rate
    except av.error.FFmpegError as exc:
        raise AudioError(f"cannot decode {path}: {exc}") from exc
    if not chunks:
        raise AudioError(f"{path} holds no audio samples")
    waveform = torch.from_numpy(np.concatenate(chunks, axis=1))
    problem = sample_problem(waveform, sample_rate) or _wav_truncation(path)
    if problem:
        raise AudioError(f"{path}: {problem}")
    return waveform, int(sample_rate)


def sample_problem(audio: torch.Tensor, sample_rate: int) -> str | None:
    """Why these samples (`[..., T]`) cannot be used, or None: empty, NaN or infinite values, under 32 ms."""
    if audio.numel() == 0:
        return "the audio is empty"
    if not torch.isfinite(audio).all():
        bad = int((~torch.isfinite(audio)).sum())
        return f"the audio has {bad} NaN or infinite samples; fix or replace the source audio"
    if audio.shape[-1] * SAMPLE_RATE < MIN_SAMPLES * sample_rate:
        return f"the audio is {1000 * audio.shape[-1] / sample_rate:.1f} ms long; at least 32 ms is needed"
    return None


def _wav_truncation(path: Path) -> str | None:
    """A WAV file that ends before the data its header announces (FFmpeg decodes the rest without a word), or
    None. Streamed WAVs never get their length: they announce 0 or a placeholder near 2 or 4 GiB (espeak-ng's
    0x7FFFF000, 0xFFFFFFFF), which is not checked."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        head = file.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        byte_rate = 0
        while True:
            chunk = file.read(8)
            if len(chunk) < 8:
                return None
            name, length = chunk[:4], int.from_bytes(chunk[4:], "little")
            if name == b"fmt ":
                byte_rate = int.from_bytes(file.read(length + (length & 1))[8:12], "little")
            elif name == b"data":
                present = size - file.tell()
                if length == 0 or length >= STREAMED_WAV_LENGTH or present >= length or not byte_rate:
                    return None
                return (f"the WAV data stops after {present / byte_rate:.2f} s of the {length / byte_rate:.2f} s its "
                        "header announces; the file is truncated")
            else:
                file.seek(length + (length & 1), 1)


def _planar_float(frames):
    """Convert decoded frames to planar float32 (`[C, n]` arrays), whatever the source format."""
    resampler = None
    for frame in frames:
        if resampler is None:
            resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=frame.sample_rate)
        yield from resampler.resample(frame)
    if resampler is not None:
        yield from resampler.resample(None)


def write_wav(path: str | Path, waveform: torch.Tensor | np.ndarray, sample_rate: int) -> Path:
    """`[C, T]` float samples (-1 to 1) as a 16-bit PCM WAV, e.g. to mux a ComfyUI AUDIO into a video."""
    samples = np.asarray(torch.as_tensor(waveform, dtype=torch.float32).cpu(), dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[None]
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).round().astype("<i2").T.copy()  # interleaved
    path = Path(path)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(samples.shape[0]), out.setsampwidth(2), out.setframerate(int(sample_rate))
        out.writeframes(pcm.tobytes())
    return path
