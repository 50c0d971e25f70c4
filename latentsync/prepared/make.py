"""Making a prepared video (`store.py`): the faces pass, then the VAE moments of every frame with a face.

From a file (`prepare_file`, the `prepare` command and `lipsync --prepared`) the frames are decoded twice, in
order: once to track the face (the alignment is smoothed over the whole track), once to encode, `CHUNK` frames at
a time into latents files of `store.SEGMENT` frames, so memory does not grow with the clip. From IMAGE frames
(`prepare_frames`, the Prepare Video node) it is kept in memory, beside the frames it was made from.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..core.digest import file_sha256, tensor_digest
from ..face.align import AlignedFaces
from ..face.detect import DETECTOR, FaceTrack, track_from_faces
from ..face.window_crops import clip_faces, faces_from_track
from ..media.frame_reader import RetimedFrames, VideoFrames
from ..sample.denoise import FaceVAE, face_moments
from .store import (SEGMENT, PreparedError, PreparedVideo, frames_identity, open_prepared, prepared_identity,
                    read_manifest, start_folder)

CHUNK = 16  # frames read, aligned and encoded at a time
Progress = Callable[[int, int], None]  # (frames done, frames in all); may raise to stop


def scan_faces(frames: VideoFrames, face, progress: Callable[[int], None] | None = None) -> FaceTrack:
    """The faces pass: every frame of `frames` decoded once, in order, and `face` (a `run.job.FaceChoice`)
    tracked in it; the frames' timestamps are then known (`frames.pts`)."""
    tracker = face.tracker()
    found = []
    for frame in frames.scan():
        found.append(tracker.step(frame))
        if progress is not None:
            progress(len(found))
    return track_from_faces(found, frames.frame_hw, face.identity()["detector"])


def vae_identity(vae: FaceVAE) -> dict:
    """What a prepared video records of its VAE: the adapter's own `identity()`, else its type's name."""
    return vae.identity() if hasattr(vae, "identity") else {"kind": type(vae).__name__}


def encode_faces(prepared: PreparedVideo, frames: Callable[[np.ndarray], object], vae: FaceVAE,
                 device: torch.device | str, progress: Progress | None = None) -> None:
    """Encode the faces of every frame of `prepared` that has one into it, a latents segment at a time.
    `frames(indices)` gives what `ClipFaces.select` warps the crops from (the IMAGE tensor, or those frames)."""
    faces = prepared.faces
    total, done = len(faces), 0
    for start in range(0, total, SEGMENT):
        index = np.flatnonzero(faces.valid[start:start + SEGMENT]) + start
        masked, reference = [], []
        for at in range(0, len(index), CHUNK):
            part = index[at:at + CHUNK]
            moments = face_moments(vae, faces.select(frames(part), part), device).cpu()
            masked.append(moments[:len(part)])
            reference.append(moments[len(part):])
            done += len(part)
            if progress is not None:
                progress(done, int(faces.valid.sum()))
        empty = torch.zeros(0)
        prepared.put(start, index, torch.cat(masked) if masked else empty, torch.cat(reference) if reference else empty)


def file_video_identity(path: str | Path) -> dict:
    """A video file named by its content (the whole file's SHA-256) and, for people reading the manifest, its name."""
    path = Path(path)
    return {"file": path.name, "size": path.stat().st_size, "sha256": file_sha256(path)}


def prepare_frames(frames: torch.Tensor, faces, resolution: int, vae: FaceVAE, device: torch.device | str,
                   progress: Progress | None = None, face: dict | None = None) -> PreparedVideo:
    """A prepared video of IMAGE `frames` (`[N, H, W, 3]`, as `sample.sampler.lipsync` takes them), in memory:
    `faces` as `lipsync`'s (aligned faces, a track, a detector or None: the auto detector's largest face).
    `face` is how the faces were found, as the identity records it (default: the detector's name, or a digest of
    the alignment that was given)."""
    source = clip_faces(frames, faces, resolution)
    if face is None and isinstance(faces, (AlignedFaces, FaceTrack)):  # found before: named by their alignment
        face = {"given": tensor_digest(source.matrices, torch.from_numpy(source.valid))}
    elif face is None:
        face = {"detector": getattr(faces, "name", faces) or DETECTOR.default}
    identity = prepared_identity(frames_identity(frames), face, source.resolution, vae_identity(vae),
                                 torch.device(device).type, None)
    prepared = PreparedVideo(identity, source)
    encode_faces(prepared, lambda part: frames, vae, device, progress)
    return prepared


def _retimed(frames: VideoFrames, track: FaceTrack, fps: float | None):
    retime = None if fps is None else frames.constant_rate_index(fps)
    return (frames, track) if retime is None else (RetimedFrames(frames, retime), track.subset(retime))


def prepare_file(frames: VideoFrames, face, vae: FaceVAE, folder: str | Path, identity: dict, *,
                 device: torch.device | str,
                 hooks: tuple[Callable | None, Progress | None] = (None, None)) -> PreparedVideo:
    """Prepare the video `frames` (not yet scanned) into `folder`, streamed: the faces pass of `face` (a
    `FaceChoice`), then every frame with a face encoded by `vae`; the folder is complete when this returns.
    `identity` (`prepared_identity`) is what it is made from; `hooks` are the faces pass's and the encode's
    progress."""
    face_progress, progress = hooks
    resolution, fps = identity["resolution"], identity["fps"]
    track = scan_faces(frames, face, face_progress)
    source, track = _retimed(frames, track, fps)
    faces = faces_from_track(track, frames.frame_hw, resolution)
    prepared = start_folder(folder, identity, faces)
    prepared.pts, prepared.truncated = frames.pts, frames.truncated

    def read(part: np.ndarray) -> dict:
        base = torch.from_numpy(source.read(part))
        return {int(index): base[row] for row, index in enumerate(part.tolist())}

    with frames:
        encode_faces(prepared, read, vae, device, progress)
    prepared.finish()
    return prepared


def use_or_prepare(folder: str | Path, identity: dict, make: Callable[[], PreparedVideo],
                   rebuild: bool = False) -> tuple[PreparedVideo, dict]:
    """The prepared video in `folder` when it was made from `identity` (refused with the differences when it was
    made from another; a damaged one is named), else `make()` (a new, empty or unfinished folder, or `rebuild`).
    Returns it and what happened: {"folder", "made", "seconds"}."""
    clock = time.perf_counter()
    manifest = None if rebuild or not Path(folder).is_dir() else read_manifest(folder)
    if manifest is not None and manifest.get("complete"):
        prepared, made = open_prepared(folder, identity), False
    else:
        prepared, made = make(), True
    if prepared.folder is None:
        raise PreparedError("a prepared video made in memory was given where a folder was asked for")
    return prepared, {"folder": str(folder), "made": made, "seconds": round(time.perf_counter() - clock, 3)}

