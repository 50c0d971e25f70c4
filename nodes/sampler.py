"""LatentSync Sampler node: frames + audio features + UNet + VAE -> lip-synced frames, window by window."""
from __future__ import annotations

import torch

from ..latentsync.sample.sampler import MAX_GUIDANCE, SamplerSettings, lipsync
from ..latentsync.sample.schedulers import SCHEDULERS
from ..latentsync.sample.frame_plan import AUDIO_LONGER, AUDIO_SHORTER, VAD_POLICIES
from ._comfy import io, load_for_compute, model_management, override, progress_reporter
from .base import LatentSyncNode
from .data_types import AudioFeatures, Faces, LatentSyncModel, Speech


class ComfyFaceVAE:
    """ComfyUI's VAE (from Load VAE) seen through the sampler's `FaceVAE` protocol: [-1, 1] NCHW in and out,
    unscaled latents. ComfyUI's VAE manages its own device, precision and batch size."""

    def __init__(self, vae):
        channels, ratio = getattr(vae, "latent_channels", None), getattr(vae, "downscale_ratio", None)
        if channels != 4 or ratio != 8 or getattr(vae, "latent_dim", 2) != 2:
            raise ValueError(f"the VAE has {channels} latent channels and a downscale of {ratio}; LatentSync works in "
                             "SD's latent space (4 channels, 8x): load vae-ft-mse-840000-ema-pruned.safetensors "
                             "(stabilityai/sd-vae-ft-mse-original) in Load VAE")
        self.vae = vae

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        pixels = (images.float().cpu() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
        return self.vae.encode(pixels)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        pixels = self.vae.decode(latents)
        return pixels.reshape(-1, *pixels.shape[-3:]).movedim(-1, 1).float() * 2 - 1


class LatentSyncSampler(LatentSyncNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncSampler",
            display_name="LatentSync Sampler",
            category="LatentSync",
            description="Lip-syncs video frames (or a repeated still image) to audio features: finds and aligns "
                        "the face, denoises 16-frame windows of the mouth region with the LatentSync UNet, and "
                        "pastes the faces back. Frames without a face pass through unchanged.",
            inputs=[
                io.Image.Input("images", tooltip="Video frames (GetVideoComponents) or a still image repeated."),
                io.Float.Input("fps", default=25.0, min=1.0, max=240.0, step=0.001,
                               tooltip="Frame rate of the images; must match the fps given to Whisper Encode."),
                AudioFeatures.Input("features", tooltip="From Whisper Encode (LatentSync)."),
                LatentSyncModel.Input("model", tooltip="From Load LatentSync UNet."),
                io.Vae.Input("vae", tooltip="sd-vae-ft-mse (vae-ft-mse-840000-ema-pruned) from ComfyUI's Load VAE."),
                io.Combo.Input("scheduler", options=list(SCHEDULERS), default="ddim",
                               tooltip="ddim: the reference; dpmpp_2m: good in fewer steps; euler: Euler on the "
                                       "same schedule."),
                io.Int.Input("steps", default=20, min=1, max=200,
                             tooltip="Denoising steps per window (reference: 20)."),
                io.Float.Input("guidance", default=1.5, min=1.0, max=MAX_GUIDANCE, step=0.05,
                               tooltip="Classifier-free guidance on the audio (reference 1.5); 1 is off and "
                                       "twice as fast."),
                io.Int.Input("seed", default=1247, min=0, max=2**63 - 1, control_after_generate=True,
                             tooltip="Seed of the initial noise, one noise shared by all frames as the "
                                     "reference does."),
                io.Int.Input("deepcache_interval", default=0, min=0, max=10,
                             tooltip="DeepCache: run the full UNet every N-th step, reuse its deep features "
                                     "between (0 or 1: off)."),
                io.Int.Input("window", default=16, min=1, max=24,
                             tooltip="Frames denoised together (the model was trained on 16)."),
                io.Combo.Input("vad_policy", options=list(VAD_POLICIES), default="off",
                               tooltip="With speech segments: what pauses get; off is the reference, "
                                       "silence/skip/fast save motion or time."),
                io.Float.Input("min_silence_s", default=0.3, min=0.0, max=10.0, step=0.05,
                               tooltip="skip/fast: pauses at least this long (seconds) are skipped or sped up."),
                io.Int.Input("crossfade_frames", default=3, min=0, max=25,
                             tooltip="skip: frames of cross-fade between generated and passed-through frames."),
                io.Int.Input("fast_steps", default=6, min=1, max=200, tooltip="fast: steps used for pauses."),
                io.Combo.Input("audio_longer", options=list(AUDIO_LONGER), default="loop",
                               tooltip="Audio longer than the video: loop the frames back and forth "
                                       "(reference), or freeze."),
                io.Combo.Input("audio_shorter", options=list(AUDIO_SHORTER), default="stop",
                               tooltip="Audio shorter than the video: stop at its end, or keep the remaining "
                                       "frames unchanged."),
                Speech.Input("speech", optional=True,
                             tooltip="Speech segments from the VAD node, for the silence/skip/fast policies."),
                Faces.Input("faces", optional=True,
                            tooltip="Faces from Detect and Align Faces; without it the largest face is found "
                                    "with dlib."),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="The lip-synced frames."),
                io.Image.Output(display_name="crops", tooltip="The generated face crops before paste-back, "
                                                              "e.g. for the upscaler."),
                Faces.Output(display_name="faces", tooltip="Where each output frame's crop goes back."),
                io.Mask.Output(display_name="generated",
                               tooltip="Per output frame, [N, 1, 1]: 1 where the frame was diffused."),
            ],
        )

    @classmethod
    @override
    def execute(cls, images, fps: float, features, model, vae, scheduler: str, steps: int, guidance: float,
                seed: int, deepcache_interval: int, window: int, vad_policy: str, min_silence_s: float,
                crossfade_frames: int, fast_steps: int, audio_longer: str, audio_shorter: str, speech=None,
                faces=None) -> io.NodeOutput:
        if abs(features.fps - fps) > 1e-3:
            raise ValueError(f"the audio features were made for {features.fps:g} fps but the images are at "
                             f"{fps:g} fps; give Whisper Encode the video's fps")
        if vad_policy != "off" and speech is None:
            raise ValueError(f"vad_policy {vad_policy!r} needs speech segments: connect the VAD node's speech")
        if faces is not None and faces.resolution != model.resolution:
            raise ValueError(f"the faces were aligned at {faces.resolution} px but the model makes "
                             f"{model.resolution} px faces; set Detect Faces' resolution to {model.resolution}")
        settings = SamplerSettings(scheduler=scheduler, steps=steps, guidance=guidance, seed=seed,
                                   deepcache_interval=deepcache_interval, window=window, vad_policy=vad_policy,
                                   min_silence_s=min_silence_s, crossfade_frames=crossfade_frames,
                                   fast_steps=fast_steps, audio_longer=audio_longer, audio_shorter=audio_shorter)
        device = load_for_compute(model.patcher)
        result = lipsync(images, features, model.patcher.model, ComfyFaceVAE(vae), settings, speech=speech,
                         faces=faces, resolution=model.resolution, device=device, progress=progress_reporter())
        out = model_management.intermediate_device()
        generated = result.generated.to(torch.float32).view(-1, 1, 1)
        summary = {"frames": len(result.frames), "generated": int(result.generated.sum())}
        return io.NodeOutput(result.frames.to(out), result.crops.to(out), result.faces, generated,
                             ui={"latentsync_sampler": [summary]})
