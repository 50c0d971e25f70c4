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

from ..audio.features import FPS, AudioFeatures
from ..audio.vad import SpeechSegments
from ..face.blend import Blend
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
from ..prepared import (PreparedVideo, file_video_identity, prepare_file, prepared_identity, scan_faces,
                        use_or_prepare, vae_identity)
from .cluster import RayCluster, WindowJob
from .job import FaceChoice, Job, MemoryOptions, streamed_blend
from .pipeline import Clip, ModelSet, UNetSpec, resolve_device, resolve_dtype, speech_and_features


@dataclass(frozen=True)
class Hooks:
    """What a streamed run tells as it goes; each may raise to stop it. `progress(done, total)` counts UNet
    steps, `face_progress(frames)` the first pass, `on_window(done, total, crops)` the windows (with the last
    one's generated crops; None from a cluster; raising there keeps that window), `on_ready()` is called once
    the inputs are checked and the models loaded, before the frames are read, and `on_prepare(done, total)` as a
    prepared video's faces are encoded (`lipsync_video_file` only; its faces pass calls `face_progress`)."""

    progress: Callable[[int, int], None] | None = None
    face_progress: Callable[[int], None] | None = None
    on_window: Callable[[int, int, torch.Tensor | None], None] | None = None
    on_ready: Callable[[], None] | None = None
    on_prepare: Callable[[int, int], None] | None = None


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
    `keep(name, data)` stores an encoded segment as it arrives, `window_done(segment)` counts a window,
    `step_done(window, step, steps)` a UNet step made there (None: nobody asks)."""

    plan: object  # FramePlan
    faces: object  # ClipFaces
    retime: np.ndarray | None
    pts: np.ndarray
    todo: list
    keep: Callable[[str, bytes], Path]
    window_done: Callable[[object], None]
    step_done: Callable[[int, int, int], None] | None


def _face_track(frames: VideoFrames, partial: PartialOutput, face: FaceChoice, progress=None) -> FaceTrack:
    """The first pass: every frame decoded once and its face tracked; kept in the partial output, so a resumed
    run does not detect again. Returns the track (the frames' timestamps are set on `frames`)."""
    kept = partial.load_arrays("faces")
    if kept is not None:
        frames.restore(kept["pts"], str(kept["truncated"]) or None)
        return FaceTrack(boxes=kept["boxes"], points3=kept["points3"], scores=kept["scores"], valid=kept["valid"],
                         frame_hw=frames.frame_hw, detector=str(kept["detector"]))
    track = scan_faces(frames, face, progress)
    partial.save_arrays("faces", pts=frames.pts, truncated=np.array(frames.truncated or ""), boxes=track.boxes,
                        points3=track.points3, scores=track.scores, valid=track.valid,
                        detector=np.array(track.detector))
    return track


def lipsync_stream(frames: VideoFrames, voice: Voice, models: LoadedModels, settings: SamplerSettings,
                   face: FaceChoice | PreparedVideo, partial: PartialOutput, *, crf: int = CRF.default,
                   hooks: Hooks = Hooks(), remote: Callable[[RemoteSegments], int] | None = None,
                   blend: Blend = Blend()) -> dict:
    """The streamed run, from loaded models and features: the first pass over `frames` finds `face` in every
    frame (kept in `partial`; a prepared video of `frames` gives its faces and VAE latents instead), then the
    windows run, each written as a segment in `partial` as it finishes (those already there are skipped), and the
    segments are joined into `partial.out` with the voice's soundtrack; `partial` is removed once the output is
    whole. `remote(segments)` makes the segments to do elsewhere (`lipsync_video_file`'s Ray cluster) instead of
    here and returns how many it made; `blend` is what is pasted back (`job.streamed_blend`; the remote workers get
    it from their `WindowJob`). Returns the summary."""
    blend = streamed_blend(blend)
    fps = float(voice.features.fps)
    clock = time.perf_counter()
    prepared = face if isinstance(face, PreparedVideo) else None
    if prepared is not None:
        if prepared.pts is None:
            raise ValueError("the prepared video was made from IMAGE frames; a run from the video file needs one "
                             "prepared from that file")
        frames.restore(prepared.pts, prepared.truncated)
    else:
        track = _face_track(frames, partial, face, hooks.face_progress)
    seconds = {"faces": time.perf_counter() - clock}
    warnings = [note for note in (frames.orientation_warning, frames.truncated) if note]
    input_frames = len(frames)
    retime = frames.constant_rate_index(fps)
    path = frames.path
    if retime is not None:  # a variable frame rate: frames shown at the times of a constant fps clock
        frames = RetimedFrames(frames, retime)
        track = None if prepared is not None else track.subset(retime)
    faces = faces_from_track(track, frames.frame_hw, models.resolution) if prepared is None else prepared.faces
    if prepared is not None and (len(faces) != len(frames) or faces.resolution != models.resolution):
        raise ValueError(f"the prepared video has {len(faces)} frames with {faces.resolution} px faces, but this run "
                         f"has {len(frames)} frames and makes {models.resolution} px faces: prepare this video for it")
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
    runner.blend, runner.latents = blend, prepared
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
        runner.steps_done = sum(s.window.steps for s in segments if s.name in done and s.window is not None)
        made = remote(RemoteSegments(plan, faces, retime, source.pts, [s for s in segments if s.name not in done],
                                     partial.keep_segment, window_done,
                                     None if hooks.progress is None else runner.remote_step))
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


@dataclass(frozen=True)
class Preparation:
    """A prepared video to use or make (`prepared/`): the video file and the folder, the UNet whose config gives
    the faces' size, the VAE file and how it runs, the face to follow, a still image's fps, and whether to make
    the folder again even if it holds one."""

    video: Path
    folder: Path
    unet: UNetSpec
    vae: Path
    face: FaceChoice
    memory: MemoryOptions = MemoryOptions()
    still_fps: float = FPS.default
    rebuild: bool = False


def prepared_video(preparation: Preparation, models: ModelSet, dtype: torch.dtype | None = None,
                   hooks: Hooks = Hooks()) -> tuple[PreparedVideo, dict]:
    """The prepared video of `preparation` with the VAE of `models` (in `dtype`, default theirs): read from its
    folder when it was made from this video and these settings (refused with the differences when it was made
    from others), else made there. Returns it and {"folder", "made", "seconds"}."""
    preparation.face.check()
    preparation.memory.check()
    memory, frames = preparation.memory, VideoFrames(preparation.video)
    resolution = choose_config(preparation.unet.path, preparation.unet.config).resolution
    vae = models.vae(preparation.vae, dtype, batch_size=memory.vae_batch, tiling=memory.vae_tiling,
                     offload=memory.offload)
    fps = None if frames.still else (frames.fps or preparation.still_fps)
    identity = prepared_identity(file_video_identity(preparation.video), preparation.face.identity(), resolution,
                                 vae_identity(vae), models.device.type, fps)

    def make() -> PreparedVideo:
        return prepare_file(frames, preparation.face, vae, preparation.folder, identity, device=models.device,
                            hooks=(hooks.face_progress, hooks.on_prepare))

    return use_or_prepare(preparation.folder, identity, make, preparation.rebuild)


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
    face, prepared_note = job.face, None
    if job.prepared is not None:  # the faces and their latents: made once for the video, then read
        preparation = Preparation(job.video, job.prepared, job.unet, job.vae, job.face, job.memory, job.still_fps,
                                  job.rebuild_prepared)
        face, prepared_note = prepared_video(preparation, models, dtype, hooks)
    partial = PartialOutput(job.out, job.identity(frames.still), job.resume)

    def on_cluster(work: RemoteSegments) -> int:
        window_job = WindowJob(video=str(job.video), retime=work.retime, unet=job.unet, vae=str(job.vae),
                               settings=settings, plan=work.plan, features=features, faces=work.faces,
                               resolution=resolution, device=str(models.device),
                               dtype=str(dtype).removeprefix("torch."), fps=float(features.fps), crf=job.crf,
                               pts=work.pts, blend=job.blend,
                               prepared=None if prepared_note is None else prepared_note["folder"])
        return cluster.run(window_job, work.todo, work.keep, work.window_done, on_step=work.step_done)

    setup = time.perf_counter() - started - (prepared_note["seconds"] if prepared_note else 0.0)  # apart: "prepare"
    loaded = LoadedModels(network, face_vae, resolution, models.device, dtype)
    summary = lipsync_stream(frames, Voice(features, speech, job.audio), loaded, settings, face, partial,
                             crf=job.crf, hooks=hooks, remote=None if cluster is None else on_cluster,
                             blend=job.blend)
    summary["stage_seconds"]["setup"] = round(setup, 3)
    if prepared_note is not None:
        summary["stage_seconds"]["prepare"] = prepared_note["seconds"]
    return {**summary, "config": config_source, "prepared": prepared_note}
