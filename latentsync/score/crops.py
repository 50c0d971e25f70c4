"""Face crops for the SyncNet metric: 25 fps frames, shots, face tracks and the reference's 2.8·s square crop.

This follows LatentSync's `eval/syncnet_detect.py` from per-frame face boxes onwards, whatever detector
made them (S3FD for the reference path, or this pack's own): shots from a content detector, greedy IoU
tracks (IoU > 0.5, gaps of at most 25 frames, more than 50 detections, mean face over 100 px), boxes
interpolated over missed frames, half-size and centre median-filtered (kernel 13), then rows
[cy - s, cy + 1.8 s) and columns [cx - 1.4 s, cx + 1.4 s) of the frame padded with grey 110, resized to 224.
Differences from the reference: frames are not JPEG/mp4v round-tripped, and resizing is bilinear in torch
(cv2's INTER_LINEAR arithmetic, up to its fixed-point rounding).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from ..face.detect import make_detector
from ..media.shots import ShotDetector, resize_linear
from .metric import CROP_SIZE, FPS, median_filter

# The shot rule and the resize it uses live in media/shots.py (the face tracker needs them too); they are
# named here as well, where the metric's callers have always imported them.
__all__ = ["MIN_TRACK", "MIN_FACE_SIZE", "TRACK_IOU", "MAX_GAP", "SMOOTHING_KERNEL", "CROP_MARGIN", "PAD_VALUE",
           "ShotDetector", "resize_linear", "frames_at_25fps", "CropTrack", "as_boxes", "box_iou", "build_tracks",
           "smoothed_geometry", "crop_face", "crop_tracks", "pack_face_detector"]

MIN_TRACK = 50
MIN_FACE_SIZE = 100.0
TRACK_IOU = 0.5
MAX_GAP = 25
SMOOTHING_KERNEL = 13
CROP_MARGIN = 0.4
PAD_VALUE = 110


def frames_at_25fps(frames: Iterable[np.ndarray], fps: float) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (source index, frame) at 25 fps: for each 1/25 s tick, the source frame nearest in time.

    The metric is defined at 25 fps (the reference re-encodes with ffmpeg -r 25, which also picks frames by
    timestamp). A clip of n frames gives ceil((n - 0.5) * 25 / fps) frames; at 25 fps it passes unchanged.
    """
    if fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"the frame rate must be positive, got {fps}")
    if abs(fps - FPS) < 1e-9:
        yield from enumerate(frames)
        return
    tick = 0
    for index, frame in enumerate(frames):
        while math.floor(tick * fps / FPS + 0.5) == index:
            yield index, frame
            tick += 1


# ---------------------------------------------------------------- tracks

@dataclass(frozen=True)
class CropTrack:
    """One face over consecutive 25 fps frames; `boxes` are x1, y1, x2, y2 pixels, interpolated over misses."""

    frames: np.ndarray
    boxes: np.ndarray

    @property
    def first(self) -> int:
        return int(self.frames[0])

    @property
    def last(self) -> int:
        return int(self.frames[-1])


def as_boxes(boxes: object) -> np.ndarray:
    """A frame's detections as `[K, 5]` float64 (x1, y1, x2, y2, score); None or empty -> no face."""
    if boxes is None:
        return np.zeros((0, 5))
    arr = torch.as_tensor(boxes).detach().cpu().double().numpy() if isinstance(boxes, torch.Tensor) \
        else np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 5))
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] not in (4, 5):
        raise ValueError(f"face boxes must be [K, 4] or [K, 5] (x1, y1, x2, y2[, score]) pixels, got {arr.shape}")
    return arr if arr.shape[1] == 5 else np.concatenate([arr, np.ones((len(arr), 1))], 1)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def build_tracks(detections: Sequence[np.ndarray], shots: Sequence[tuple[int, int]], min_track: int = MIN_TRACK,
                 min_face_size: float = MIN_FACE_SIZE) -> list[CropTrack]:
    """Greedy IoU tracking per shot, as the reference: shots shorter than `min_track` frames are skipped, a
    track needs more than `min_track` detections and a mean face size over `min_face_size` pixels."""
    tracks = []
    for start, end in shots:
        if end - start < min_track:
            continue
        remaining = [list(as_boxes(d)) for d in detections[start:end]]
        while True:
            track: list[tuple[int, np.ndarray]] = []
            for offset, faces in enumerate(remaining):
                frame = start + offset
                if track and frame - track[-1][0] > MAX_GAP:
                    break
                for i, face in enumerate(faces):
                    # NMS at IoU 0.1 leaves at most one face per frame that can overlap the track by > 0.5.
                    if not track or box_iou(face, track[-1][1]) > TRACK_IOU:
                        track.append((frame, face))
                        del faces[i]
                        break
            if not track:
                break
            if len(track) <= min_track:
                continue
            seen = np.array([f for f, _ in track])
            frames = np.arange(seen[0], seen[-1] + 1)
            boxes = np.stack([np.interp(frames, seen, np.array([b[j] for _, b in track])) for j in range(4)], 1)
            if max(np.mean(boxes[:, 2] - boxes[:, 0]), np.mean(boxes[:, 3] - boxes[:, 1])) > min_face_size:
                tracks.append(CropTrack(frames, boxes))
    return tracks


