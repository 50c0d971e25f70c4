"""Face detection and tracking: one face per frame, as the three points the alignment needs.

The reference aligns on three points from InsightFace's 106 landmarks: the centres of the two eyebrows
(image-left first) and the nose centre. Detectors are pluggable (`FaceDetector`):

- "dlib" (default, offline): dlib's HOG face detector (built into dlib) and dlib's 5-point landmark model
  (shipped by the `face-recognition-models` wheel; Davis King's own annotations, released into the public
  domain). Its points (eye corners, base of the nose) are mapped to the reference's three points by a fixed
  linear rule, see `points3_from_dlib5`.
- "insightface": the reference's own models (buffalo_l `det_10g.onnx` + `2d106det.onnx`) through onnxruntime,
  from a folder the user provides; see `insightface.py`.

`detect_faces` picks one face (largest, by index or by position), keeps following it from frame to frame,
and marks frames without a usable face so they pass through later stages unchanged.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from ..core.options import Option
from .insightface import THRESHOLD as INSIGHTFACE_THRESHOLD, InsightFaceDetector
from .types import DetectedFace, FaceDetector, FaceModelMissing, FaceTrack  # noqa: F401 (re-exported)
from .warp import Frames, frame_to_rgb_uint8

SELECTIONS = ("largest", "index", "position")
DETECTORS = ("dlib", "insightface")

# What a user sets to choose the face (the nodes' inputs, the `faces`/`lipsync` flags; core/options.py).
DETECTOR = Option("detector", "dlib", "dlib: offline, ships with the pack; insightface: the reference's buffalo_l "
                  "(non-commercial).", choices=DETECTORS)
SELECT = Option("select", "largest", "Which face to follow: the largest, the index-th from the left, or the one "
                "nearest a position.", choices=SELECTIONS)
INDEX = Option("index", 0, "select=index: 0 is the leftmost face.", 0, 32)
POSITION_X = Option("position_x", 0.5, "select=position: horizontal position as a fraction of the width.", 0.0, 1.0,
                    step=0.01)
POSITION_Y = Option("position_y", 0.4, "select=position: vertical position as a fraction of the height.", 0.0, 1.0,
                    step=0.01)
# The threshold means each detector's own score: dlib's HOG score (0 by default; below 0 finds more faces, and
# more false ones) and insightface's probability (`insightface.THRESHOLD`).
DLIB_THRESHOLD = Option("threshold", 0.0, "dlib's HOG score a detection must reach; higher ignores faint faces, "
                        "below 0 finds more (and more false ones).", -1.0, 5.0, step=0.05)
THRESHOLDS = {"dlib": DLIB_THRESHOLD, "insightface": INSIGHTFACE_THRESHOLD}
# As the node and the flag take it: one number for either detector, with -1 for the detector's own default.
DEFAULT_THRESHOLD = -1.0
THRESHOLD = Option("threshold", DEFAULT_THRESHOLD,
                   f"Detection threshold; {DEFAULT_THRESHOLD:g}: the detector's default (dlib "
                   f"{DLIB_THRESHOLD.default:g}, insightface {INSIGHTFACE_THRESHOLD.default:g}); higher skips faint "
                   "faces.", DLIB_THRESHOLD.low, DLIB_THRESHOLD.high, step=0.05)
FACE_OPTIONS = (DETECTOR, SELECT, INDEX, POSITION_X, POSITION_Y, THRESHOLD)  # the nodes' order

Progress = Callable[[int, int], None]


# dlib's 5-point model: 0-1 corners of the image-right eye (outer, inner), 2-3 of the image-left eye
# (outer, inner), 4 the base of the nose.
# The reference's points are not among them, so each is placed in the face's own frame: along the
# eye-to-eye vector E and the eye-midpoint-to-nose-base vector D, which follow the face's size, roll and
# (roughly) pitch. Brow centre = eye centre + BROW_ALONG * E (towards the other eye) + BROW_DOWN * D; nose centre = eye
# midpoint + NOSE_DOWN * D. Fitted by least squares to the centroids of dlib's 68-point brows and nose on the
# shared clips (see bench/face.py --calibrate); the 68-point model itself is not used, as its training data
# forbids commercial use.
BROW_ALONG = -0.07  # a little outward of the eye centre
BROW_DOWN = -0.61
NOSE_DOWN = 0.61


def points3_from_dlib5(points5: np.ndarray) -> np.ndarray:
    """The reference's three alignment points `[3, 2]` from dlib's five."""
    p = np.asarray(points5, np.float64)
    left_eye, right_eye = p[2:4].mean(axis=0), p[0:2].mean(axis=0)
    eyes = right_eye - left_eye
    middle = (left_eye + right_eye) / 2
    down = p[4] - middle
    left_brow = left_eye + BROW_ALONG * eyes + BROW_DOWN * down
    right_brow = right_eye - BROW_ALONG * eyes + BROW_DOWN * down
    nose = middle + NOSE_DOWN * down
    return np.stack([left_brow, right_brow, nose]).astype(np.float32)


def _face_recognition_model(name: str) -> Path:
    # find_spec locates the package without running its __init__ (which needs setuptools' pkg_resources).
    spec = importlib.util.find_spec("face_recognition_models")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    raise FaceModelMissing(f"dlib's model {name} was not found (searched: {folders or 'no '}"
                           f"face_recognition_models package); install it with: pip install "
                           f"face-recognition-models==0.3.0")


class DlibFaceDetector:
    """dlib HOG faces on a downscaled frame, 5-point landmarks at full resolution.

    A full-frame search runs on the frame reduced to `detect_size` px on its long side (HOG finds faces of
    80 px and up there: 160 px in a 1080x1920 frame); while a face is tracked, only a
    region around its last box is searched, scaled so that the face is about `track_face_px` wide, which is
    several times cheaper. `threshold` is the HOG score (dlib's default 0; higher = stricter); `upsample`
    doubles the full-frame search image that many times, to find smaller faces at a higher cost.
    """

    name = "dlib"

    def __init__(self, threshold: float | None = None, detect_size: int = 960, upsample: int = 0,
                 track_face_px: int = 110) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise ImportError("the dlib face detector needs dlib: pip install dlib-bin") from exc
        self._dlib = dlib
        self._hog = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(str(_face_recognition_model("shape_predictor_5_face_landmarks.dat")))
        self.threshold = 0.0 if threshold is None else float(threshold)
        self.detect_size = int(detect_size)
        self.upsample = int(upsample)
        self.track_face_px = int(track_face_px)

    def detect(self, frame: np.ndarray, around: tuple[float, float, float, float] | None = None) -> list[DetectedFace]:
        height, width = frame.shape[:2]
        if around is None:
            x0, y0, x1, y1 = 0, 0, width, height
            scale = min(1.0, self.detect_size / max(height, width))
        else:
            size = max(around[2] - around[0], around[3] - around[1], 1.0)
            x0, y0 = max(int(around[0] - 0.7 * size), 0), max(int(around[1] - 0.7 * size), 0)
            x1, y1 = min(int(around[2] + 0.7 * size) + 1, width), min(int(around[3] + 0.7 * size) + 1, height)
            scale = min(self.track_face_px / size, 2.0)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return []
        region = _resized(frame[y0:y1, x0:x1], scale)
        rects, scores, _ = self._hog.run(region, self.upsample, self.threshold)
        faces = []
        for rect, score in zip(rects, scores):
            box = (x0 + rect.left() / scale, y0 + rect.top() / scale,
                   x0 + (rect.right() + 1) / scale, y0 + (rect.bottom() + 1) / scale)
            faces.append(DetectedFace(box=box, score=float(score), points3=self._points3(frame, box)))
        return faces

    def landmark_shape(self, frame: np.ndarray,
                       box: tuple[float, float, float, float]) -> tuple[np.ndarray, object, tuple[int, int]]:
        """dlib's 5-point `full_object_detection` of the face in `box`, found on a cut-out of `frame` around it:
        `(cut-out, shape in cut-out pixels, (x0, y0) of the cut-out in the frame)`. The face descriptor
        (`describe.FaceDescriber`) reads the same cut-out and shape."""
        # The shape predictor samples pixels near the face only; a cut-out keeps it from touching the frame.
        height, width = frame.shape[:2]
        size = max(box[2] - box[0], box[3] - box[1])
        x0, y0 = max(int(box[0] - size), 0), max(int(box[1] - size), 0)
        x1, y1 = min(int(box[2] + size) + 1, width), min(int(box[3] + size) + 1, height)
        region = np.ascontiguousarray(frame[y0:y1, x0:x1])
        rect = self._dlib.rectangle(int(round(box[0])) - x0, int(round(box[1])) - y0,
                                    int(round(box[2])) - 1 - x0, int(round(box[3])) - 1 - y0)
        return region, self._landmarks(region, rect), (x0, y0)

    def _points3(self, frame: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        _, shape, (x0, y0) = self.landmark_shape(frame, box)
        points = np.array([(p.x + x0, p.y + y0) for p in shape.parts()], np.float64)
        return points3_from_dlib5(points)


def _resized(image: np.ndarray, scale: float) -> np.ndarray:
    """`image` scaled by `scale`: PIL's box reduction for whole factors (fast, no aliasing), else bilinear."""
    if abs(scale - 1.0) < 1e-6:
        return np.ascontiguousarray(image)
    picture = Image.fromarray(np.ascontiguousarray(image))
    factor = 1.0 / scale
    if scale < 1 and abs(factor - round(factor)) < 1e-6:
        return np.asarray(picture.reduce(int(round(factor))))
    size = (max(int(round(image.shape[1] * scale)), 1), max(int(round(image.shape[0] * scale)), 1))
    return np.asarray(picture.resize(size, Image.BILINEAR))


def detector_threshold(threshold: float | None) -> float | None:
    """The threshold a user gave (`THRESHOLD`: -1 or None is the detector's default) as `make_detector` takes it."""
    return None if threshold is None or threshold == DEFAULT_THRESHOLD else THRESHOLD.check(threshold)


def make_detector(name: str = "dlib", threshold: float | None = None, **options) -> FaceDetector:
    """A detector by name (see `DETECTORS`); `options` go to its constructor (e.g. `models_dir` for insightface).
    `threshold` (None: the detector's default) is checked against that detector's meaning (`THRESHOLDS`): a NaN
    would pass no face and look like a clip without faces."""
    DETECTOR.check(name, "the face detector")
    if threshold is not None:
        THRESHOLDS[name].check(threshold, f"the {name} face threshold")
    if name == "dlib":
        return DlibFaceDetector(threshold=threshold, **options)
    return InsightFaceDetector(threshold=threshold, **options)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two `(x1, y1, x2, y2)` boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


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
    """Follows one face through frames given one at a time (see `detect_faces` for the rules)."""

    def __init__(self, detector: FaceDetector, select: str = "largest", index: int = 0,
                 position: tuple[float, float] | None = None, max_track_gap: int = 25) -> None:
        check_selection(select, index, position)
        self.detector, self.select, self.index, self.position = detector, select, index, position
        self.max_track_gap = max_track_gap
        self._last_box, self._last_seen, self._frame = None, -1, -1

    def step(self, frame: Frames) -> DetectedFace | None:
        """The tracked face in the next frame (`[H, W, C]`), or None."""
        self._frame += 1
        rgb = frame_to_rgb_uint8(frame)
        chosen = None
        tracking = self._last_box is not None and self._frame - self._last_seen <= self.max_track_gap
        if tracking:
            nearby = [f for f in self.detector.detect(rgb, around=self._last_box) if _usable(f)]
            chosen = _best_overlap(nearby, self._last_box, minimum=0.2)
        if chosen is None:
            faces = [f for f in self.detector.detect(rgb) if _usable(f)]
            if tracking:
                chosen = _best_overlap(faces, self._last_box, minimum=0.2)
            if chosen is None:
                chosen = choose_face(faces, self.select, self.index, self.position, rgb.shape[:2])
        if chosen is not None:
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


def detect_faces(frames: Frames, detector: str | FaceDetector = "dlib", select: str = "largest", index: int = 0,
                 position: tuple[float, float] | None = None, threshold: float | None = None,
                 max_track_gap: int = 25, progress: Progress | None = None, **detector_options) -> FaceTrack:
    """Find the chosen face in every frame of `[N, H, W, C]` frames (C = 1, 3 or 4; uint8 or float 0-1).

    `select`: "largest" (default, as the reference), "index" (`index`-th face from the left) or "position"
    (the face at or nearest `position`, `(x, y)` as fractions of the frame). Once chosen, the face is
    followed: the next frame takes the face overlapping the last box most, even after up to `max_track_gap`
    frames without it; the rule chooses anew only when the tracked face is gone. `threshold` is the
    detector's score threshold (dlib HOG score, default 0; insightface probability, default 0.5).
    """
    if getattr(frames, "ndim", 0) != 4:
        raise ValueError(f"expected frames shaped [N, H, W, C], got {tuple(getattr(frames, 'shape', ()))}")
    check_selection(select, index, position)  # before a detector's models load
    engine = make_detector(detector, threshold, **detector_options) if isinstance(detector, str) else detector
    tracker = FaceTracker(engine, select, index, position, max_track_gap)
    faces = []
    for i in range(len(frames)):
        faces.append(tracker.step(frames[i]))
        if progress is not None:
            progress(i + 1, len(frames))
    return track_from_faces(faces, tuple(frames.shape[1:3]), getattr(engine, "name", type(engine).__name__))


def _best_overlap(faces: list[DetectedFace], box, minimum: float) -> DetectedFace | None:
    best = max(faces, key=lambda f: iou(f.box, box), default=None)
    return best if best is not None and iou(best.box, box) >= minimum else None
