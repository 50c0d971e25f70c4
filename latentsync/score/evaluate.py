"""`score_sync`: LSE-C, LSE-D and the AV offset of a talking-face clip, from frames and audio.

Three sources of face crops, named in the result:
- "s3fd": the reference path (S3FD from sfd_face.pth, shots, tracks, the 2.8·s crop); numbers comparable
  with papers, up to the reference's lossy round trips (with `FaceCrops.jpeg` its last one, the per-crop JPEG
  dump, is replayed; the frame dump before detection, mp4v crops and AAC audio are not);
- "pack": the same tracks and crop geometry from boxes the caller supplies (per frame, or a detector
  callable such as this pack's face detector); usable offline without sfd_face.pth;
- "input": the frames already are face crops (resized to 224x224), as in the reference's per-crop evaluation.
Frames at another rate are resampled to 25 fps (nearest frame by time) first: the metric is defined at 25 fps.
`FaceCrops.jpeg` sends every crop clip through `media/jpeg.py`'s round trip just before SyncNet, as the reference
reads its crops from JPEG files: on its own end-to-end clip this brings LSE-D from 0.2 to 0.06 of its number.
"""
from __future__ import annotations

from pathlib import Path
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator, Sequence, Union

import numpy as np
import torch

from ..audio.features import FPS  # the video's frame rate, declared with the features it drives
from ..core.options import Option
from ..media.audio import to_mono_16k
from ..media.jpeg import jpeg_round_trip
from .crops import (MIN_FACE_SIZE, MIN_TRACK, ShotDetector, as_boxes, build_tracks, crop_tracks,
                         frames_at_25fps, resize_linear)
from .metric import (CROP_SIZE, MIN_FRAMES, SAMPLE_RATE, SAMPLES_PER_FRAME, SyncScore, SyncScoreError,
                          check_audio, check_frame_count, combine_tracks, evaluate_clip, pcm16)
from .s3fd import detect_faces, load_s3fd
from .syncnet import SyncNet, load_syncnet

CROP_MODES = ("pack", "s3fd", "input")
JPEG_CHOICES = ("auto", "on", "off")

# What a user sets for a score (the SyncNet Score node's inputs, the `score` flags, an experiment's "score" keys).
CROPS = Option("crops", "pack", "Face crops from the pack's detector, the reference's S3FD (paper-comparable), or "
               "the input as is.", choices=CROP_MODES)
MIN_TRACK_FRAMES = Option("min_track", MIN_TRACK, f"Shortest face track counted, in frames at 25 fps (reference: "
                          f"{MIN_TRACK}); lower it for short clips.", 0, 1000)
JPEG = Option("jpeg_round_trip", "auto", "JPEG-encode each face crop before SyncNet, as the reference does; auto: on "
              "with crops=s3fd.", choices=JPEG_CHOICES)
SCORE_OPTIONS = (CROPS, MIN_TRACK_FRAMES)  # an experiment's "score" keys, as named (its "jpeg" is true/false/auto)
DETECTOR_BATCH = 16

BoxesPerFrame = Sequence[Union[np.ndarray, Sequence[float], None]]
BoxDetector = Callable[[np.ndarray], BoxesPerFrame]
"""Called with `[B, H, W, 3]` uint8 RGB frames; returns B entries of `[K, 4|5]` pixel boxes (or None)."""


@dataclass(frozen=True)
class FaceCrops:
    """Where the face crops come from (`mode`, one of `CROP_MODES`; see the module's docstring) and what the mode
    needs: "pack" the `face_boxes`, one entry per frame (`[K, 4|5]` pixel boxes or None) or a detector called on
    batches of uint8 RGB frames; "s3fd" `s3fd`, an `S3FDNet` or the path of sfd_face.pth; "input" nothing.
    `jpeg` replays the reference's JPEG round trip of each crop frame (see the module's docstring)."""
    mode: str = "pack"
    face_boxes: BoxesPerFrame | BoxDetector | None = None
    s3fd: torch.nn.Module | str | Path | None = None
    jpeg: bool = False

    def __post_init__(self) -> None:
        CROPS.check(self.mode, "crops")


