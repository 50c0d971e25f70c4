"""What the face stages pass along: a face found in one frame, the tracked face of a clip, the detector
interface, and the error for a detector whose model files are missing. Kept apart from the detectors, so that
every detector and every later stage can import them without importing each other."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two `(x1, y1, x2, y2)` boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class FaceModelMissing(FileNotFoundError):
    """A detector's model files are not installed; the message says which files and where to get them."""


@dataclass
class DetectedFace:
    """One face in one frame, in frame pixels: box `(x1, y1, x2, y2)`, detector score, and the reference's
    alignment points `[3, 2]` (image-left brow centre, image-right brow centre, nose centre)."""

    box: tuple[float, float, float, float]
    score: float
    points3: np.ndarray

    @property
    def area(self) -> float:
        return max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


class FaceDetector(Protocol):
    """What `detect_faces` needs from a detector. `around` is the previous frame's box of the tracked face:
    a detector may search only near it (and return nothing if the face is not there)."""

    name: str

    def detect(self, frame: np.ndarray, around: tuple[float, float, float, float] | None = None) -> list[DetectedFace]:
        ...


@dataclass
class FaceTrack:
    """The chosen face of every frame. Rows where `valid` is False hold NaN: no usable face there."""

    boxes: np.ndarray  # [N, 4] float64, x1 y1 x2 y2 in frame pixels
    points3: np.ndarray  # [N, 3, 2] float32
    scores: np.ndarray  # [N] float32
    valid: np.ndarray  # [N] bool
    frame_hw: tuple[int, int]
    detector: str = ""

    def __len__(self) -> int:
        return len(self.valid)

    def subset(self, indices: Sequence[int] | slice) -> FaceTrack:
        """The track of some frames (e.g. one batch), in the given order."""
        return FaceTrack(boxes=self.boxes[indices], points3=self.points3[indices], scores=self.scores[indices],
                         valid=self.valid[indices], frame_hw=self.frame_hw, detector=self.detector)

    def faces_json(self) -> list[dict]:
        """`[{"frame": i, "box": [x1, y1, x2, y2] | None}, ...]` with whole pixels."""
        return [{"frame": i, "box": [int(round(v)) for v in self.boxes[i]] if self.valid[i] else None}
                for i in range(len(self))]


def no_face_found(frames: int) -> str:
    """The one line that says no frame had a usable face (the CLI's warnings, the nodes' reports)."""
    return (f"no face was found in any of the {frames} frame{'s' if frames != 1 else ''} (turned away, too small, "
            f"sideways or dark? try another detector or face choice)")
