"""Whisper Encode node: AUDIO (+ speech segments) -> LatentSync's per-frame audio features."""
from __future__ import annotations

import os

from ..latentsync.audio.features import FPS, extract_features
from ..latentsync.audio.whisper import PRECISION, load_whisper_encoder
from ._comfy import compute_dtype, folder_paths, io, load_for_compute, managed, model_management, override
from .base import LatentSyncNode, option_input
from .data_types import AudioFeatures, Speech

# Three hours at 60 fps. The features hold 750 KiB a second of audio and 80 bytes a frame (chunks are gathered a
# window at a time); the library refuses what does not fit in the RAM there is before encoding.
MAX_FRAMES = 3 * 3600 * 60
# Loaded encoders stay behind their ModelPatcher between runs; ComfyUI decides where they live.
_ENCODERS: dict[tuple, object] = {}


def _encoder(name: str, precision: str):
    path = folder_paths.get_full_path_or_raise("whisper", name)
    device = model_management.get_torch_device()
    dtype = compute_dtype(precision, device)
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size, dtype)
    if key not in _ENCODERS:
        for stale in [k for k in _ENCODERS if k[0] == path]:
            del _ENCODERS[stale]
        _ENCODERS[key] = managed(load_whisper_encoder(path, dtype=dtype))
    return _ENCODERS[key]


def _refuse_the_old_speech_policy(prompt: dict | None, node_id: str | None) -> None:
    """An API prompt written for the node's earlier inputs asks for `speech_policy: "silence"`, which ComfyUI
    would drop without a word (it passes only declared inputs): say where the policy went instead. Saved
    workflows are moved over by js/migrations.js when the editor loads them."""
    inputs = ((prompt or {}).get(str(node_id)) or {}).get("inputs", {})
    if inputs.get("speech_policy", "keep") != "keep":
        raise ValueError("Whisper Encode no longer has a speech_policy: the sampler's vad_policy decides which "
                         "frames get silence. Remove speech_policy and crossfade_frames here and set vad_policy "
                         f"'silence' and crossfade_frames {inputs.get('crossfade_frames', 3)} on the LatentSync "
                         "Sampler this node feeds (connect the VAD's speech here or to the sampler).")


class WhisperEncode(LatentSyncNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncWhisperEncode",
            display_name="Whisper Encode (LatentSync)",
            category="LatentSync/audio",
            description="LatentSync's audio conditioning: whisper-tiny encoder states, one [50, 384] chunk "
                        "per video frame, at the video's own frame rate.",
            is_output_node=True,  # runnable on its own to check frame counts and the speech mask
            inputs=[
                io.Audio.Input("audio", tooltip="The voice to lip-sync to; any sample rate and channels."),
                io.Combo.Input("whisper_model", options=folder_paths.get_filename_list("whisper"),
                               tooltip="OpenAI's whisper tiny.pt (LatentSync's checkpoints/whisper/tiny.pt) in "
                                       "models/whisper/."),
                option_input(FPS, "Frame rate of the video to drive; connect GetVideoComponents' fps."),
                io.Int.Input("frames", default=0, min=0, max=MAX_FRAMES,
                             tooltip="How many video frames to make features for; 0 = as many as the audio "
                                     "lasts."),
                io.Boolean.Input("seamless", default=False,
                                 tooltip="Overlap whisper's 30 s spans so long audio has no jump every 30 s "
                                         "(off: the reference)."),
                option_input(PRECISION),
                Speech.Input("speech", optional=True,
                             tooltip="Speech segments from the VAD node, carried to the sampler as a speech "
                                     "mask for its vad_policy."),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],
            outputs=[AudioFeatures.Output(display_name="features",
                                          tooltip="Per-frame audio features and speech mask, for the sampler.")],
        )

    @classmethod
    @override
    def check_inputs(cls, whisper_model: str | None = None, **_) -> dict[str, str]:
        if whisper_model is None or folder_paths.get_full_path("whisper", whisper_model):
            return {}
        folders = ", ".join(folder_paths.get_folder_paths("whisper"))
        return {"whisper_model": f"whisper model {whisper_model!r} not found in {folders}; put openai's whisper "
                                 f"tiny.pt there (LatentSync ships it as checkpoints/whisper/tiny.pt)"}

    @classmethod
    @override
    def execute(cls, audio, whisper_model: str, fps: float, frames: int, seamless: bool, precision: str,
                speech=None) -> io.NodeOutput:
        _refuse_the_old_speech_policy(cls.hidden.prompt, cls.hidden.unique_id)
        patcher = _encoder(whisper_model, precision)
        load_for_compute(patcher)
        features = extract_features(audio["waveform"], audio["sample_rate"], patcher.model, fps=fps,
                                    frames=frames or None, segments=speech, seamless=seamless)
        return io.NodeOutput(features, ui={"latentsync_features": [features.summary()]})
