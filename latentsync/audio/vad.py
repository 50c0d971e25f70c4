"""Voice activity detection: where in the audio someone speaks.

Silence should neither drive mouth motion nor cost diffusion time; the sampler and the whisper encoder
gate on the `SpeechSegments` found here. The detector is silero-vad, whose model files ship inside its
wheel, so nothing is downloaded.
"""
from __future__ import annotations

import importlib.util
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..media.audio import SAMPLE_RATE, AudioError, to_mono_16k
from ..onnx_runtime import import_onnxruntime
from ..core.options import Option, check_all
from ..core.threads import single_threaded
from .vad_pyannote import load_segmentation, pyannote_speech

BACKENDS = ("jit", "onnx", "pyannote")  # silero TorchScript, silero ONNX, pyannote.audio (optional extra)
FRAME = 512  # silero's window at 16 kHz: 32 ms

# What a user sets: the VAD node's inputs, the `vad` command's flags (the threshold also `--vad-threshold` of
# `features` and `lipsync`), in milliseconds as silero counts them.
THRESHOLD = Option("threshold", 0.5, "Speech probability above which a 32 ms frame counts as speech.", 0.05, 0.95,
                   step=0.01)
MIN_SPEECH_MS = Option("min_speech_ms", 250, "Speech shorter than this (ms) is dropped as a click or breath.", 0,
                       10000, step=10)
MIN_SILENCE_MS = Option("min_silence_ms", 100, "Pauses shorter than this (ms) do not split a speech segment.", 0,
                        10000, step=10)
PADDING_MS = Option("padding_ms", 30, "Each segment is widened by this (ms) on both sides, to keep word onsets.", 0,
                    2000, step=10)
BACKEND = Option("backend", "jit", "silero-vad (jit: TorchScript, onnx: ONNX Runtime; in its wheel), or pyannote "
                 "from a local checkpoint (optional extra).", choices=BACKENDS)
VAD_OPTIONS = (THRESHOLD, MIN_SPEECH_MS, MIN_SILENCE_MS, PADDING_MS, BACKEND)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SpeechSegments:
    """Speech found in a clip: sorted, non-overlapping `(start, end)` times in seconds."""

    duration: float
    speech: tuple[tuple[float, float], ...]
    # silero's speech probability per 32 ms frame, kept for previews.
    frame_probs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False, compare=False)

    def __post_init__(self) -> None:
        last = 0.0
        for start, end in self.speech:
            if not (last <= start < end <= self.duration + 1e-9):
                raise ValueError(f"segments must be sorted, non-overlapping and within the audio: {self.speech}")
            last = end

    @property
    def speech_seconds(self) -> float:
        return sum(end - start for start, end in self.speech)

    def to_json(self) -> dict:
        return {"duration": round(self.duration, 6), "speech": [[round(s, 6), round(e, 6)] for s, e in self.speech]}

    def speech_mask(self, fps: float, frames: int) -> np.ndarray:
        """`True` for each video frame whose centre time falls inside a speech segment."""
        centres = (np.arange(frames) + 0.5) / float(fps)
        mask = np.zeros(frames, dtype=bool)
        for start, end in self.speech:
            mask |= (centres >= start) & (centres < end)
        return mask


