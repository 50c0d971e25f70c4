"""LatentSync Sampler node: frames + audio features + UNet + VAE -> lip-synced frames, window by window."""
from __future__ import annotations

import torch

from ..latentsync.audio.features import FPS
from ..latentsync.catalogue import CATALOGUE
from ..latentsync.core.digest import weights_digest
from ..latentsync.prepared import vae_identity
from ..latentsync.face.blend import BLEND_MASK, FEATHER, GROW, Blend
from ..latentsync.face.seam import COLOUR_MATCH
from ..latentsync.sample.cast import CAST_VAD_POLICY, lipsync_cast
from ..latentsync.sample.presets import BUNDLED, PRESET, bundled_settings
from ..latentsync.sample.sampler import Output, lipsync
from ..latentsync.sample.settings import SETTINGS, SamplerSettings, Setting
from ..latentsync.run.job import STREAMED_BLEND_MASKS
from ._comfy import io, load_for_compute, model_management, override, step_reporter
from .base import LatentSyncNode, option_input
from .data_types import AudioFeatures, Cast, Faces, LatentSyncModel, Prepared, Speech


class ComfyFaceVAE:
    """ComfyUI's VAE (from Load VAE) seen through the sampler's `FaceVAE` protocol: [-1, 1] NCHW in and out,
    unscaled latents. ComfyUI's VAE manages its own device, precision and batch size."""

    def __init__(self, vae):
        channels, ratio = getattr(vae, "latent_channels", None), getattr(vae, "downscale_ratio", None)
        if channels != 4 or ratio != 8 or getattr(vae, "latent_dim", 2) != 2:
            sd_vae = CATALOGUE["vae"]
            raise ValueError(f"the VAE has {channels} latent channels and a downscale of {ratio}; LatentSync works in "
                             f"SD's latent space (4 channels, 8x): load {sd_vae.source_file} ({sd_vae.source}) in "
                             "Load VAE")
        self.vae = vae

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """ComfyUI's encode: the posterior's mean (deterministic: a prepared video stores it as it is)."""
        pixels = (images.float().cpu() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
        return self.vae.encode(pixels)

    def identity(self) -> dict:
        """What a prepared video records of this VAE (`prepared.make.vae_identity` asks for it)."""
        return {"kind": "comfyui", "weights": weights_digest(self.vae.first_stage_model),
                "dtype": str(getattr(self.vae, "vae_dtype", "")).removeprefix("torch.")}

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        pixels = self.vae.decode(latents)
        return pixels.reshape(-1, *pixels.shape[-3:]).movedim(-1, 1).float() * 2 - 1


def vae_device(vae) -> torch.device:
    """Where ComfyUI's VAE computes (what a prepared video's latents depend on, beside the weights)."""
    return torch.device(getattr(vae, "device", None) or "cpu")


def check_prepared(prepared: object, video: dict, face_vae: ComfyFaceVAE, vae, resolution: int,
                   fps: float | None = None) -> None:
    """Refuse a prepared video made from other frames, another VAE or device, at another face size or (a video
    file) frame rate: the differences named (how its faces were found is its own)."""
    expected = {**prepared.identity, "video": video, "vae": vae_identity(face_vae), "device": vae_device(vae).type,
                "resolution": int(resolution)}
    if fps is not None and prepared.identity.get("fps") is not None:
        expected["fps"] = round(float(fps), 6)
    prepared.check(expected, "the prepared video")


def refuse_meta_batches(prompt: dict | None, node_id: str | None) -> None:
    """VideoHelperSuite's Meta Batch Manager feeds a long video through the graph one batch of frames per queued
    run, and nothing in what reaches this node says which frames a batch holds (VHS keeps the batch number in its
    own node's prompt inputs); the features would start at the voice's first frame in every batch, and its
    audio_longer policy would loop the batch to the voice's length. Refuse it, naming the way that works."""
    prompt = prompt or {}
    pending, seen = [(prompt.get(str(node_id)) or {}).get("inputs", {}).get("images")], set()
    while pending:
        link = pending.pop()
        if not (isinstance(link, list) and len(link) == 2) or str(link[0]) in seen:
            continue  # a widget value, or a node already walked
        seen.add(str(link[0]))
        upstream = prompt.get(str(link[0]), {})
        if upstream.get("class_type") == "VHS_BatchManager":
            raise ValueError("the images come from a VideoHelperSuite Meta Batch Manager, which sends the video "
                             "in batches without saying which frames each holds, so every batch would be "
                             "lip-synced to the start of the voice. Disconnect meta_batch from Load Video and "
                             "Video Combine, or for a long video use LatentSync Sampler (video file) "
                             "(workflows/latentsync_long_video.json), which streams the file window by window.")
        pending.extend(upstream.get("inputs", {}).values())


def setting_input(setting: Setting, **extra) -> io.Input:
    """The node input of a sampler setting: its name, default, range and help from the library's table."""
    if setting.name == "seed":
        extra.setdefault("control_after_generate", True)
    return option_input(setting, **extra)


def preset_input() -> io.Input:
    """The optional preset, last so saved workflows keep their widgets' positions; "custom" is the widgets."""
    return option_input(PRESET, optional=True,
                        tooltip=f"custom: the widgets; a preset sets {', '.join(BUNDLED)} (see the help page).")


def blend_inputs(masks: tuple[str, ...] = BLEND_MASK.choices, tooltip: str | None = None) -> list[io.Input]:
    """What is pasted back (`face.blend.Blend`): the blend mask among `masks`, its growth and feather, and the
    colour match. Optional and last (added after the first release): saved workflows and API prompts still load."""
    mask = io.Combo.Input(BLEND_MASK.name, options=list(masks), default=BLEND_MASK.default,
                          tooltip=tooltip or BLEND_MASK.help, optional=True)
    return [mask, *(option_input(option, optional=True) for option in (GROW, FEATHER, COLOUR_MATCH))]


def apply_preset(values: dict, preset: str) -> dict:
    """The widgets' setting values with those `preset` bundles replaced ("custom": unchanged). Its dtype and
    quantization are Load LatentSync UNet's; VAE batches and offloading are ComfyUI's model management's."""
    return dict(values) if preset == "custom" else {**values, **bundled_settings(preset)}


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
                option_input(FPS, "Frame rate of the images; must match the fps given to Whisper Encode."),
                AudioFeatures.Input("features", tooltip="From Whisper Encode (LatentSync)."),
                LatentSyncModel.Input("model", tooltip="From Load LatentSync UNet."),
                io.Vae.Input("vae", tooltip="sd-vae-ft-mse (vae-ft-mse-840000-ema-pruned) from ComfyUI's Load VAE."),
                *(setting_input(setting) for setting in SETTINGS),
                Speech.Input("speech", optional=True,
                             tooltip="Speech segments from the VAD node, for the silence/skip/fast policies."),
                Faces.Input("faces", optional=True,
                            tooltip="Faces from Detect and Align Faces; without it the largest face is found "
                                    "with the auto detector."),
                preset_input(),
                *blend_inputs(),
                io.Mask.Input("mask", optional=True, tooltip="blend_mask=custom: where the generated face goes (1), "
                                                             "one mask or one per input frame, at the frames' size."),
                Prepared.Input("prepared", optional=True,
                               tooltip="From Prepare Video given these images: its faces and VAE latents are used."),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="The lip-synced frames."),
                io.Image.Output(display_name="crops", tooltip="The generated face crops before paste-back, "
                                                              "e.g. for the upscaler."),
                Faces.Output(display_name="faces", tooltip="Where each output frame's crop goes back."),
                io.Mask.Output(display_name="generated",
                               tooltip="Per output frame, [N, 1, 1]: 1 where the frame was diffused."),
                io.Mask.Output(display_name="blend_mask",
                               tooltip="Where each output frame took the generated face (1) and kept its pixels (0)."),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],  # to refuse VHS meta batches (refuse_meta_batches)
        )

    @classmethod
    @override
    def execute(cls, images, fps: float, features, model, vae, speech=None, faces=None, preset: str = "custom",
                blend_mask: str = BLEND_MASK.default, mask_grow: float = GROW.default,
                mask_feather: float = FEATHER.default, colour_match: bool = COLOUR_MATCH.default, mask=None,
                prepared=None, **values) -> io.NodeOutput:
        settings = SamplerSettings(**apply_preset(values, preset))  # one input per setting (SETTINGS)
        blend = Blend(blend_mask, mask_grow, mask_feather, mask, colour_match).check(len(images), images.shape[1:3])
        refuse_meta_batches(cls.hidden.prompt, cls.hidden.unique_id)
        if abs(features.fps - fps) > 1e-3:
            raise ValueError(f"the audio features were made for {features.fps:g} fps but the images are at "
                             f"{fps:g} fps; give Whisper Encode the video's fps")
        if faces is not None and faces.resolution != model.resolution:
            raise ValueError(f"the faces were aligned at {faces.resolution} px but the model makes "
                             f"{model.resolution} px faces; set Detect Faces' resolution to {model.resolution}")
        if prepared is not None:
            if faces is not None:
                raise ValueError("a prepared video brings its own faces: connect faces to Prepare Video, not here")
            # the frames themselves are checked by the library (`PreparedVideo.check_frames`)
            check_prepared(prepared, prepared.identity["video"], ComfyFaceVAE(vae), vae, model.resolution)
            faces = prepared
        device = load_for_compute(model.patcher)
        result = lipsync(images, features.with_speech(speech), model.patcher.model, ComfyFaceVAE(vae), settings,
                         faces=faces, resolution=model.resolution, device=device, progress=step_reporter(),
                         output=Output(blend=blend, weights=True))
        out = model_management.intermediate_device()
        generated = result.generated.to(torch.float32).view(-1, 1, 1)
        summary = {"frames": len(result.frames), "generated": int(result.generated.sum()), "preset": preset,
                   "settings": vars(settings), "warnings": cls.warned(result.stats["warnings"])}
        return io.NodeOutput(result.frames.to(out), result.crops.to(out), result.faces, generated,
                             result.blend_weights.to(out), ui={"latentsync_sampler": [summary]})


