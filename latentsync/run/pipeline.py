"""From files to a lip-synced clip, in one place: the device and precision, the model set (UNet and the choice
of its config, whisper, VAE, SyncNet), the voice's speech and features, and the sampler run.

The `lipsync` and `experiment` commands call it; the ComfyUI nodes call the same library pieces through
ComfyUI's own model management. A `ModelSet` keeps what it loaded for the next run, so the experiment's
configurations share one whisper, one VAE and (while the version and quantization stay) one UNet.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..sample.settings import SamplerSettings

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else CUDA when there is one, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """"fp32", "fp16", "bf16", or "auto": fp16 on CUDA, fp32 elsewhere (CPUs have no fast fp16)."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype must be auto or one of {', '.join(DTYPES)}, got {name!r}")
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

    frames: torch.Tensor | None  # [N, H, W, 3] uint8 (None: read from the file as needed, `lipsync_video_file`)
    fps: float
    still: bool
    waveform: torch.Tensor
    sample_rate: int
    audio_path: Path
    cache: dict = field(default_factory=dict)  # speech and features, per setting that changes them


def read_clip(video: str | Path, audio: str | Path, still_fps: float = 25.0) -> Clip:
    from ..media.audio import load_audio
    from ..media.video import read_frames

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
        from ..unet.compile import compile_unet
        from ..unet.files import choose_config
        from ..unet.loading import load_unet

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
        from ..audio.whisper import load_whisper_encoder

        return self._get(("whisper", str(path)), lambda: load_whisper_encoder(path, device=self.device)).to(self.device)

    def offload(self, model: torch.nn.Module) -> None:
        """Move a model the run has finished with (whisper, once the features are made) to the CPU; it comes
        back when asked for again. Frees its device memory for the UNet (the low-VRAM preset)."""
        model.to("cpu")

    def vae(self, path: str | Path, dtype: torch.dtype | None = None, *, batch_size: int = 8, tiling: bool = False,
            offload: bool = False):
        """The VAE (`sample/vae.load_vae`: images per call, tiled, weights resting on the CPU between calls)."""
        from ..sample.vae import load_vae

        dtype = dtype or self.dtype
        return self._get(("vae", str(path), dtype, batch_size, tiling, offload),
                         lambda: load_vae(path, device=self.device, dtype=dtype, batch_size=batch_size, tiling=tiling,
                                          offload=offload))

    def syncnet(self, path: str | Path):
        from ..score.syncnet import load_syncnet

        return self._get(("syncnet", str(path)), lambda: load_syncnet(path, device=self.device))

    def s3fd(self, path: str | Path):
        from ..score.s3fd import load_s3fd

        return self._get(("s3fd", str(path)), lambda: load_s3fd(path, device=self.device))


def speech_and_features(clip: Clip, whisper, settings: SamplerSettings, *, vad_threshold: float = 0.5,
                        seamless: bool = False):
    """(features, speech segments or None): the VAD runs only for a policy that uses it."""
    from ..audio.features import extract_features
    from ..audio.vad import detect_speech

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


def lipsync_files(clip: Clip, models: ModelSet, unet: UNetSpec, whisper: str | Path, vae: str | Path,
                  settings: SamplerSettings, *, dtype: torch.dtype | None = None, vad_threshold: float = 0.5,
                  seamless: bool = False, track=None, progress=None,
                  output_dtype: torch.dtype = torch.float32, compile_mode: str | None = None) -> Run:
    """Lip-sync `clip` with the model files named. In order: the settings; the voice (whisper loads, and the
    features' size is checked against memory before they are made); the UNet and the VAE (a missing or wrong
    file fails here); then the faces and the sampler, the slow part. `track` chooses the face: a `FaceTrack`,
    or a callable making one from the frames; None lets the sampler take the largest (dlib). `compile_mode`
    compiles the UNet (`unet/compile.py`)."""
    from ..sample.sampler import lipsync

    settings.validate()
    features, speech = speech_and_features(clip, models.whisper(whisper), settings, vad_threshold=vad_threshold,
                                           seamless=seamless)
    network, resolution, source = models.unet(unet, dtype, compile_mode)
    face_vae = models.vae(vae, dtype)
    if callable(track):
        track = track(clip.frames)
    result = lipsync(clip.frames, features, network, face_vae, settings, speech=speech, resolution=resolution,
                     track=track, device=models.device, progress=progress, output_dtype=output_dtype)
    return Run(result=result, resolution=resolution, config_source=source)