# ---------------------------------------------------------------- crops

def smoothed_geometry(track: CropTrack) -> np.ndarray:
    """`[T, 3]` (cx, cy, s) per frame: box centre and half of its larger side, median-filtered over 13 frames
    (scipy's medfilt pads with zeros, so the first and last 6 frames lean small, as in the reference)."""
    boxes = track.boxes
    half = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2
    centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return np.stack([median_filter(v, SMOOTHING_KERNEL) for v in (centre_x, centre_y, half)], 1)


def crop_face(frame: np.ndarray, centre_x: float, centre_y: float, half: float, size: int = CROP_SIZE) -> np.ndarray:
    """The reference crop: a 2.8·s square from the box top, of the frame padded by int(1.8 s) with grey 110."""
    pad = int(half * (1 + 2 * CROP_MARGIN))
    my, mx = centre_y + pad, centre_x + pad
    rows = (int(my - half), int(my + half * (1 + 2 * CROP_MARGIN)))
    cols = (int(mx - half * (1 + CROP_MARGIN)), int(mx + half * (1 + CROP_MARGIN)))
    height, width = frame.shape[:2]
    # Numpy slicing of the padded frame clips at its borders; do the same without building it.
    r0, r1 = (min(max(v, 0), height + 2 * pad) for v in rows)
    c0, c1 = (min(max(v, 0), width + 2 * pad) for v in cols)
    if r1 <= r0 or c1 <= c0:
        raise ValueError(f"empty face crop for centre ({centre_x:.1f}, {centre_y:.1f}) and half-size {half:.1f}")
    out = np.full((r1 - r0, c1 - c0, frame.shape[2]), PAD_VALUE, dtype=np.uint8)
    src_r0, src_r1 = max(r0 - pad, 0), min(r1 - pad, height)
    src_c0, src_c1 = max(c0 - pad, 0), min(c1 - pad, width)
    if src_r1 > src_r0 and src_c1 > src_c0:
        out[src_r0 + pad - r0:src_r1 + pad - r0, src_c0 + pad - c0:src_c1 + pad - c0] = \
            frame[src_r0:src_r1, src_c0:src_c1]
    return resize_linear(out, size, size)


def crop_tracks(frames: Iterable[np.ndarray], tracks: Sequence[CropTrack]) -> list[np.ndarray]:
    """`[T, 224, 224, 3]` crops per track from one pass over the 25 fps frames (same channel order as given)."""
    geometry = [smoothed_geometry(t) for t in tracks]
    crops: list[list[np.ndarray]] = [[] for _ in tracks]
    last = max(t.last for t in tracks)
    for index, frame in enumerate(frames):
        for track, geo, out in zip(tracks, geometry, crops):
            if track.first <= index <= track.last:
                out.append(crop_face(frame, *geo[index - track.first]))
        if index >= last:
            break
    return [np.stack(c) for c in crops]


def pack_face_detector(name: str = "dlib"):
    """The pack's own face detector for crops="pack": batches of uint8 RGB frames -> `[K, 5]` boxes each.

    Its boxes are tighter than S3FD's, so "pack" scores are labelled as such and not comparable with papers.
    """
    detector = make_detector(name)

    def boxes(batch):
        return [np.array([(*face.box, face.score) for face in detector.detect(frame)], dtype=np.float32).reshape(-1, 5)
                for frame in batch]

    return boxes
