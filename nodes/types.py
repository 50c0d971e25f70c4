"""The pack's own socket types, shared by its nodes."""
from ._comfy import io

# latentsync.vad.SpeechSegments: speech times in seconds, from the VAD node to the encoder and sampler.
Speech = io.Custom("LATENTSYNC_SPEECH")
