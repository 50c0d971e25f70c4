"""Voice Activity Detection node: AUDIO -> speech segments, a timeline picture, and the editor's timeline."""
from __future__ import annotations

import importlib.util

import torch

from ..latentsync.audio import timeline

from ..latentsync.audio import vad
from ..latentsync.media.audio import to_mono_16k
from ..latentsync.audio.vad_pyannote import INSTALL_HINT, MODEL_HINT
from ._comfy import folder_paths, io, override, progress_reporter, ui
from .base import LatentSyncNode, option_input
from .data_types import Speech

TIMELINE_BINS = 800  # points of waveform/probability sent to the editor's timeline widget
NO_MODEL = "none"


class VoiceActivityDetection(LatentSyncNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncVAD",
            display_name="Voice Activity Detection (LatentSync)",
            category="LatentSync/audio",
            description="Finds where someone speaks (silero-vad, offline). Later nodes use the segments so "
                        "silent stretches neither drive mouth motion nor cost diffusion time.",
            is_output_node=True,
            inputs=[
                io.Audio.Input("audio", tooltip="The voice track, at any sample rate and channel count."),
                *(option_input(option) for option in vad.VAD_OPTIONS),  # threshold ... backend
                io.Combo.Input("pyannote_model", options=[NO_MODEL, *folder_paths.get_filename_list("pyannote")],
                               default=NO_MODEL, optional=True,
                               tooltip="pyannote backend only: a segmentation checkpoint in models/pyannote/."),
            ],
            outputs=[
                Speech.Output(display_name="speech", tooltip="Speech segments in seconds, for Whisper Encode "
                                                             "and the sampler."),
                io.Image.Output(display_name="timeline", tooltip="The waveform with speech in green and the "
                                                                 "speech probability."),
            ],
        )

    @classmethod
    @override
    def check_inputs(cls, backend: str | None = None, pyannote_model: str | None = NO_MODEL,
                     **_) -> dict[str, str]:
        if backend != "pyannote":
            return {}
        if importlib.util.find_spec("pyannote") is None:
            return {"backend": INSTALL_HINT}
        if pyannote_model is not None and folder_paths.get_full_path("pyannote", pyannote_model) is None:
            folders = ", ".join(folder_paths.get_folder_paths("pyannote"))
            return {"pyannote_model": f"the pyannote backend needs a checkpoint: pick one, or put {MODEL_HINT} "
                                      f"({folders})"}
        return {}

    @classmethod
    @override
    def execute(cls, audio, threshold: float, min_speech_ms: int, min_silence_ms: int, padding_ms: int,
                backend: str, pyannote_model: str = NO_MODEL) -> io.NodeOutput:
        waveform, sample_rate = audio["waveform"], audio["sample_rate"]
        audio16k = to_mono_16k(waveform, sample_rate)
        model_path = folder_paths.get_full_path("pyannote", pyannote_model) if backend == "pyannote" else None
        segments = vad.detect_speech(audio16k, vad.SAMPLE_RATE, threshold=threshold,
                                     min_speech_ms=min_speech_ms, min_silence_ms=min_silence_ms,
                                     padding_ms=padding_ms, backend=backend, model_path=model_path,
                                     progress=progress_reporter())
        picture = torch.from_numpy(timeline.render_timeline(audio16k, segments)).float().div(255)[None]
        # The core image preview, and the payload the editor's timeline widget draws (js/vad_timeline.js).
        payload = _timeline_payload(audio16k, segments)
        shown = ui.PreviewImage(picture, cls=cls).as_dict() | {"latentsync_vad": [payload]}
        return io.NodeOutput(segments, picture, ui=shown)


def _timeline_payload(audio16k: torch.Tensor, segments: vad.SpeechSegments) -> dict:
    """What the editor's timeline widget draws: the segments, a waveform envelope and the probabilities."""
    lo, hi = timeline.envelope(audio16k, TIMELINE_BINS)
    peak = max(float(max(abs(lo.min()), abs(hi.max()))), 1e-6)
    probs = segments.frame_probs
    step = max(1, probs.size // TIMELINE_BINS)
    return segments.to_json() | {
        "envelope": [[round(float(a) / peak, 3), round(float(b) / peak, 3)] for a, b in zip(lo, hi)],
        "probs": [round(float(p), 3) for p in probs[::step]],
        "speech_seconds": round(segments.speech_seconds, 3),
    }
