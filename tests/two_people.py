"""Two-person test material built from the shared clips: the woman of demo1 on the left, the man of demo3 on the
right (each scaled to a column), and their two voices in alternation with pauses and one stretch of overlap.

Speaker 1 (demo1's voice) belongs to the left face, speaker 2 (demo3's voice) to the right face. `SCRIPT` says
who speaks when; the stems hold each voice alone (silence elsewhere) and the mix is their sum.
"""
from __future__ import annotations

import functools
from fractions import Fraction

import av
import numpy as np

from conftest import shared_path

FPS = 25
RATE = 16000
COLUMN = 360  # width of each person's column (the clips are 1080x1920 portrait: 360x640 each, faces ~90 px)

# (speaker, start s, end s): 1 alone, a pause, 2 alone, a pause, both at once, a pause, 1 alone.
SCRIPT = ((1, 0.00, 1.00), (2, 1.60, 2.60), (1, 3.20, 3.80), (2, 3.20, 3.80), (1, 4.40, 5.00))
DURATION = 5.2
VOICE_START = {1: 0.45, 2: 0.6}  # seconds into each recording where its speech begins


@functools.lru_cache(maxsize=4)
def _person(name: str, count: int, width: int) -> np.ndarray:
    """`count` frames at 25 fps (nearest frame by time) of a shared clip, `width` px wide, uint8 RGB."""
    frames, times = [], []
    with av.open(str(shared_path(f"media/{name}"))) as container:
        stream = container.streams.video[0]
        rate = Fraction(stream.average_rate)
        needed = [round(i / FPS * rate) for i in range(count)]
        for index, frame in enumerate(container.decode(stream)):
            if index in needed:
                frame = frame.reformat(width=width, height=round(frame.height * width / frame.width / 2) * 2)
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(index)
            if index >= needed[-1]:
                break
    by_index = dict(zip(times, frames))
    return np.stack([by_index[i] for i in needed])


def two_person_frames(count: int, *, width: int = COLUMN, swap_at: int | None = None, shift_right: int = 0,
                      shift_left: int = 0, right: str = "demo3") -> np.ndarray:
    """`[count, H, 2*width, 3]` uint8: demo1's woman left, demo3's man right.

    `swap_at`: from that frame on (a hard cut) the two swap sides. `shift_left` / `shift_right`: that column
    shows its person's frame `i + shift` at frame `i` (its video leads its audio by `shift` frames).
    `right="demo1"` puts the woman in both columns (one person, two tracks: tests that must tell tracks apart by
    timing alone)."""
    extra = max(shift_left, shift_right, 0)
    woman, other = _person("latentsync_demo1_video.mp4", count + extra, width), \
        _person(f"latentsync_{right}_video.mp4", count + extra, width)
    height = min(woman.shape[1], other.shape[1])
    out = np.empty((count, height, 2 * width, 3), np.uint8)
    for i in range(count):
        first, second = woman[i + shift_left, :height], other[i + shift_right, :height]
        first, second = (second, first) if swap_at is not None and i >= swap_at else (first, second)
        out[i, :, :width], out[i, :, width:] = first, second
    return out


@functools.lru_cache(maxsize=2)
def _voice(speaker: int) -> np.ndarray:
    from latentsync.media.audio import load_audio, to_mono_16k

    name = "latentsync_demo1_audio.wav" if speaker == 1 else "latentsync_demo3_audio.wav"
    waveform, rate = load_audio(shared_path(f"media/{name}"))
    return to_mono_16k(waveform, rate).numpy().astype(np.float32)


def stems(duration: float = DURATION, script=SCRIPT) -> dict[int, np.ndarray]:
    """Each speaker's voice alone, `[T]` float32 at 16 kHz, silent outside its turns in `SCRIPT`. A speaker's
    turns play its own recording from where its previous turn stopped (real speech in every turn)."""
    total = round(duration * RATE)
    out = {1: np.zeros(total, np.float32), 2: np.zeros(total, np.float32)}
    played = {1: 0, 2: 0}
    for speaker, start, end in script:
        a, b = round(start * RATE), min(round(end * RATE), total)
        voice = _voice(speaker)
        # skip the recordings' opening pauses (demo1's voice starts at 0.4 s, demo3's at 0.6 s)
        offset = round(VOICE_START[speaker] * RATE) + played[speaker]
        out[speaker][a:b] = voice[offset:offset + b - a]
        played[speaker] += b - a
    return out


def mix(duration: float = DURATION) -> np.ndarray:
    """Both voices in one track, `[T]` float32 at 16 kHz (the overlap is their sum, kept within [-1, 1])."""
    voices = stems(duration)
    return np.clip(voices[1] + voices[2], -1.0, 1.0)


def turns(speaker: int) -> list[tuple[float, float]]:
    """The true `(start, end)` seconds of a speaker's turns."""
    return [(start, end) for who, start, end in SCRIPT if who == speaker]


def write_wav(path, samples: np.ndarray, rate: int = RATE):
    """`[T]` float samples as a 16-bit mono WAV."""
    import wave

    with wave.open(str(path), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(rate)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return path
