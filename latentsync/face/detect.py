"""Face detection and tracking: one face per frame, as the three points the alignment needs.

The reference aligns on three points from InsightFace's 106 landmarks: the centres of the two eyebrows
(image-left first) and the nose centre. Detectors are pluggable (`FaceDetector`):

- "auto" (default, offline): dlib's HOG where it is sure, dlib's CNN (MMOD) detector where HOG finds nothing
  or is unsure, and a search for small faces; see `dlib_models.AutoFaceDetector`.
- "dlib": dlib's HOG face detector (built into dlib) alone: the fastest, for clear frontal faces.
- "dlib-cnn": dlib's CNN detector alone: turned, covered, dark faces, at seconds a frame on a CPU.
  All three use dlib's 5-point landmark model (shipped with the CNN by the `face-recognition-models` wheel;
  Davis King's own annotations, released into the public domain). Its points (eye corners, base of the nose)
  are mapped to the reference's three points by a fixed linear rule, see `points3_from_dlib5`.
- "insightface": the reference's own models (buffalo_l `det_10g.onnx` + `2d106det.onnx`) through onnxruntime,
  from a folder the user provides; see `insightface.py`.

`detect_faces` picks one face (largest, by index or by position), keeps following it from frame to frame,
and marks frames without a usable face so they pass through later stages unchanged.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from ..core.options import Option
from ..core.threads import single_threaded
from ..media.shots import ShotDetector
from .dlib_models import (BROW_ALONG, BROW_DOWN, HOG_SURE, NOSE_DOWN, AutoFaceDetector,  # noqa: F401
                          DlibCnnFaceDetector, DlibFaceDetector, _face_recognition_model, points3_from_dlib5)
from .insightface import THRESHOLD as INSIGHTFACE_THRESHOLD, InsightFaceDetector
from .smooth import SMOOTHING, LandmarkSmoother
from .types import DetectedFace, FaceDetector, FaceModelMissing, FaceTrack, iou  # noqa: F401 (re-exported)
from .warp import Frames, frame_to_rgb_uint8

SELECTIONS = ("largest", "index", "position")
DETECTORS = ("auto", "dlib", "dlib-cnn", "insightface")

# What a user sets to choose the face (the nodes' inputs, the `faces`/`lipsync` flags; core/options.py).
DETECTOR = Option("detector", "auto", "auto: HOG, CNN where HOG fails; dlib: HOG, fastest; dlib-cnn: hard faces, "
                  "slow; insightface: buffalo_l.", choices=DETECTORS)
SELECT = Option("select", "largest", "Which face to follow: the largest, the index-th from the left, or the one "
                "nearest a position.", choices=SELECTIONS)
INDEX = Option("index", 0, "select=index: 0 is the leftmost face.", 0, 32)
POSITION_X = Option("position_x", 0.5, "select=position: horizontal position as a fraction of the width.", 0.0, 1.0,
                    step=0.01)
POSITION_Y = Option("position_y", 0.4, "select=position: vertical position as a fraction of the height.", 0.0, 1.0,
                    step=0.01)
# The threshold means each detector's own score: dlib's HOG score (0 by default; below 0 finds more faces, and
# more false ones), the HOG score auto takes without the CNN's look, the CNN's confidence, and insightface's
# probability (`insightface.THRESHOLD`).
DLIB_THRESHOLD = Option("threshold", 0.0, "dlib's HOG score a detection must reach; higher ignores faint faces, "
                        "below 0 finds more (and more false ones).", -1.0, 5.0, step=0.05)
AUTO_THRESHOLD = Option("threshold", HOG_SURE, "auto: the HOG score taken without the CNN's check; lower is faster, "
                        "higher asks the CNN more.", -1.0, 5.0, step=0.05)
CNN_THRESHOLD = Option("threshold", 0.0, "dlib-cnn: the CNN's confidence a face must reach (true faces score about "
                       "1).", 0.0, 5.0, step=0.05)
THRESHOLDS = {"auto": AUTO_THRESHOLD, "dlib": DLIB_THRESHOLD, "dlib-cnn": CNN_THRESHOLD,
              "insightface": INSIGHTFACE_THRESHOLD}
# As the node and the flag take it: one number for any detector, with -1 for the detector's own default.
DEFAULT_THRESHOLD = -1.0
THRESHOLD = Option("threshold", DEFAULT_THRESHOLD,
                   f"{DEFAULT_THRESHOLD:g}: the detector's own threshold (auto {AUTO_THRESHOLD.default:g}, dlib "
                   f"{DLIB_THRESHOLD.default:g}, dlib-cnn {CNN_THRESHOLD.default:g}, insightface "
                   f"{INSIGHTFACE_THRESHOLD.default:g}); higher: fewer faces.",
                   DLIB_THRESHOLD.low, DLIB_THRESHOLD.high, step=0.05)
FACE_OPTIONS = (DETECTOR, SELECT, INDEX, POSITION_X, POSITION_Y, THRESHOLD, SMOOTHING)  # the nodes' order

Progress = Callable[[int, int], None]


def detector_threshold(threshold: float | None) -> float | None:
    """The threshold a user gave (`THRESHOLD`: -1 or None is the detector's default) as `make_detector` takes it."""
    return None if threshold is None or threshold == DEFAULT_THRESHOLD else THRESHOLD.check(threshold)


def make_detector(name: str = DETECTOR.default, threshold: float | None = None, **options) -> FaceDetector:
    """A detector by name (see `DETECTORS`); `options` go to its constructor (e.g. `models_dir` for insightface).
    `threshold` (None: the detector's default) is checked against that detector's meaning (`THRESHOLDS`): a NaN
    would pass no face and look like a clip without faces."""
    DETECTOR.check(name, "the face detector")
    if threshold is not None:
        THRESHOLDS[name].check(threshold, f"the {name} face threshold")
    kinds = {"auto": AutoFaceDetector, "dlib": DlibFaceDetector, "dlib-cnn": DlibCnnFaceDetector,
             "insightface": InsightFaceDetector}
    return kinds[name](threshold=threshold, **options)


def selection_problem(select: str, index: int = 0, position: tuple[float, float] | None = None) -> str | None:
    """What is wrong with a face selection (against `SELECT`, `INDEX`, `POSITION_X`/`POSITION_Y`), or None.
    Checked before any frame is read: a NaN position or a negative index would otherwise match no face in any
    frame and look like a clip without faces."""
    if select not in SELECTIONS:
        return f"unknown face selection {select!r}; choose one of {', '.join(SELECTIONS)}"
    problem = INDEX.problem(int(index) if isinstance(index, np.integer) else index)
    if problem:
        return f"face index {problem} (0 is the leftmost face)"
    if position is not None:
        if isinstance(position, (str, bytes)) or not hasattr(position, "__len__") or len(position) != 2:
            return f"face position must be (x, y) fractions of the frame, got {position!r}"
        x, y = (float(v) if isinstance(v, np.floating) else v for v in position)
        problem = POSITION_X.problem(x) or POSITION_Y.problem(y)
        if problem:
            return f"face position must be (x, y) fractions of the frame from 0 to 1, got {position!r}"
    return None


def check_selection(select: str, index: int = 0, position: tuple[float, float] | None = None) -> None:
    """Raise ValueError if the face selection cannot work (see `selection_problem`)."""
    problem = selection_problem(select, index, position)
    if problem:
        raise ValueError(problem)


def choose_face(faces: list[DetectedFace], select: str, index: int, position: tuple[float, float] | None,
                frame_hw: tuple[int, int]) -> DetectedFace | None:
    """Apply the selection rule to one frame's faces (no tracking); None if the frame has no such face."""
    check_selection(select, index, position)
    if not faces:
        return None
    if select == "largest":
        return max(faces, key=lambda f: f.area)
    if select == "index":  # faces counted left to right, by box centre
        ordered = sorted(faces, key=lambda f: f.centre[0])
        return ordered[index] if index < len(ordered) else None
    px, py = position if position is not None else (POSITION_X.default, POSITION_Y.default)
    x, y = px * frame_hw[1], py * frame_hw[0]
    inside = [f for f in faces if f.box[0] <= x <= f.box[2] and f.box[1] <= y <= f.box[3]]
    pool = inside or faces
    return min(pool, key=lambda f: (f.centre[0] - x) ** 2 + (f.centre[1] - y) ** 2)


def _usable(face: DetectedFace) -> bool:
    return face.points3 is not None and bool(np.isfinite(face.points3).all())


class FaceTracker:
    """Follows one face through frames given one at a time (see `detect_faces` for the rules).

    With `smoothing`, the face's points are steadied from frame to frame (`smooth.LandmarkSmoother`; the box
    stays as detected), starting afresh after a hard cut (`media.shots.ShotDetector`, fed every frame; a cut to
    frames without the face counts when the face comes back) and when the face is chosen anew rather than
    followed. A face followed across a few frames without it (a blink of the detector) keeps its filter."""

    def __init__(self, detector: FaceDetector, select: str = "largest", index: int = 0,
                 position: tuple[float, float] | None = None, max_track_gap: int = 25,
                 smoothing: bool = True) -> None:
        check_selection(select, index, position)
        self.detector, self.select, self.index, self.position = detector, select, index, position
        self.max_track_gap = max_track_gap
        self._last_box, self._last_seen, self._frame = None, -1, -1
        self._smoother = LandmarkSmoother() if smoothing else None
        self._shots = ShotDetector() if smoothing else None
        self._cut = False  # a cut seen since the last face

    def step(self, frame: Frames) -> DetectedFace | None:
        """The tracked face in the next frame (`[H, W, C]`), or None."""
        self._frame += 1
        rgb = frame_to_rgb_uint8(frame)
        if self._shots is not None:
            with single_threaded():  # a 256 px thumbnail: 2.5 instead of 8 ms a 1080p frame on 2 cores
                self._cut = self._shots.add(rgb) or self._cut
        chosen = None
        tracking = self._last_box is not None and self._frame - self._last_seen <= self.max_track_gap
        if tracking:
            nearby = [f for f in self.detector.detect(rgb, around=self._last_box) if _usable(f)]
            chosen = _best_overlap(nearby, self._last_box, minimum=0.2)
        if chosen is None:
            faces = [f for f in self.detector.detect(rgb) if _usable(f)]
            if tracking:
                chosen = _best_overlap(faces, self._last_box, minimum=0.2)
        followed = chosen is not None
        if chosen is None:
            chosen = choose_face(faces, self.select, self.index, self.position, rgb.shape[:2])
        if chosen is None:
            return None
        if self._smoother is not None:
            if self._cut or not followed:  # a new shot or a new face
                self._smoother.reset()
            self._cut = False
            chosen = replace(chosen, points3=self._smoother(chosen.points3))
        self._last_box, self._last_seen = chosen.box, self._frame
        return chosen


def track_from_faces(faces: Sequence[DetectedFace | None], frame_hw: tuple[int, int], detector: str = "") -> FaceTrack:
    """A `FaceTrack` from one face (or None) per frame."""
    count = len(faces)
    boxes = np.full((count, 4), np.nan)
    points3 = np.full((count, 3, 2), np.nan, np.float32)
    scores = np.full(count, np.nan, np.float32)
    for i, face in enumerate(faces):
        if face is not None:
            boxes[i], points3[i], scores[i] = face.box, face.points3, face.score
    return FaceTrack(boxes=boxes, points3=points3, scores=scores, valid=np.isfinite(boxes).all(axis=1),
                     frame_hw=(int(frame_hw[0]), int(frame_hw[1])), detector=detector)


def detect_faces(frames: Frames, detector: str | FaceDetector = DETECTOR.default, select: str = "largest", index: int = 0,
                 position: tuple[float, float] | None = None, threshold: float | None = None,
                 max_track_gap: int = 25, progress: Progress | None = None, smoothing: bool = True,
                 **detector_options) -> FaceTrack:
    """Find the chosen face in every frame of `[N, H, W, C]` frames (C = 1, 3 or 4; uint8 or float 0-1).

    `select`: "largest" (default, as the reference), "index" (`index`-th face from the left) or "position"
    (the face at or nearest `position`, `(x, y)` as fractions of the frame). Once chosen, the face is
    followed: the next frame takes the face overlapping the last box most, even after up to `max_track_gap`
    frames without it; the rule chooses anew only when the tracked face is gone. `threshold` is the
    detector's score threshold (dlib HOG score, default 0; insightface probability, default 0.5). `smoothing`
    steadies the points from frame to frame, anew at each cut (see `FaceTracker`); off, they are the detector's.
    """
    if getattr(frames, "ndim", 0) != 4:
        raise ValueError(f"expected frames shaped [N, H, W, C], got {tuple(getattr(frames, 'shape', ()))}")
    check_selection(select, index, position)  # before a detector's models load
    engine = make_detector(detector, threshold, **detector_options) if isinstance(detector, str) else detector
    tracker = FaceTracker(engine, select, index, position, max_track_gap, smoothing)
    faces = []
    for i in range(len(frames)):
        faces.append(tracker.step(frames[i]))
        if progress is not None:
            progress(i + 1, len(frames))
    return track_from_faces(faces, tuple(frames.shape[1:3]), getattr(engine, "name", type(engine).__name__))


def _best_overlap(faces: list[DetectedFace], box, minimum: float) -> DetectedFace | None:
    best = max(faces, key=lambda f: iou(f.box, box), default=None)
    return best if best is not None and iou(best.box, box) >= minimum else None
