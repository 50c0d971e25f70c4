"""The streamed run that the `lipsync` command, the video-file node and the Ray cluster share.

`lipsync_stream` works from loaded models and features: the first pass over the frames finds the face in every
frame, then the windows run, each written as a segment of the partial output (`media/partial.py`) as it
finishes, and the segments are joined with the soundtrack. `lipsync_video_file` runs a `Job` (files in, mp4
out): it checks the inputs, makes the features, loads the models (or leaves them to a cluster's workers) and
streams. Memory does not grow with the clip's length.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..audio.features import AudioFeatures
from ..audio.vad import SpeechSegments
from ..face.blend import Blend
from ..face.detect import track_from_faces
from ..face.types import FaceTrack
from ..face.window_crops import faces_from_track
from ..media.audio import load_audio
from ..media.frame_reader import RetimedFrames, VideoFrames
from ..media.partial import PartialOutput
from ..media.segments import join_segments, write_segment
from ..media.video import CRF, check_crf
from ..sample.denoise import FaceVAE
from ..sample.sampler import WindowRunner, plan_lipsync
from ..sample.settings import SamplerSettings
from ..sample.stream import plan_segments, run_segments
from ..unet.config import max_window
from ..unet.files import choose_config
from .cluster import RayCluster, WindowJob
from .job import FaceChoice, Job, streamed_blend
from .pipeline import Clip, ModelSet, resolve_device, resolve_dtype, speech_and_features


@dataclass(frozen=True)
class Hooks:
    """What a streamed run tells as it goes; each may raise to stop it. `progress(done, total)` counts UNet
    steps, `face_progress(frames)` the first pass, `on_window(done, total, crops)` the windows (with the last
    one's generated crops; None from a cluster; raising there keeps that window), `on_ready()` is called once
    the inputs are checked and the models loaded, before the frames are read (`lipsync_video_file` only)."""

    progress: Callable[[int, int], None] | None = None
    face_progress: Callable[[int], None] | None = None
    on_window: Callable[[int, int, torch.Tensor | None], None] | None = None
    on_ready: Callable[[], None] | None = None


@dataclass(frozen=True)
class Voice:
    """The voice of a streamed run: its features (at the video's fps), its speech (None: no VAD policy needs
    it), and the audio file whose track goes into the output (None: no sound)."""

    features: AudioFeatures
    speech: SpeechSegments | None
    soundtrack: str | Path | None


@dataclass(frozen=True)
class LoadedModels:
    """The UNet and the VAE a streamed run samples with, the face crops' size, the device and the latents'
    dtype. The models are None when a cluster's workers load their own."""

    unet: torch.nn.Module | None
    vae: FaceVAE | None
    resolution: int
    device: torch.device
    dtype: torch.dtype = torch.float32


@dataclass(frozen=True)
class RemoteSegments:
    """The segments `todo` of a streamed run, to be made elsewhere (a Ray cluster): the plan, the faces, the
    constant-rate view of a variable-rate video (`retime`, or None) and the input frames' timestamps (`pts`).
    `keep(name, data)` stores an encoded segment as it arrives, `window_done(segment)` counts a window."""

    plan: object  # FramePlan
    faces: object  # ClipFaces
    retime: np.ndarray | None
    pts: np.ndarray
    todo: list
    keep: Callable[[str, bytes], Path]
    window_done: Callable[[object], None]


def _face_track(frames: VideoFrames, partial: PartialOutput, face: FaceChoice, progress=None) -> FaceTrack:
    """The first pass: every frame decoded once and its face tracked; kept in the partial output, so a resumed
    run does not detect again. Returns the track (the frames' timestamps are set on `frames`)."""
    kept = partial.load_arrays("faces")
    if kept is not None:
        frames.restore(kept["pts"], str(kept["truncated"]) or None)
        return FaceTrack(boxes=kept["boxes"], points3=kept["points3"], scores=kept["scores"], valid=kept["valid"],
                         frame_hw=frames.frame_hw, detector=str(kept["detector"]))
    tracker = face.tracker()
    found = []
    for frame in frames.scan():
        found.append(tracker.step(frame))
        if progress is not None:
            progress(len(found))
    track = track_from_faces(found, frames.frame_hw, face.identity()["detector"])
    partial.save_arrays("faces", pts=frames.pts, truncated=np.array(frames.truncated or ""), boxes=track.boxes,
                        points3=track.points3, scores=track.scores, valid=track.valid,
                        detector=np.array(track.detector))
    return track


def lipsync_stream(frames: VideoFrames, voice: Voice, models: LoadedModels, settings: SamplerSettings,
                   face: FaceChoice, partial: PartialOutput, *, crf: int = CRF.default, hooks: Hooks = Hooks(),
                   remote: Callable[[RemoteSegments], int] | None = None, blend: Blend = Blend()) -> dict:
    """The streamed run, from loaded models and features: the first pass over `frames` finds `face` in every
    frame (kept in `partial`), then the windows run, each written as a segment in `partial` as it finishes (those
    already there are skipped), and the segments are joined into `partial.out` with the voice's soundtrack;
    `partial` is removed once the output is whole. `remote(segments)` makes the segments to do elsewhere
    (`lipsync_video_file`'s Ray cluster) instead of here and returns how many it made; `blend` is what is pasted
    back (`job.streamed_blend`; the remote workers get it from their `WindowJob`). Returns the summary."""
    blend = streamed_blend(blend)
    fps = float(voice.features.fps)
    clock = time.perf_counter()
    track = _face_track(frames, partial, face, hooks.face_progress)
    seconds = {"faces": time.perf_counter() - clock}
    warnings = [note for note in (frames.orientation_warning, frames.truncated) if note]
    input_frames = len(frames)
    retime = frames.constant_rate_index(fps)
    path = frames.path
    if retime is not None:  # a variable frame rate: frames shown at the times of a constant fps clock
        frames, track = RetimedFrames(frames, retime), track.subset(retime)
    faces = faces_from_track(track, frames.frame_hw, models.resolution)
    plan = plan_lipsync(len(frames), voice.features, faces.valid, settings, voice.speech)
    warnings += plan.warnings  # a run that will change nothing says why
    if retime is not None:  # the output's own count: it follows the audio, not the retimed clock
        warnings.append(f"{path}: the frame rate varies, so its {input_frames} frames were placed on a constant "
                        f"{fps:g} fps clock by their timestamps; the output has {plan.frames} frames")
    width, height = frames.width // 2 * 2, frames.height // 2 * 2  # yuv420p halves colour: sizes must be even
    if (width, height) != (frames.width, frames.height):
        warnings.append(f"{frames.width}x{frames.height} frames are written as {width}x{height}: H.264 needs even "
                        "sizes")
    runner = WindowRunner(models.unet, models.vae, settings, plan, voice.features, models.resolution, models.device,
                          models.dtype, torch.uint8, hooks.progress)
    runner.blend = blend
    segments = plan_segments(plan, settings.window)
    done = partial.finished(segments)

    def write(segment, images) -> None:
        write_segment(partial.segment_path(segment.name), images, fps, crf)

    windows_done = sum(1 for segment in segments if segment.window is not None and segment.name in done)

    def window_done(segment, crops=None) -> None:
        nonlocal windows_done
        windows_done += 1
        if hooks.on_window is not None:
            hooks.on_window(windows_done, len(plan.windows), crops)

    clock = time.perf_counter()
    if remote is not None:
        source = frames.frames if retime is not None else frames
        made = remote(RemoteSegments(plan, faces, retime, source.pts, [s for s in segments if s.name not in done],
                                     partial.keep_segment, window_done))
    else:
        with frames:
            made = run_segments(frames, faces, runner, segments, write, done, window_done)
    seconds["windows"] = time.perf_counter() - clock
    clock = time.perf_counter()
    join_segments([partial.segment_path(segment.name) for segment in segments], partial.out, fps, voice.soundtrack)
    seconds["join"] = time.perf_counter() - clock
    partial.remove()
    stats = runner.stats()
    return {"frames": plan.frames, "input_frames": input_frames, "fps": fps, "still_image": frames.still,
            "width": width, "height": height,
            "generated_frames": stats["generated_frames"], "resolution": models.resolution,
            "segments": len(segments), "resumed_segments": len(done), "made_segments": made,
            "unet_passes": {"full": stats["full_passes"], "shallow": stats["shallow_passes"]},
            "stage_seconds": {k: round(v, 3) for k, v in {**stats["seconds"], **seconds}.items()},
            "warnings": warnings}


def lipsync_video_file(job: Job, models: ModelSet | None = None, *, hooks: Hooks = Hooks(),
                       cluster: RayCluster | None = None) -> dict:
    """Run `job` streamed (`lipsync_stream`) with the models of `models` (default: a new `ModelSet` on the job's
    device). Finished segments wait in `OUT.partial/`; `job.resume` continues a run that stopped, with the same
    job (others are refused with the differences). With `cluster` the windows run on its workers, which load the
    UNet and the VAE themselves (without the job's compile and memory options). Returns the summary (frames,
    what was generated and resumed, seconds per stage, warnings, the UNet config's source)."""
    settings = job.settings
    settings.validate()
    check_crf(job.crf)
    job.face.check()
    job.memory.check()
    streamed_blend(job.blend)
    if models is None:
        device = resolve_device(job.device)
        models = ModelSet(device, job.dtype or resolve_dtype("auto", device))
    if job.device not in (None, models.device):
        raise ValueError(f"the job runs on {job.device} but its models are on {models.device}")
    job = replace(job, device=models.device, dtype=job.dtype or models.dtype)
    dtype = job.dtype
    started = time.perf_counter()
    frames = VideoFrames(job.video)
    # The inputs first (a wrong file or flag fails in seconds), then the models, then the partial output.
    waveform, sample_rate = load_audio(job.audio)
    clip = Clip(frames=None, fps=job.still_fps if frames.fps is None else frames.fps, still=frames.still,
                waveform=waveform, sample_rate=sample_rate, audio_path=job.audio)
    encoder = models.whisper(job.whisper)
    features, speech = speech_and_features(clip, encoder, settings, vad_threshold=job.vad_threshold,
                                           seamless=job.seamless)
    if job.memory.offload:  # whisper's part is done: its device memory goes to the UNet
        models.offload(encoder)
    del waveform, clip, encoder
    choice = choose_config(job.unet.path, job.unet.config)
    settings.validate(max_window(choice.config))
    network = face_vae = None
    resolution, config_source = choice.resolution, choice.source
    if cluster is None:  # else the workers load the models
        network, resolution, config_source = models.unet(job.unet, dtype, job.compile_mode)
        face_vae = models.vae(job.vae, dtype, batch_size=job.memory.vae_batch, tiling=job.memory.vae_tiling,
                              offload=job.memory.offload)
    if hooks.on_ready is not None:
        hooks.on_ready()
    partial = PartialOutput(job.out, job.identity(frames.still), job.resume)

    def on_cluster(work: RemoteSegments) -> int:
        window_job = WindowJob(video=str(job.video), retime=work.retime, unet=job.unet, vae=str(job.vae),
                               settings=settings, plan=work.plan, features=features, faces=work.faces,
                               resolution=resolution, device=str(models.device),
                               dtype=str(dtype).removeprefix("torch."), fps=float(features.fps), crf=job.crf,
                               pts=work.pts, blend=job.blend)
        return cluster.run(window_job, work.todo, work.keep, work.window_done)

    setup = time.perf_counter() - started
    loaded = LoadedModels(network, face_vae, resolution, models.device, dtype)
    summary = lipsync_stream(frames, Voice(features, speech, job.audio), loaded, settings, job.face, partial,
                             crf=job.crf, hooks=hooks, remote=None if cluster is None else on_cluster,
                             blend=job.blend)
    summary["stage_seconds"]["setup"] = round(setup, 3)
    return {**summary, "config": config_source}