@dataclass(frozen=True)
class TrackRules:
    """Which face tracks are scored: more than `min_track` frames at 25 fps in one shot, faces over
    `min_face_size` pixels. The defaults are the reference's (more than 50 frames, faces over 100 px); lowering
    them scores shorter clips, but the numbers are then not comparable with papers."""
    min_track: int = MIN_TRACK
    min_face_size: float = MIN_FACE_SIZE

    def __post_init__(self) -> None:
        value = self.min_track
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"min_track must be a whole number of frames >= 0, got {value!r}")


def as_uint8_rgb(frame: np.ndarray | torch.Tensor) -> np.ndarray:
    """One `[H, W, 3]` frame, float 0-1 (ComfyUI IMAGE) or uint8, as uint8 RGB."""
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu().numpy()
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise SyncScoreError(f"expected frames shaped [H, W, 3], got a frame of shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        return np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise SyncScoreError(f"frames must be uint8 or float 0-1, got {arr.dtype}")


def wants_jpeg(choice: str | bool | None, crops: str) -> bool:
    """The JPEG round trip setting of the node ("auto"/"on"/"off"), the CLI (None/True/False) and configs files:
    auto is on exactly with the reference's S3FD crops, the path whose numbers are compared with papers."""
    if choice is None or isinstance(choice, bool):
        choice = "auto" if choice is None else "on" if choice else "off"
    choice = JPEG.check(choice, "the JPEG round trip")
    return crops == "s3fd" if choice == "auto" else choice == "on"


def score_sync(frames: np.ndarray | torch.Tensor | Sequence[np.ndarray], audio: np.ndarray | torch.Tensor,
               sample_rate: int, fps: float, syncnet: SyncNet | str | Path, crops: FaceCrops | str = "pack", *,
               tracks: TrackRules = TrackRules(), batch_size: int = 20) -> SyncScore:
    """Score frames `[N, H, W, 3]` (RGB, float 0-1 or uint8) against `audio` (`[T]`, `[C, T]` or `[1, C, T]`).

    `crops` says where the face crops come from (`FaceCrops`; a mode name alone is `FaceCrops(mode)`, enough for
    "input"): `FaceCrops(face_boxes=...)` for the pack's boxes, `FaceCrops("s3fd", s3fd=...)` for the reference's
    detector. `tracks` are the rules of the face tracks scored (`TrackRules`, by default the reference's).
    """
    if isinstance(frames, (np.ndarray, torch.Tensor)) and frames.ndim != 4:
        raise SyncScoreError(f"expected frames shaped [N, H, W, 3], got {tuple(frames.shape)}")
    return score_video(lambda: iter(frames), audio, sample_rate, fps, syncnet, crops, tracks=tracks,
                       batch_size=batch_size)


def score_video(open_frames: Callable[[], Iterable[np.ndarray]], audio: np.ndarray | torch.Tensor,
                sample_rate: int, fps: float, syncnet: SyncNet | str | Path, crops: FaceCrops | str = "pack", *,
                tracks: TrackRules = TrackRules(), batch_size: int = 20) -> SyncScore:
    """`score_sync` over a frame stream: `open_frames()` starts a new pass (the face paths take two), so a
    long video can be decoded twice instead of held in memory."""
    source = crops if isinstance(crops, FaceCrops) else FaceCrops(crops)
    crops, jpeg = source.mode, source.jpeg
    if crops == "pack" and source.face_boxes is None:
        raise SyncScoreError('crops="pack" needs face boxes: give FaceCrops(face_boxes=...) (one [K, 4] array per '
                             'frame, or a detector callable); or use crops="s3fd" with sfd_face.pth, or "input" for '
                             'face crops')
    if crops == "s3fd" and source.s3fd is None:
        raise SyncScoreError('crops="s3fd" needs the S3FD detector: give FaceCrops("s3fd", s3fd=...) (sfd_face.pth '
                             'or a loaded S3FDNet)')
    min_track, min_face_size = tracks.min_track, tracks.min_face_size
    samples = pcm16(to_mono_16k(audio, sample_rate))
    check_audio(samples)
    net = load_syncnet(syncnet) if isinstance(syncnet, (str, Path)) else syncnet

    def stream() -> Iterator[tuple[int, np.ndarray]]:
        return ((i, as_uint8_rgb(f)) for i, f in frames_at_25fps(open_frames(), fps))

    if crops == "input":
        clip = [resize_linear(f, CROP_SIZE, CROP_SIZE)[..., ::-1] for _, f in stream()]
        check_frame_count(len(clip))
        return _evaluate(net, np.stack(clip), samples, crops="input", jpeg=jpeg, batch_size=batch_size)

    detect = _s3fd_detector(source.s3fd) if crops == "s3fd" else _box_source(source.face_boxes)
    detections, shots = _detect(stream(), detect)
    check_frame_count(len(detections))
    face_tracks = build_tracks(detections, shots, min_track=min_track, min_face_size=min_face_size)
    if not face_tracks:
        seen = sum(len(as_boxes(d)) > 0 for d in detections)
        hint = "" if len(detections) > min_track else (
            f"; the clip has only {len(detections)} frames at 25 fps and the reference skips clips of "
            f"{min_track} frames or fewer (lower min_track to score it anyway)")
        raise SyncScoreError(f"no face track to score ({crops} boxes): the metric needs one face of more than "
                             f"{min_face_size:g} px found in more than {min_track} frames of one shot; faces were "
                             f"found in {seen} of {len(detections)} frames{hint}")
    scores = []
    for track, clip in zip(face_tracks, crop_tracks((f for _, f in stream()), face_tracks)):
        audio_span = samples[track.first * SAMPLES_PER_FRAME:(track.last + 1) * SAMPLES_PER_FRAME]
        if audio_span.size < MIN_FRAMES * SAMPLES_PER_FRAME:
            continue  # the audio ends before this track has one snippet's worth
        scores.append(_evaluate(net, np.ascontiguousarray(clip[..., ::-1]), audio_span, crops=crops, jpeg=jpeg,
                                first_frame=track.first, batch_size=batch_size))
    if not scores:
        raise SyncScoreError(f"the audio ({samples.size / SAMPLE_RATE:.2f} s) ends before the first face track starts "
                             f"(frame {face_tracks[0].first} at 25 fps)")
    return combine_tracks(scores)


def _evaluate(net: SyncNet, crops_bgr: np.ndarray, samples: np.ndarray, crops: str, jpeg: bool,
              first_frame: int = 0, batch_size: int = 20) -> SyncScore:
    """`evaluate_clip`, the crops first through the JPEG round trip when asked (it takes RGB; SyncNet BGR)."""
    if jpeg:
        crops_bgr = np.ascontiguousarray(jpeg_round_trip(np.ascontiguousarray(crops_bgr[..., ::-1]))[..., ::-1])
    score = evaluate_clip(net, crops_bgr, samples, crops=crops, first_frame=first_frame, batch_size=batch_size)
    return replace(score, jpeg=bool(jpeg))


Detect = Callable[[list[np.ndarray], list[int]], BoxesPerFrame]


def _s3fd_detector(s3fd: torch.nn.Module | str | Path) -> Detect:
    net = load_s3fd(s3fd) if isinstance(s3fd, (str, Path)) else s3fd
    return lambda frames, indices: [detect_faces(net, frame) for frame in frames]


def _box_source(face_boxes: BoxesPerFrame | BoxDetector) -> Detect:
    if callable(face_boxes):
        return lambda frames, indices: face_boxes(np.stack(frames))

    def lookup(frames: list[np.ndarray], indices: list[int]) -> BoxesPerFrame:
        if indices[-1] >= len(face_boxes):
            raise SyncScoreError(f"face_boxes has {len(face_boxes)} entries but the clip has more frames; "
                                 "give one entry (boxes or None) per input frame")
        return [face_boxes[i] for i in indices]

    return lookup


def _detect(stream: Iterator[tuple[int, np.ndarray]],
            detect: Detect) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """One pass: face boxes and shot cuts for every 25 fps frame, the detector fed in batches."""
    shots = ShotDetector()
    detections: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    indices: list[int] = []

    def flush() -> None:
        if not batch:
            return
        found = detect(batch, indices)
        if len(found) != len(batch):
            raise SyncScoreError(f"the face detector returned {len(found)} results for {len(batch)} frames")
        detections.extend(as_boxes(f) for f in found)
        batch.clear()
        indices.clear()

    for index, frame in stream:
        shots.add(frame)
        batch.append(frame)
        indices.append(index)
        if len(batch) == DETECTOR_BATCH:
            flush()
    flush()
    return detections, shots.shots()
