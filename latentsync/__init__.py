"""LatentSync lip-sync as a library, without ComfyUI: the public API a script imports.

A clip flows audio -> speech -> features, frames -> faces -> sampler -> frames, then optionally upscale and
score. A whole run, with the official files in ComfyUI's model folders:

    from pathlib import Path
    import latentsync as ls

    video, voice, models, version = "talking.mp4", "voice.wav", Path("ComfyUI/models"), "1.5"
    frames, fps = ls.read_frames(video)
    waveform, rate = ls.load_audio(voice)
    speech = ls.detect_speech(waveform, rate)  # silero, offline
    encoder = ls.load_whisper_encoder(models / "whisper" / "tiny.pt")
    features = ls.extract_features(waveform, rate, encoder, fps=fps, frames=len(frames))
    unet = ls.load_unet(models / "latentsync" / version / "latentsync_unet.pt", version)
    vae = ls.load_vae(models / "vae" / "vae-ft-mse-840000-ema-pruned.safetensors")
    settings = ls.SamplerSettings(steps=20, vad_policy="skip")
    result = ls.lipsync(frames, features.with_speech(speech), unet, vae, settings)
    ls.write_video("lipsynced.mp4", result.frames, fps, audio=voice)

(`tests/test_pack.py` runs this very block with small random-weight models.) On a GPU pass `device="cuda"` to
the loaders and `lipsync`. The command line (`python -m latentsync --help`) and the ComfyUI nodes are built
from the same functions.

Names load lazily, so `import latentsync` stays cheap; nothing here imports ComfyUI. Everything else in the
subpackages is internal and may change.
"""
from __future__ import annotations

import importlib

# name -> submodule, in the order a clip flows.
_EXPORTS = {
    # media files
    "read_frames": "media.video",
    "write_video": "media.video",
    "load_audio": "media.audio",
    # audio: speech, whisper features
    "detect_speech": "audio.vad",
    "SpeechSegments": "audio.vad",
    "load_whisper_encoder": "audio.whisper",
    "extract_features": "audio.features",
    "AudioFeatures": "audio.features",
    "diarize": "audio.diarize",
    "load_diarization": "audio.diarize",
    "parse_rttm": "audio.diarize",
    # faces
    "detect_faces": "face.detect",
    "FaceTrack": "face.detect",
    "align": "face.align",
    "AlignedFaces": "face.align",
    "paste_back": "face.paste",
    "track_faces": "face.tracks",
    "FaceTracks": "face.tracks",
    # several speakers: who drives which face
    "Speaker": "speakers.cast",
    "make_cast": "speakers.cast",
    # models and the sampler
    "load_unet": "unet.loading",
    "load_vae": "sample.vae",
    "SamplerSettings": "sample.sampler",
    "lipsync": "sample.sampler",
    "LipSyncResult": "sample.sampler",
    "lipsync_cast": "sample.cast",
    # after: upscale, score, compare
    "load_upscale_model": "upscale.models",
    "upscale_frames": "upscale.frames",
    "Tiling": "upscale.tiling",
    "load_face_restorer": "upscale.restore",
    "restore_mouths": "upscale.restore",
    "FaceRestorer": "upscale.restore",
    "MouthBlend": "upscale.restore",
    "compare_sharpness": "score.sharpness",
    "compare_flicker": "score.flicker",
    "load_syncnet": "score.syncnet",
    "score_video": "score.evaluate",
    "FaceCrops": "score.evaluate",
    "TrackRules": "score.evaluate",
    "SyncScore": "score.metric",
    "run_experiment": "run.experiment",
    # every model-file refusal derives from it
    "CheckpointError": "checkpoint",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