def _face_track(frames, partial, detector, selection: dict, progress=None):
    """The first pass: every frame decoded once and its face tracked; kept in the partial output, so a resumed
    run does not detect again. Returns the track (the frames' timestamps are set on `frames`)."""
    from ..face.detect import FaceTracker, track_from_faces
    from ..face.types import FaceTrack

    kept = partial.load_arrays("faces")
    if kept is not None:
        frames.restore(kept["pts"], str(kept["truncated"]) or None)
        return FaceTrack(boxes=kept["boxes"], points3=kept["points3"], scores=kept["scores"], valid=kept["valid"],
                         frame_hw=frames.frame_hw, detector=str(kept["detector"]))
    tracker = FaceTracker(detector, **selection)
    found = []
    for frame in frames.scan():
        found.append(tracker.step(frame))
        if progress is not None:
            progress(len(found))
    track = track_from_faces(found, frames.frame_hw, getattr(detector, "name", type(detector).__name__))
    partial.save_arrays("faces", pts=frames.pts, truncated=np.array(frames.truncated or ""), boxes=track.boxes,
                        points3=track.points3, scores=track.scores, valid=track.valid,
                        detector=np.array(track.detector))
    return track


def lipsync_stream(frames, features, speech, unet: torch.nn.Module, resolution: int, vae, settings: SamplerSettings,
                   *, partial, out: str | Path, audio: str | Path | None, detector, selection: dict | None = None,
                   device: torch.device, dtype: torch.dtype = torch.float32, crf: int = 18, progress=None,
                   face_progress=None, on_window=None, remote=None) -> dict:
    """The streamed run, from loaded models and features: the first pass over `frames` (a `VideoFrames`) finds
    the face in every frame (kept in `partial`, a `PartialOutput`), then the windows run, each written as a
    segment in `partial` as it finishes (those already there are skipped), and the segments are joined into
    `out` with the soundtrack of `audio`; `partial` is removed once `out` is whole.
    `progress(done, total)` counts UNet steps, `face_progress(frames)` the first pass, `on_window(done, total,
    crops)` the windows (with the last one's generated crops; None from a cluster); each may raise to stop: from
    `on_window`, with that window kept. `remote(plan, faces, retime, pts, todo, keep, window_done)` makes the
    segments `todo` elsewhere (`lipsync_video_file`'s Ray cluster) instead of here. Returns the summary."""
    from ..face.window_crops import faces_from_track
    from ..media.frame_reader import RetimedFrames
    from ..media.segments import join_segments, write_segment
    from ..sample.sampler import WindowRunner, plan_lipsync
    from ..sample.stream import plan_segments, run_segments

    fps = float(features.fps)
    clock = time.perf_counter()
    track = _face_track(frames, partial, detector, dict(selection or {}), face_progress)
    seconds = {"faces": time.perf_counter() - clock}
    warnings = [note for note in (frames.orientation_warning, frames.truncated) if note]
    input_frames = len(frames)
    retime = frames.constant_rate_index(fps)
    path = frames.path
    if retime is not None:  # a variable frame rate: frames shown at the times of a constant fps clock
        frames, track = RetimedFrames(frames, retime), track.subset(retime)
    faces = faces_from_track(track, frames.frame_hw, resolution)
    plan = plan_lipsync(len(frames), features, faces.valid, settings, speech)
    warnings += plan.warnings  # a run that will change nothing says why
    if retime is not None:  # the output's own count: it follows the audio, not the retimed clock
        warnings.append(f"{path}: the frame rate varies, so its {input_frames} frames were placed on a constant "
                        f"{fps:g} fps clock by their timestamps; the output has {plan.frames} frames")
    width, height = frames.width // 2 * 2, frames.height // 2 * 2  # yuv420p halves colour: sizes must be even
    if (width, height) != (frames.width, frames.height):
        warnings.append(f"{frames.width}x{frames.height} frames are written as {width}x{height}: H.264 needs even "
                        "sizes")
    runner = WindowRunner(unet, vae, settings, plan, features, resolution, device, dtype, torch.uint8, progress)
    segments = plan_segments(plan, settings.window)
    done = partial.finished(segments)

    def write(segment, images) -> None:
        write_segment(partial.segment_path(segment.name), images, fps, crf)

    windows_done = sum(1 for segment in segments if segment.window is not None and segment.name in done)

    def window_done(segment, crops) -> None:
        nonlocal windows_done
        windows_done += 1
        if on_window is not None:
            on_window(windows_done, len(plan.windows), crops)

    clock = time.perf_counter()
    if remote is not None:
        todo = [segment for segment in segments if segment.name not in done]
        source = frames.frames if retime is not None else frames
        made = remote(plan, faces, retime, source.pts, todo, partial.keep_segment,
                      lambda segment: window_done(segment, None))
    else:
        with frames:
            made = run_segments(frames, faces, runner, segments, write, done, window_done)
    seconds["windows"] = time.perf_counter() - clock
    clock = time.perf_counter()
    join_segments([partial.segment_path(segment.name) for segment in segments], out, fps, audio)
    seconds["join"] = time.perf_counter() - clock
    partial.remove()
    stats = runner.stats()
    return {"frames": plan.frames, "input_frames": input_frames, "fps": fps, "still_image": frames.still,
            "width": width, "height": height,
            "generated_frames": stats["generated_frames"], "resolution": resolution, "segments": len(segments),
            "resumed_segments": len(done), "made_segments": made,
            "unet_passes": {"full": stats["full_passes"], "shallow": stats["shallow_passes"]},
            "stage_seconds": {k: round(v, 3) for k, v in {**stats["seconds"], **seconds}.items()},
            "warnings": warnings}


