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
    "LatentSyncUNet": "unet",
    "build_unet": "unet",
    "UNetConfig": "unet_config",
    "resolve_unet_config": "unet_config",
    "load_unet": "unet_loading",
    "UNetCheckpointError": "unet_loading",
    "SyncNet": "syncnet",
    "load_syncnet": "syncnet",
    "SyncNetCheckpointError": "syncnet",
    "SyncScore": "sync_metric",
    "SyncScoreError": "sync_metric",
    "score_sync": "sync_score",
    "score_video": "sync_score",
    "load_s3fd": "s3fd",
    "load_upscale_model": "upscale_models",
    "UpscaleModelError": "upscale_models",
    "upscale_frames": "upscale",
    "upscale_to_sizes": "upscale",
    "upscale_mouth_region": "upscale",
    "resize_frames": "resize",
    "FaceTrack": "face_detect",
    "detect_faces": "face_detect",
    "make_detector": "face_detect",
    "FaceModelMissing": "face_detect",
    "AlignedFaces": "face_align",
    "align": "face_align",
    "paste_back": "face_restore",
    "mouth_masks": "face_mask",
    "SamplerSettings": "sampler",
    "LipSyncResult": "sampler",
    "lipsync": "sampler",
    "FaceVAE": "sampler",
    "SCHEDULERS": "schedulers",
    "make_scheduler": "schedulers",
    "load_vae": "vae",
    "read_frames": "video_io",
    "write_video": "video_io",
    "run_experiment": "experiment",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
