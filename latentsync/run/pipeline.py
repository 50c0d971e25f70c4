"""From files to a lip-synced clip, in one place: the device and precision, the model set (UNet and the choice
of its config, whisper, VAE, SyncNet), the voice's speech and features, and the sampler run.

The `experiment` command calls it and the streamed run (`stream.py`) starts from it; the ComfyUI nodes call the same library pieces through
ComfyUI's own model management. A `ModelSet` keeps what it loaded for the next run, so the experiment's
configurations share one whisper, one VAE and (while the version and quantization stay) one UNet.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..audio.features import FPS, extract_features
from ..audio.vad import THRESHOLD, detect_speech
from ..audio.whisper import load_whisper_encoder
from ..core.options import Option
from ..core.precision import DTYPE, DTYPES
from ..media.audio import load_audio
from ..media.video import read_frames
from ..sample.sampler import Output, lipsync
from ..sample.settings import SamplerSettings
from ..sample.vae import OFFLOAD, VAE_BATCH, VAE_TILING, load_vae
from ..sample.vram import estimate_vram
from ..score.s3fd import load_s3fd
from ..score.syncnet import load_syncnet
from ..unet.compile import compile_unet
from ..unet.files import choose_config
from ..unet.loading import load_unet

DEVICE = Option("device", None, "Torch device (default: cuda if available, else cpu).")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else CUDA when there is one, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """"fp32", "fp16", "bf16", or "auto": fp16 on CUDA, fp32 elsewhere (CPUs have no fast fp16)."""
    if DTYPE.check(name) == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


@dataclass(frozen=True)
class UNetSpec:
    """Which UNet to run: the checkpoint, its config ("auto", "1.5", "1.6" or a JSON file) and quantization."""

    path: Path
    config: str = "auto"
    quantization: str = "none"


@dataclass
class Clip:
    """One job's inputs: the frames (a still image repeated later by the sampler's length rules) and the voice."""

    frames: torch.Tensor | None  # [N, H, W, 3] uint8 (None: read from the file as needed, `stream.py`)
    fps: float
    still: bool
    waveform: torch.Tensor
    sample_rate: int
    audio_path: Path
    cache: dict = field(default_factory=dict)  # speech and features, per setting that changes them


def read_clip(video: str | Path, audio: str | Path, still_fps: float = FPS.default) -> Clip:
    frames, fps = read_frames(video)
    waveform, sample_rate = load_audio(audio)
    return Clip(frames=frames, fps=still_fps if fps is None else fps, still=fps is None, waveform=waveform,
                sample_rate=sample_rate, audio_path=Path(audio))


class ModelSet:
    """The models of a run on one device, loaded when first asked for and kept. The UNet and the VAE run in
    `dtype` unless a call asks for another (whisper and SyncNet always in float32)."""

    def __init__(self, device: torch.device, dtype: torch.dtype = torch.float32):
        self.device, self.dtype = device, dtype
        self._loaded: dict = {}

    def _get(self, key: tuple, load: Callable):
        if key not in self._loaded:
            self._loaded[key] = load()
        return self._loaded[key]

    def unet(self, spec: UNetSpec, dtype: torch.dtype | None = None, compile_mode: str | None = None):
        """(UNet, face resolution, how its config was chosen); only one UNet is kept at a time.
        `compile_mode` ("default", "max-autotune", "reduce-overhead"; see `unet/compile.py`) compiles its forward."""
        dtype = dtype or self.dtype
        choice = choose_config(spec.path, spec.config)
        key = ("unet", str(spec.path), spec.config, spec.quantization, dtype, compile_mode)
        self.drop_unets(keep=key)

        def load():
            unet = load_unet(spec.path, choice.config, dtype=dtype, device=self.device, quantization=spec.quantization)
            return unet if compile_mode is None else compile_unet(unet, mode=compile_mode)

        return self._get(key, load), choice.resolution, choice.source

    def drop_unets(self, keep: tuple | None = None) -> None:
        for key in [k for k in self._loaded if k[0] == "unet" and k != keep]:
            del self._loaded[key]

    def whisper(self, path: str | Path):
        """The whisper encoder on the device (back from the CPU if `offload` moved it there)."""
        return self._get(("whisper", str(path)), lambda: load_whisper_encoder(path, device=self.device)).to(self.device)

    def offload(self, model: torch.nn.Module) -> None:
        """Move a model the run has finished with (whisper, once the features are made) to the CPU; it comes
        back when asked for again. Frees its device memory for the UNet (the low-VRAM preset)."""
        model.to("cpu")

    def vae(self, path: str | Path, dtype: torch.dtype | None = None, *, batch_size: int = VAE_BATCH.default,
            tiling: bool = VAE_TILING.default, offload: bool = OFFLOAD.default):
        """The VAE (`sample/vae.load_vae`: images per call, tiled, weights resting on the CPU between calls)."""
        dtype = dtype or self.dtype
        return self._get(("vae", str(path), dtype, batch_size, tiling, offload),
                         lambda: load_vae(path, device=self.device, dtype=dtype, batch_size=batch_size, tiling=tiling,
                                          offload=offload))

    def syncnet(self, path: str | Path):
        return self._get(("syncnet", str(path)), lambda: load_syncnet(path, device=self.device))

    def s3fd(self, path: str | Path):
        return self._get(("s3fd", str(path)), lambda: load_s3fd(path, device=self.device))


def speech_and_features(clip: Clip, whisper, settings: SamplerSettings, *, vad_threshold: float = THRESHOLD.default,
                        seamless: bool = False):
    """(features, speech segments or None): the VAD runs only for a policy that uses it."""
    speech = None
    if settings.vad_policy != "off":
        key = ("speech", vad_threshold)
        if key not in clip.cache:
            clip.cache[key] = detect_speech(clip.waveform, clip.sample_rate, threshold=vad_threshold)
        speech = clip.cache[key]
    # id(whisper): the ModelSet keeps the encoder alive, so its id names it for as long as the clip is used.
    key = ("features", id(whisper), vad_threshold if speech is not None else None, seamless)
    if key not in clip.cache:
        clip.cache[key] = extract_features(clip.waveform, clip.sample_rate, whisper, fps=clip.fps, segments=speech,
                                           seamless=seamless)
    return clip.cache[key], speech


@dataclass
class Run:
    result: object  # LipSyncResult
    resolution: int
    config_source: str


@dataclass(frozen=True)
class ModelFiles:
    """The model files of a run: the UNet (with its config and quantization), whisper and the VAE."""

    unet: UNetSpec
    whisper: Path
    vae: Path


def lipsync_files(clip: Clip, models: ModelSet, files: ModelFiles, settings: SamplerSettings, *,
                  dtype: torch.dtype | None = None, vad_threshold: float = THRESHOLD.default, seamless: bool = False,
                  track=None, progress=None, output_dtype: torch.dtype = torch.float32) -> Run:
    """Lip-sync `clip` with the model `files`. In order: the settings; the voice (whisper loads, and the
    features' size is checked against memory before they are made); the UNet and the VAE (a missing or wrong
    file fails here); then the faces and the sampler, the slow part. `track` chooses the face: a `FaceTrack`,
    or a callable making one from the frames; None lets the sampler take the largest (dlib)."""
    settings.validate()
    features, speech = speech_and_features(clip, models.whisper(files.whisper), settings,
                                           vad_threshold=vad_threshold, seamless=seamless)
    network, resolution, source = models.unet(files.unet, dtype)
    face_vae = models.vae(files.vae, dtype)
    if callable(track):
        track = track(clip.frames)
    result = lipsync(clip.frames, features.with_speech(speech), network, face_vae, settings, faces=track,
                     resolution=resolution, device=models.device, progress=progress, output=Output(output_dtype))
    return Run(result=result, resolution=resolution, config_source=source)


def estimate_run_vram(unet: UNetSpec, settings: SamplerSettings, dtype: torch.dtype, *,
                      vae_batch: int = VAE_BATCH.default, vae_tiling: bool = VAE_TILING.default,
                      offload: bool = OFFLOAD.default) -> dict[str, int]:
    """The device memory a run will need, by part (`sample/vram.estimate_vram`), from the UNet's config alone:
    nothing is loaded, so it can be said before the run."""
    choice = choose_config(unet.path, unet.config)
    return estimate_vram(choice.config, choice.resolution, dtype=dtype, quantization=unet.quantization,
                         window=settings.window, guidance=settings.guidance, vae_batch=vae_batch,
                         vae_tiling=vae_tiling, offload=offload)
