"""LatentSync lip-sync: frames + audio features -> frames whose mouths follow the audio.

`lipsync()` runs the reference pipeline (bytedance/LatentSync `LipsyncPipeline`, see DOSSIER.md) window by
window: align the window's faces, VAE-encode the masked and the reference crops, denoise from one noise tensor
shared by every frame with classifier-free guidance on all-zero audio, decode, paste the generated mouth over
the crop, restore the crop into the frame. Only the window's tensors go to the device; frames stay on the
CPU, so memory grows with the clip only by the input and output frames.

Beyond the reference: frames without a face pass through; other frame rates (the features carry theirs);
length rules for audio longer or shorter than the video; DPM-Solver++ and Euler; DeepCache; and VAD policies
that quiet, skip or cheapen the non-speech stretches (`frame_plan.py`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol

import numpy as np
import torch
from torch import Tensor

from ..audio.features import AudioFeatures
from ..unet.config import max_window
from ..unet.deepcache import DeepCache
from .denoise import LATENT_SCALE, FaceVAE, decode_faces, denoise, encode_conditioning, from_clip
from ..face.align import AlignedFaces
from ..face.detect import FaceDetector, FaceTrack
from ..face.blend import Blend
from ..face.paste import blend_mouth, paste_back
from ..face.seam import match_colour
from ..core.memory import check_fits
from .schedulers import SCHEDULERS, make_scheduler
from .settings import AUDIO_LONGER, AUDIO_SHORTER, MAX_GUIDANCE, VAD_POLICIES, SamplerSettings
from ..audio.vad import SpeechSegments
from ..face.window_crops import ClipFaces, clip_faces
from .frame_plan import FramePlan, Window, audio_frame_count, plan_frames, plan_length
from .progress import StepClock, StepInfo, StepProgress

__all__ = ["SCHEDULERS", "VAD_POLICIES", "AUDIO_LONGER", "AUDIO_SHORTER", "LATENT_SCALE", "SamplerSettings",
           "FaceVAE", "LipSyncResult", "Output", "WindowRunner", "lipsync", "plan_lipsync", "window_seed",
           "MAX_GUIDANCE"]

Progress = Callable[[int, int], None]  # or a `progress.StepProgress`, which also sees every step's latents


class PreparedFaces(Protocol):
    """A prepared video (`prepared.PreparedVideo`) as the sampler uses it: the input frames' alignment, and the
    VAE moments of any of them (`denoise.face_moments` of those frames, made before)."""

    faces: ClipFaces

    def window_moments(self, indices: np.ndarray) -> Tensor:
        ...

    def check_frames(self, frames: Tensor) -> None:
        """Raise unless it was made from these frames."""
        ...


@dataclass
class LipSyncResult:
    frames: Tensor  # [M, H, W, 3] float32 0-1 on the CPU (uint8 if asked for): the lip-synced output frames
    crops: Tensor  # [M, R, R, 3] float32 0-1: generated face crops (the aligned input crop where none was made)
    faces: AlignedFaces  # alignment of each output frame (what paste_back needs); valid=False where no face
    generated: Tensor  # [M] bool: the frame was diffused
    source_index: np.ndarray  # [M]: the input frame each output frame was made from
    fps: float = 25.0  # the features' frame rate, which is the output's
    stats: dict = field(default_factory=dict)  # UNet passes, windows, seconds per stage
    # [M, H, W] float32 0-1 (with `Output.weights`): where each output frame took the generated face (the paste's
    # blend weight times the skip policy's fade); 0 where it kept the input frame's pixels
    blend_weights: Tensor | None = None


@dataclass(frozen=True)
class Output:
    """What `lipsync` returns: frames of `dtype` (float32 0-1, or uint8: a quarter of the memory, pasted faces
    truncated to whole grey levels as in the reference) with the faces pasted back through `blend` (`Blend`: the
    reference's whole crop by default, the landmark mouth, or a custom mask with one row or one per input
    frame; and whether the regenerated colours are matched to the original first). With `weights`, each output
    frame's blend weight is kept in the result's `blend_weights`."""

    dtype: torch.dtype = torch.float32
    blend: Blend = Blend()
    weights: bool = False


def _as_frames(frames: Tensor | np.ndarray) -> Tensor:
    frames = torch.as_tensor(frames)
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4) or len(frames) == 0:
        raise ValueError(f"frames must be [N, H, W, 3] (ComfyUI IMAGE), got {tuple(frames.shape)}")
    if frames.dtype != torch.uint8 and not frames.is_floating_point():
        raise ValueError(f"frames must be float 0-1 or uint8, got {frames.dtype}")
    return frames[..., :3].cpu()


def _convert(frames: Tensor, dtype: torch.dtype) -> Tensor:
    if frames.dtype == dtype:
        return frames
    if dtype == torch.uint8:
        return (frames.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    if frames.dtype == torch.uint8:
        return frames.to(dtype) / 255.0
    return frames.to(dtype)


def _speech_mask(features: AudioFeatures, speech: SpeechSegments | None, audio_frames: int,
                 policy: str) -> np.ndarray | None:
    if policy == "off":
        return None
    speech = speech if speech is not None else features.speech
    return None if speech is None else speech.speech_mask(features.fps, audio_frames)  # the plan says it lacks


def plan_lipsync(input_frames: int, features: AudioFeatures, face_valid: np.ndarray,
                 settings: SamplerSettings, speech: SpeechSegments | None = None) -> FramePlan:
    """The frame plan `lipsync` will follow (lengths, windows, steps), without running anything."""
    audio_frames = audio_frame_count(features.duration, features.fps, features.frames)
    talk = _speech_mask(features, speech, audio_frames, settings.vad_policy)
    return plan_frames(input_frames, audio_frames, face_valid, settings, fps=features.fps, speech_mask=talk)


def _check_output_memory(input_frames: int, features: AudioFeatures, settings: SamplerSettings,
                         frame_hw: tuple[int, int], resolution: int, output_dtype: torch.dtype,
                         weights: bool = False) -> None:
    """Refuse an output that cannot fit in RAM before any work: the frames, their uint8 face crops and the
    float32 crops returned beside them, one of each per output frame (as many as the audio asks for), and the
    float32 blend weights if they are kept."""
    audio_frames = audio_frame_count(features.duration, features.fps, features.frames)
    count = len(plan_length(input_frames, audio_frames, settings.audio_longer, settings.audio_shorter))
    height, width = (int(v) for v in frame_hw)
    per_frame = height * width * 3 * output_dtype.itemsize + resolution * resolution * 3 * (1 + 4)
    per_frame += height * width * 4 if weights else 0
    check_fits(count * per_frame, f"lip-syncing {count} output frames of {width}x{height}",
               "the number of output frames (it follows the audio: use shorter audio) or the frames' size", "cpu")


def _model_device(module: torch.nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    parameter = next(iter(module.parameters()), None) if hasattr(module, "parameters") else None
    return parameter.device if parameter is not None else torch.device("cpu")


def window_seed(seed: int, start: int) -> int:
    """The VAE's posterior-sampling seed of the window that starts at output frame `start`: a window redone alone
    (a resumed run) draws what it drew in the whole run, whatever ran before it."""
    return (int(seed) * 1_000_003 + int(start)) % (1 << 63)


class WindowRunner:
    """One window at a time, from its input frames to its output frames, with the stats of the run.

    Nothing carries from one window to the next: the noise is one tensor for the clip (drawn on the CPU, so a
    seed means the same on any device), the VAE is reseeded per window (`window_seed`) and DeepCache starts each
    window afresh. Any window can be redone alone with the same result, in any order.

    `blend` (set after construction; default the reference's) is what paste-back does: the blend mask, checked
    against the input frames (a custom mask has one row, or one per input frame), and the colour match.
    `weights` (`[M, H, W]` float32 over the plan's output frames, or None) receives each window's frames' blend
    weights, times the plan's output weight.
    `progress` is `progress(done, total)` after every UNet step; a `StepProgress` also gets `step(StepInfo)`:
    the window, the step, the time left and the window's predicted clean latents (for live previews).
    `latents` (a `PreparedFaces`, or None) gives the windows' VAE moments made before: no face is encoded here.
    """

    blend: Blend = Blend()
    weights: Tensor | None = None
    latents: "PreparedFaces | None" = None

    def __init__(self, unet: torch.nn.Module, vae: FaceVAE, settings: SamplerSettings, plan: FramePlan,
                 features: AudioFeatures, resolution: int, device: torch.device, dtype: torch.dtype,
                 output_dtype: torch.dtype, progress: Progress | None = None):
        self.unet, self.vae, self.settings, self.plan, self.features = unet, vae, settings, plan, features
        self.device, self.dtype, self.output_dtype, self.progress = device, dtype, output_dtype, progress
        latent_size = resolution // 8
        noise = torch.randn((1, 4, 1, latent_size, latent_size),
                            generator=torch.Generator().manual_seed(settings.seed))
        self.noise = noise.to(device, dtype)
        self.cache = DeepCache(settings.deepcache_interval)
        self.steps_done = 0  # UNet steps of the plan done (a resumed run starts past the finished windows)
        self.clock = StepClock()
        self.seconds = {"faces": 0.0, "encode": 0.0, "unet": 0.0, "decode": 0.0, "paste": 0.0}

    def timed(self, stage: str, start: float) -> float:
        """Add the time since `start` to `stage` (after the device finished) and return the time now."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.seconds[stage] += now - start
        return now

    def _on_step(self, window: Window, index: int, x0: Tensor) -> None:
        self.steps_done += 1
        total = self.plan.total_steps
        if self.progress is not None:
            self.progress(self.steps_done, total)
        if isinstance(self.progress, StepProgress):
            windows = self.plan.windows
            number = next((i for i, w in enumerate(windows) if w is window or w.start == window.start), -1)
            self.progress.step(StepInfo(number, len(windows), index + 1, window.steps, self.steps_done, total,
                                        from_clip(x0), self.clock.seconds_left(self.steps_done, total)))

    def remote_step(self, window: int, step: int, steps: int) -> None:
        """A step of window number `window` made elsewhere (a cluster's worker), told as `_on_step` tells its own
        (without the latents: the worker keeps them)."""
        self.steps_done = min(self.steps_done + 1, self.plan.total_steps)
        done, total = self.steps_done, self.plan.total_steps
        if self.progress is not None:
            self.progress(done, total)
        if isinstance(self.progress, StepProgress):
            self.progress.step(StepInfo(window, len(self.plan.windows), step, steps, done, total, None,
                                        self.clock.seconds_left(done, total)))

    @torch.no_grad()
    def run(self, window: Window, faces: AlignedFaces, frames: Tensor) -> tuple[Tensor, Tensor]:
        """(output frames, generated crops `[n, R, R, 3]` float32 0-1) of `window`, from its aligned `faces` and
        its input `frames` (`[n, H, W, 3]` in the output dtype, one per output frame of the window)."""
        plan, settings, indices = self.plan, self.settings, window.indices
        clock = time.perf_counter()
        if hasattr(self.vae, "reseed"):
            self.vae.reseed(window_seed(settings.seed, window.start))
        moments = None if self.latents is None else self.latents.window_moments(plan.source_index[indices])
        conditioning = encode_conditioning(self.vae, faces, self.device, self.dtype, moments)
        clock = self.timed("encode", clock)
        audio = self.features.mixed_chunks(indices, plan.chunk_weight[indices]).to(self.device, self.dtype)
        latents = denoise(self.unet, make_scheduler(settings.scheduler, window.steps),
                          self.noise.expand(-1, -1, len(window), -1, -1), conditioning, audio, settings.guidance,
                          self.cache, lambda index, x0: self._on_step(window, index, x0))
        clock = self.timed("unet", clock)
        decoded = decode_faces(self.vae, latents)
        if self.blend.colour_match:
            decoded = match_colour(decoded, faces.pixel_values(), faces.mask)
        faces_out = blend_mouth(decoded, faces)
        clock = self.timed("decode", clock)
        blend_weights = None if self.weights is None else torch.zeros(frames.shape[:3])
        pasted = paste_back(frames.clone(), faces, faces_out, inplace=True, blend=self.window_blend(indices),
                            weights_out=blend_weights)
        weight = torch.from_numpy(plan.output_weight[indices])[:, None, None, None]
        if blend_weights is not None:
            self.weights[indices] = blend_weights * weight[:, 0].to(blend_weights.dtype)
        if (weight < 1).any():  # skip's fade from the generated frames into the original ones
            # as a step from the input towards the paste: pixels the paste left alone stay exactly the input's
            faded = frames.float() + weight * (pasted.float() - frames.float())
            pasted = (faded + 0.5).to(torch.uint8) if self.output_dtype == torch.uint8 else faded
        crops = (faces_out / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
        self.timed("paste", clock)
        return pasted, crops

    def window_blend(self, indices: np.ndarray) -> Blend:
        """The blend of the output frames `indices`: a custom mask's rows of the input frames they come from."""
        custom = self.blend.custom
        if self.blend.mask != "custom" or custom is None or len(custom) == 1:
            return self.blend
        return replace(self.blend, custom=custom[torch.from_numpy(np.asarray(self.plan.source_index[indices]))])

    def stats(self) -> dict:
        plan = self.plan
        return {"seconds": self.seconds, "windows": len(plan.windows), "generated_frames": int(plan.generated.sum()),
                "unet_steps": plan.total_steps, "full_passes": self.cache.full_passes,
                "shallow_passes": self.cache.shallow_passes, "audio_frames": plan.audio_frames,
                "warnings": list(plan.warnings)}


def prepared_faces(prepared: PreparedFaces, frames: Tensor, resolution: int | None) -> ClipFaces:
    """The alignment of a prepared video, refused when it was made for other frames or another crop size."""
    faces = prepared.faces
    if len(faces) != len(frames) or tuple(faces.frame_hw) != tuple(frames.shape[1:3]):
        raise ValueError(f"the prepared video has {len(faces)} frames of {tuple(faces.frame_hw)}, but these are "
                         f"{len(frames)} of {tuple(frames.shape[1:3])}: prepare the same frames")
    prepared.check_frames(frames)
    if resolution is not None and resolution != faces.resolution:
        raise ValueError(f"the prepared video has {faces.resolution} px faces but the model makes {resolution} px "
                         f"faces: prepare it at {resolution}")
    return faces


@torch.no_grad()
def lipsync(frames: Tensor | np.ndarray, features: AudioFeatures, unet: torch.nn.Module, vae: FaceVAE,
            settings: SamplerSettings = SamplerSettings(), *,
            faces: AlignedFaces | FaceTrack | str | FaceDetector | None = None, resolution: int | None = None,
            device: torch.device | str | None = None, progress: Progress | None = None,
            output: Output = Output()) -> LipSyncResult:
    """Lip-sync `frames` (`[N, H, W, 3]`, float 0-1 or uint8) to `features` (taken at the video's frame times).

    `features.speech` gives the VAD policies their segments (`features.with_speech(segments)` attaches the VAD
    node's). Faces come from `faces`: aligned crops of the input frames, a `FaceTrack`, a detector (a name or a
    `FaceDetector`; default dlib) run here, or a prepared video of these frames (`PreparedFaces`: its alignment and
    VAE moments are used, and nothing is encoded here); `resolution` is the crop size (default: the faces', else
    256; 512 for LatentSync 1.6). `device` defaults to the UNet's; the latents are float32 (the models cast to their
    own). `output` (`Output`) is the frames' dtype and what is pasted back. `progress(done, total)` is called after
    every UNet step (total = all steps planned) and may raise to cancel: the exception propagates and nothing is
    returned. (`sample/stream.py` runs the same windows on frames decoded from a file as they are needed.)"""
    settings.validate(max_window(getattr(unet, "config", None)))
    output_dtype = output.dtype
    if output_dtype not in (torch.float32, torch.uint8):
        raise ValueError(f"Output.dtype must be torch.float32 or torch.uint8, got {output_dtype}")
    frames = _as_frames(frames)
    _check_output_memory(len(frames), features, settings, frames.shape[1:3],
                         resolution or getattr(faces, "resolution", None) or 256, output_dtype, output.weights)
    blend = output.blend.check(len(frames), tuple(frames.shape[1:3]))
    clock = time.perf_counter()
    prepared = faces if hasattr(faces, "window_moments") else None
    source = clip_faces(frames, faces, resolution) if prepared is None else prepared_faces(prepared, frames, resolution)
    plan = plan_lipsync(len(frames), features, source.valid, settings)
    runner = WindowRunner(unet, vae, settings, plan, features, source.resolution, _model_device(unet, device),
                          torch.float32, output_dtype, progress)
    runner.blend, runner.latents = blend, prepared
    if output.weights:
        runner.weights = torch.zeros((plan.frames, *frames.shape[1:3]), dtype=torch.float32)

    out = torch.empty((plan.frames, *frames.shape[1:]), dtype=output_dtype)
    for start in range(0, plan.frames, 256):  # converted a slice at a time: no full-size temporary
        out[start:start + 256] = _convert(frames[plan.source_index[start:start + 256]], output_dtype)
    out_faces = source.select(frames, plan.source_index)
    crops = out_faces.images()
    runner.timed("faces", clock)
    for window in plan.windows:
        indices = window.indices
        out[indices], crops[indices] = runner.run(window, out_faces.subset(indices), out[indices])
    return LipSyncResult(frames=out, crops=crops, faces=out_faces, generated=torch.from_numpy(plan.generated.copy()),
                         source_index=plan.source_index, fps=float(features.fps), stats=runner.stats(),
                         blend_weights=runner.weights)
