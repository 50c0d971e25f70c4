"""ComfyUI adapters for the latentsync library: read inputs, call the library, wrap outputs."""
from __future__ import annotations

from ._comfy import ComfyExtension, io, override
from .model_folders import register_model_folders
from .faces import DetectFaces, PasteFaces
from .prepare import PrepareVideo
from .sample_video import LatentSyncSampleVideo, VideoInfo
from .sampler import LatentSyncSampler, LatentSyncSpeakersSampler
from .score import SyncNetScore
from .speakers import AssignFaces, DiarizeSpeakers, SpeakerNode
from .unet_loader import UNetLoader
from .upscale import RestoreMouths, Upscale
from .vad import VoiceActivityDetection
from .whisper import WhisperEncode

NODES: list[type[io.ComfyNode]] = [VoiceActivityDetection, WhisperEncode, UNetLoader, DetectFaces, PasteFaces,
                                   LatentSyncSampler, LatentSyncSampleVideo, VideoInfo, Upscale, SyncNetScore,
                                   SpeakerNode, DiarizeSpeakers, AssignFaces, LatentSyncSpeakersSampler, RestoreMouths,
                                   PrepareVideo]


class LatentSyncExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        # ComfyUI 0.3.75 never calls ComfyExtension.on_load, so the folders are registered here
        # (idempotent), before any node lists its model files.
        register_model_folders()
        return NODES
