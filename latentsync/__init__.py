"""LatentSync lip-sync as a library: audio -> VAD -> features; frames -> faces; sampler; upscale; score.

Nothing here imports ComfyUI. Submodules load lazily so that importing the package stays cheap.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "SpeechSegments": "audio.vad",
    "detect_speech": "audio.vad",
    "load_audio": "media.audio",
    "to_mono_16k": "media.audio",
    "AudioError": "media.audio",
    "AudioFeatures": "audio.features",
    "extract_features": "audio.features",
    "log_mel_spectrogram": "audio.features",
    "seam_discontinuity": "audio.features",
    "WhisperEncoder": "audio.whisper",
    "load_whisper_encoder": "audio.whisper",
    "WhisperCheckpointError": "audio.whisper",
    "LatentSyncUNet": "unet.model",
    "build_unet": "unet.model",
    "UNetConfig": "unet.config",
    "resolve_unet_config": "unet.config",
    "load_unet": "unet.loading",
    "UNetCheckpointError": "unet.loading",
    "SyncNet": "score.syncnet",
    "load_syncnet": "score.syncnet",
    "SyncNetCheckpointError": "score.syncnet",
    "SyncScore": "score.metric",
    "SyncScoreError": "score.metric",
    "score_sync": "score.evaluate",
    "score_video": "score.evaluate",
    "load_s3fd": "score.s3fd",
    "load_upscale_model": "upscale.models",
    "UpscaleModelError": "upscale.models",
    "upscale_frames": "upscale.frames",
    "upscale_to_sizes": "upscale.frames",
    "upscale_mouth_region": "upscale.frames",
    "resize_frames": "upscale.resize",
    "FaceTrack": "face.detect",
    "detect_faces": "face.detect",
    "make_detector": "face.detect",
    "FaceModelMissing": "face.detect",
    "AlignedFaces": "face.align",
    "align": "face.align",
    "paste_back": "face.paste",
    "mouth_masks": "face.mask",
    "SamplerSettings": "sample.sampler",
    "LipSyncResult": "sample.sampler",
    "lipsync": "sample.sampler",
    "FaceVAE": "sample.sampler",
    "SCHEDULERS": "sample.schedulers",
    "make_scheduler": "sample.schedulers",
    "load_vae": "sample.vae",
    "read_frames": "media.video",
    "write_video": "media.video",
    "run_experiment": "experiment",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