def cast_setting_input(setting: Setting) -> io.Input:
    """As `setting_input`, but a face rests while its speaker is silent unless the user says otherwise."""
    return setting_input(CAST_VAD_POLICY if setting.name == CAST_VAD_POLICY.name else setting)


class LatentSyncSpeakersSampler(LatentSyncNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncSpeakersSampler",
            display_name="LatentSync Sampler (speakers)",
            category="LatentSync",
            description="Lip-syncs every face that has a speaker to that speaker, one face after the other in "
                        "track order (A, B, ...): where crops overlap the later face is on top. A face whose "
                        "speaker is silent rests (vad_policy silence) or stays untouched (skip); overlapping "
                        "speech moves both mouths.",
            inputs=[
                io.Image.Input("images", tooltip="The frames the face tracks were found in."),
                option_input(FPS, "Frame rate of the images; must match the fps given to Whisper Encode."),
                Cast.Input("cast", tooltip="From Assign Faces to Speakers."),
                LatentSyncModel.Input("model", tooltip="From Load LatentSync UNet."),
                io.Vae.Input("vae", tooltip="sd-vae-ft-mse (vae-ft-mse-840000-ema-pruned) from ComfyUI's Load VAE."),
                *(cast_setting_input(setting) for setting in SETTINGS),
                *blend_inputs(STREAMED_BLEND_MASKS, "What is pasted back of each face: reference: the whole crop; "
                                                    "landmarks: lips, jaw, chin."),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="The lip-synced frames."),
                io.Mask.Output(display_name="generated",
                               tooltip="Per output frame, [N, 1, 1]: 1 where any face was diffused."),
                io.Mask.Output(display_name="blend_mask",
                               tooltip="Where each output frame took the generated face (1) and kept its pixels (0)."),
            ],
        )

    @classmethod
    @override
    def execute(cls, images, fps: float, cast, model, vae, blend_mask: str = BLEND_MASK.default,
                mask_grow: float = GROW.default, mask_feather: float = FEATHER.default,
                colour_match: bool = COLOUR_MATCH.default, **values) -> io.NodeOutput:
        settings = SamplerSettings(**values)
        blend = Blend(blend_mask, mask_grow, mask_feather, colour_match=colour_match).check(len(images),
                                                                                          tuple(images.shape[1:3]))
        for speaker in cast.speakers:
            if abs(speaker.features.fps - fps) > 1e-3:
                raise ValueError(f"{speaker.name}'s audio features were made for {speaker.features.fps:g} fps but "
                                 f"the images are at {fps:g} fps; give Whisper Encode the video's fps")
        device = load_for_compute(model.patcher)
        result = lipsync_cast(images, cast, model.patcher.model, ComfyFaceVAE(vae), settings,
                              resolution=model.resolution, device=device, progress=step_reporter(),
                              output=Output(blend=blend, weights=True))
        out = model_management.intermediate_device()
        generated = result.generated.to(torch.float32).view(-1, 1, 1)
        summary = {"frames": len(result.frames), "generated": int(result.generated.sum()),
                   "faces": [f"{s['face']} ← {s['speaker']}" for s in result.stats["faces"]],
                   "warnings": cls.warned([f"face {s['face']}: {warning}" for s in result.stats["faces"]
                                           for warning in s["warnings"]])}
        return io.NodeOutput(result.frames.to(out), generated, result.blend_weights.to(out),
                             ui={"latentsync_sampler": [summary]})