def detect_speech(
    waveform: torch.Tensor | np.ndarray,
    sample_rate: int,
    *,
    threshold: float = THRESHOLD.default,
    min_speech_ms: int = MIN_SPEECH_MS.default,
    min_silence_ms: int = MIN_SILENCE_MS.default,
    padding_ms: int = PADDING_MS.default,
    backend: str = BACKEND.default,
    model_path: str | Path | None = None,
    progress: Progress | None = None,
) -> SpeechSegments:
    """Find speech in `waveform` (`[T]`, `[C, T]` or `[1, C, T]`, any sample rate).

    `threshold` is the speech probability above which a frame counts as speech; stretches of speech
    shorter than `min_speech_ms` are dropped, pauses shorter than `min_silence_ms` do not split a
    segment, and each segment is widened by `padding_ms` on both sides. The `pyannote` backend needs
    `model_path`, a local segmentation checkpoint. `progress(done, total)` is called as the audio is
    scored; it may raise to cancel. Each option is checked against its declaration (`VAD_OPTIONS`).
    """
    check_all(VAD_OPTIONS, {"threshold": threshold, "min_speech_ms": min_speech_ms, "min_silence_ms": min_silence_ms,
                            "padding_ms": padding_ms, "backend": backend})
    audio = to_mono_16k(waveform, sample_rate)
    duration = audio.numel() / SAMPLE_RATE
    if backend == "pyannote":
        if model_path is None:
            raise ValueError("the pyannote backend needs model_path, a local segmentation checkpoint")
        found = pyannote_speech(audio, _pyannote_model(model_path), threshold=threshold,
                                min_speech_s=min_speech_ms / 1000, min_silence_s=min_silence_ms / 1000,
                                progress=progress)
        pad = padding_ms / 1000
        return SpeechSegments(duration=duration, speech=merge_segments([(s - pad, e + pad) for s, e in found],
                                                                      duration))
    probs = speech_probabilities(audio, backend=backend, progress=progress)

    from silero_vad.utils_vad import get_speech_timestamps_from_probs

    stamps = get_speech_timestamps_from_probs(
        probs.tolist(),
        sampling_rate=SAMPLE_RATE,
        threshold=threshold,
        min_speech_duration_ms=min_speech_ms,
        min_silence_duration_ms=min_silence_ms,
        speech_pad_ms=padding_ms,
        audio_length_samples=audio.numel(),
    )
    speech = tuple((s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps)
    return SpeechSegments(duration=duration, speech=speech, frame_probs=probs)


def merge_segments(segments: list[tuple[float, float]], duration: float) -> tuple[tuple[float, float], ...]:
    """Clip to `[0, duration]`, sort, and merge segments that touch or overlap."""
    merged: list[list[float]] = []
    for start, end in sorted((max(0.0, s), min(duration, e)) for s, e in segments):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple((s, e) for s, e in merged)


def speech_probabilities(audio16k: torch.Tensor, *, backend: str = "jit",
                         progress: Progress | None = None) -> np.ndarray:
    """silero's speech probability for each 32 ms frame of 16 kHz mono audio (last frame zero-padded)."""
    if audio16k.ndim != 1 or audio16k.numel() < FRAME:
        raise AudioError("expected at least 32 ms of 16 kHz mono audio")
    model = _silero_model(backend)
    total = -(-audio16k.numel() // FRAME)
    frames = torch.nn.functional.pad(audio16k, (0, total * FRAME - audio16k.numel())).view(total, FRAME)
    probs = np.empty(total, dtype=np.float32)
    # Each call is ~0.3 ms of work: a second torch thread only adds a wait, 100x slower on a busy machine.
    with _MODEL_LOCK, torch.inference_mode(), single_threaded():
        model.reset_states()
        for i in range(total):
            probs[i] = float(model(frames[i], SAMPLE_RATE))
            if progress is not None and (i % 256 == 255 or i == total - 1):
                progress(i + 1, total)
    return probs


_MODELS: dict[object, object] = {}
_MODEL_LOCK = threading.Lock()  # silero models carry recurrent state between calls


def _pyannote_model(path: str | Path):
    stat = Path(path).stat() if Path(path).exists() else None
    key = ("pyannote", str(path), stat and stat.st_mtime_ns)
    with _MODEL_LOCK:
        if key not in _MODELS:
            for stale in [k for k in _MODELS if k[:2] == key[:2]]:
                del _MODELS[stale]
            _MODELS[key] = load_segmentation(path)
        return _MODELS[key]


def _silero_model(backend: str):
    if backend not in ("jit", "onnx"):
        raise ValueError(f"unknown VAD backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend not in _MODELS:
        silero = import_silero_vad()
        if backend == "onnx":
            if importlib.util.find_spec("onnxruntime") is None:
                raise ImportError("the onnx VAD backend needs onnxruntime; run `pip install onnxruntime` in "
                                  "ComfyUI's Python environment, or choose the jit backend")
            import_onnxruntime()  # before silero imports it: with its telemetry off
        # The model files ship inside the silero-vad wheel; this reads them from there.
        with warnings.catch_warnings():
            # torch deprecates jit.load and importlib deprecates resources.path; both are silero's calls.
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            _MODELS[backend] = silero.load_silero_vad(onnx=backend == "onnx")
    return _MODELS[backend]


def import_silero_vad():
    """Import silero_vad without its side effect: it sets torch to one thread for the whole process."""
    threads = torch.get_num_threads()
    try:
        import silero_vad
    except ImportError as exc:
        raise ImportError("silero-vad is not installed; run `pip install silero-vad onnxruntime` "
                          "in ComfyUI's Python environment") from exc
    finally:
        torch.set_num_threads(threads)
    return silero_vad