def estimate_run_vram(unet: UNetSpec, settings: SamplerSettings, dtype: torch.dtype, *, vae_batch: int = 8,
                      vae_tiling: bool = False, offload: bool = False) -> dict[str, int]:
    """The device memory a run will need, by part (`sample/presets.estimate_vram`), from the UNet's config alone:
    nothing is loaded, so it can be said before the run."""
    from ..sample.presets import estimate_vram
    from ..unet.files import choose_config

    choice = choose_config(unet.path, unet.config)
    return estimate_vram(choice.config, choice.resolution, dtype=dtype, quantization=unet.quantization,
                         window=settings.window, guidance=settings.guidance, vae_batch=vae_batch,
                         vae_tiling=vae_tiling, offload=offload)


def lipsync_video_file(video: str | Path, audio: str | Path, out: str | Path, models: ModelSet, unet: UNetSpec,
                       whisper: str | Path, vae: str | Path, settings: SamplerSettings, *, detector,
                       selection: dict | None = None, dtype: torch.dtype | None = None, vad_threshold: float = 0.5,
                       seamless: bool = False, still_fps: float = 25.0, crf: int = 18, resume: bool = False,
                       progress=None, face_progress=None, on_window=None, cluster=None,
                       compile_mode: str | None = None, vae_batch: int = 8, vae_tiling: bool = False,
                       offload: bool = False, on_ready=None) -> dict:
    """Lip-sync the file `video` (or a still image) to `audio` into the mp4 `out`, streamed (`lipsync_stream`):
    memory does not grow with the clip's length. Finished segments wait in `OUT.partial/` (`media/partial.py`);
    `resume=True` continues a run that stopped, with the same inputs and settings (others are refused).
    `detector` finds the face (`selection`: FaceTracker's select/index/position). With `cluster` (a
    `cluster.RayCluster`) the windows run on its workers, which load the UNet and the VAE themselves. Returns the
    summary (frames, what was generated and resumed, seconds per stage, warnings). `compile_mode` compiles the
    UNet (`unet/compile.py`; not on a cluster's workers, which load their own). `vae_batch`, `vae_tiling` and
    `offload` are the VAE's and whisper's memory options (`sample/presets.py`; not on a cluster either).
    `on_ready()` is called once the inputs are checked and the models loaded, before the frames are read."""
    from ..media.audio import load_audio
    from ..media.frame_reader import VideoFrames
    from ..media.partial import PartialOutput, file_identity
    from ..media.video import check_crf
    from ..sample.sampler import _max_window

    settings.validate()
    check_crf(crf)
    selection = dict(selection or {})
    started = time.perf_counter()
    frames = VideoFrames(video)
    # The inputs first (a wrong file or flag fails in seconds), then the models, then the partial output.
    waveform, sample_rate = load_audio(audio)
    fps = still_fps if frames.fps is None else frames.fps
    clip = Clip(frames=None, fps=fps, still=frames.still, waveform=waveform, sample_rate=sample_rate,
                audio_path=Path(audio))
    encoder = models.whisper(whisper)
    features, speech = speech_and_features(clip, encoder, settings, vad_threshold=vad_threshold, seamless=seamless)
    if offload:  # whisper's part is done: its device memory goes to the UNet
        models.offload(encoder)
    del waveform, clip, encoder
    network = face_vae = None
    dtype_name = str(dtype or models.dtype).removeprefix("torch.")
    if cluster is None:
        network, resolution, config_source = models.unet(unet, dtype, compile_mode)
        settings.validate(_max_window(network))
        face_vae = models.vae(vae, dtype, batch_size=vae_batch, tiling=vae_tiling, offload=offload)
    else:  # the workers load the models; here only the config is read
        from types import SimpleNamespace

        from ..unet.files import choose_config

        choice = choose_config(unet.path, unet.config)
        resolution, config_source = choice.resolution, choice.source
        settings.validate(_max_window(SimpleNamespace(config=choice.config)))
    if on_ready is not None:
        on_ready()
    job = {"format": 1, "video": file_identity(video), "audio": file_identity(audio),
           "unet": {**file_identity(unet.path), "config": unet.config, "quantization": unet.quantization},
           "whisper": file_identity(whisper), "vae": file_identity(vae), "settings": vars(settings),
           "vad_threshold": vad_threshold, "seamless": seamless, "crf": crf,
           "still_fps": still_fps if frames.still else None,
           "detector": getattr(detector, "name", type(detector).__name__), "selection": selection,
           "device": models.device.type, "dtype": dtype_name}
    if (vae_batch, vae_tiling) != (8, False):  # both change the VAE's rounding; the defaults keep older records valid
        job["vae_calls"] = {"batch": vae_batch, "tiling": vae_tiling}
    partial = PartialOutput(out, job, resume)

    def on_cluster(plan, faces, retime, pts, todo, keep, window_done) -> int:
        work = dict(video=str(video), retime=retime, unet=unet, vae=str(vae), settings=settings, plan=plan,
                    features=features, faces=faces, resolution=resolution, device=str(models.device),
                    dtype=dtype_name, fps=float(features.fps), crf=crf, pts=pts)
        return cluster.run(work, todo, keep, window_done)

    setup = time.perf_counter() - started
    summary = lipsync_stream(frames, features, speech, network, resolution, face_vae, settings, partial=partial,
                             out=out, audio=audio, detector=detector, selection=selection, device=models.device,
                             dtype=dtype or models.dtype, crf=crf, progress=progress, face_progress=face_progress,
                             on_window=on_window, remote=None if cluster is None else on_cluster)
    summary["stage_seconds"]["setup"] = round(setup, 3)
    return {**summary, "config": config_source}
