"""LatentSync lip-sync as a library: audio -> VAD -> features; frames -> faces; sampler; upscale; score.

Nothing here imports ComfyUI. Submodules load lazily so that importing the package stays cheap.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "SpeechSegments": "vad",
    "detect_speech": "vad",
    "load_audio": "audio",
    "to_mono_16k": "audio",
    "AudioError": "audio",
    "AudioFeatures": "audio_features",
    "extract_features": "audio_features",
    "log_mel_spectrogram": "audio_features",
    "seam_discontinuity": "audio_features",
    "WhisperEncoder": "whisper_encoder",
    "load_whisper_encoder": "whisper_encoder",
    "WhisperCheckpointError": "whisper_encoder",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
