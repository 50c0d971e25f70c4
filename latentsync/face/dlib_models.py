"""dlib's face models, offline from the `face-recognition-models` wheel: the HOG detector (built into dlib),
the CNN (MMOD) detector, the 5-point landmarks, and `auto`, which runs HOG where it is confident and the CNN
where HOG finds nothing or is unsure."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from .types import DetectedFace, FaceModelMissing, iou

CNN_MODEL = "mmod_human_face_detector.dat"

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


HOG_TRACK_PX = 110  # the face's width in the region searched around a tracked face (HOG's window is 80 px)


def _search_region(around, width: int, height: int, margin: float = 0.7) -> tuple[int, int, int, int, float]:
    """The part of a frame searched for a face last seen in `around`: the box grown by `margin` of its size on
    each side, clipped to the frame, and the box's size."""
    size = max(around[2] - around[0], around[3] - around[1], 1.0)
    x0, y0 = max(int(around[0] - margin * size), 0), max(int(around[1] - margin * size), 0)
    x1 = min(int(around[2] + margin * size) + 1, width)
    y1 = min(int(around[3] + margin * size) + 1, height)
    return x0, y0, x1, y1, size


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
                 track_face_px: int = HOG_TRACK_PX) -> None:
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
            found = self.hog_boxes(frame, (0, 0, width, height), min(1.0, self.detect_size / max(height, width)),
                                   self.threshold, self.upsample)
        else:
            x0, y0, x1, y1, size = _search_region(around, width, height)
            found = self.hog_boxes(frame, (x0, y0, x1, y1), min(self.track_face_px / size, 2.0), self.threshold)
        return [self.face(frame, box, score) for box, score in found]

    def hog_boxes(self, frame: np.ndarray, region: tuple[int, int, int, int], scale: float, threshold: float,
                  upsample: int = 0) -> list[tuple[tuple[float, float, float, float], float]]:
        """HOG's `(box, score)`s in `region` `(x0, y0, x1, y1)` of `frame`, searched at `scale`, in frame pixels."""
        x0, y0, x1, y1 = region
        if x1 - x0 < 8 or y1 - y0 < 8:
            return []
        rects, scores, _ = self._hog.run(_resized(frame[y0:y1, x0:x1], scale), upsample, threshold)
        return [((x0 + r.left() / scale, y0 + r.top() / scale, x0 + (r.right() + 1) / scale,
                  y0 + (r.bottom() + 1) / scale), float(score)) for r, score in zip(rects, scores)]

    def face(self, frame: np.ndarray, box: tuple[float, float, float, float], score: float) -> DetectedFace:
        """The face in `box` with its alignment points (from the 5-point landmarks)."""
        return DetectedFace(box=box, score=score, points3=self._points3(frame, box))

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


# The CNN's boxes sit higher and are a little smaller than HOG's for the same face. They are moved onto HOG's
# (centre + CNN_SHIFT * size, size * CNN_GROW), so that the landmarks, the tracker and every later stage see one
# kind of box whichever detector found the face. Mean over 23 frames of the shared clips where both found it
# (spread 0.05-0.1 of the size).
CNN_SHIFT = (0.04, 0.09)
CNN_GROW = 1.04


class DlibCnnFaceDetector(DlibFaceDetector):
    """dlib's CNN face detector (MMOD, `mmod_human_face_detector.dat`): finds turned, covered, dark and blurred
    faces HOG misses, at about 4 µs a pixel on a CPU core (2 s for a 960x540 frame); while a face is tracked,
    only the region around it is searched, with the face scaled to `track_face_px` (0.1-0.2 s). `threshold` is
    its confidence (default 0; true faces score about 1). Boxes are moved onto HOG's (`CNN_SHIFT`)."""

    name = "dlib-cnn"

    def __init__(self, threshold: float | None = None, detect_size: int = 960, track_face_px: int = 100) -> None:
        super().__init__(None, detect_size, 0, track_face_px)
        self._cnn = self._dlib.cnn_face_detection_model_v1(str(_face_recognition_model(CNN_MODEL)))
        self.threshold = 0.0 if threshold is None else float(threshold)

    def detect(self, frame: np.ndarray, around: tuple[float, float, float, float] | None = None) -> list[DetectedFace]:
        height, width = frame.shape[:2]
        if around is None:
            found = self.cnn_boxes(frame, (0, 0, width, height), min(1.0, self.detect_size / max(height, width)))
        else:
            found = self.cnn_near(frame, around)
        return [self.face(frame, box, score) for box, score in found]

    def cnn_near(self, frame: np.ndarray, around) -> list[tuple[tuple[float, float, float, float], float]]:
        """The CNN's faces near the box `around`, the face scaled to `track_face_px`."""
        x0, y0, x1, y1, size = _search_region(around, frame.shape[1], frame.shape[0])
        return self.cnn_boxes(frame, (x0, y0, x1, y1), min(self.track_face_px / size, 4.0))

    def cnn_boxes(self, frame: np.ndarray, region: tuple[int, int, int, int],
                  scale: float) -> list[tuple[tuple[float, float, float, float], float]]:
        """The CNN's `(box, confidence)`s at or above the threshold in `region` of `frame`, searched at `scale`,
        as HOG boxes in frame pixels."""
        x0, y0, x1, y1 = region
        if x1 - x0 < 8 or y1 - y0 < 8:
            return []
        found = []
        for hit in self._cnn(_resized(frame[y0:y1, x0:x1], scale), 0):
            if hit.confidence < self.threshold:
                continue
            r = hit.rect
            size = (r.right() + 1 - r.left()) / scale * CNN_GROW
            cx = x0 + (r.left() + r.right() + 1) / 2 / scale + CNN_SHIFT[0] * size
            cy = y0 + (r.top() + r.bottom() + 1) / 2 / scale + CNN_SHIFT[1] * size
            found.append(((cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2), float(hit.confidence)))
        return found


# auto: what HOG must score to be taken without the CNN's look (its own threshold, 0, admits more false faces);
# the weakest HOG candidate worth the CNN's look, and how many (best first) a search asks about; the most pixels
# the small-face HOG pass may cost (a 1080p frame at twice its size: about 0.5 s) and the whole-frame CNN pass
# (1.5 MP: about 6 s on a CPU core; at most 1.25x, where 48 px faces reach the CNN's 60); after a search whose
# costly passes found nothing, how many full-frame searches skip them (doubling after each such search, up to
# the most): a stretch without any face costs one CNN search every few dozen frames, not every frame.
HOG_SURE = 0.5
HOG_CANDIDATE = -0.5
MAX_CHECKS = 4
SMALL_FACE_PIXELS = 8.5e6
CNN_PIXELS, CNN_UPSCALE = 1.5e6, 1.25
RETRY_AFTER = (4, 50)


class AutoFaceDetector(DlibCnnFaceDetector):
    """HOG where it is sure, the CNN where HOG finds nothing or is unsure (the default, offline).

    Near a tracked face: HOG's sure faces, else the CNN in the same region. A full-frame search: HOG on the
    frame at `detect_size`; faces it is unsure of are checked by the CNN around them; with none, a second HOG
    pass for small faces (the frame doubled, up to `SMALL_FACE_PIXELS`: 40 px faces), whose faces the CNN
    confirms; with none still, the CNN on the whole frame (`CNN_PIXELS`). After costly passes that found
    nothing, the next few full-frame searches (`RETRY_AFTER`, growing) are HOG's alone. `threshold` is HOG's
    sure score."""

    name = "auto"

    def __init__(self, threshold: float | None = None, detect_size: int = 960, track_face_px: int = 100) -> None:
        super().__init__(None, detect_size, track_face_px)
        self.threshold = HOG_SURE if threshold is None else float(threshold)  # HOG's sure score
        self._skip = self._wait = 0  # full-frame searches to go without the costly passes; the last wait

    def detect(self, frame: np.ndarray, around: tuple[float, float, float, float] | None = None) -> list[DetectedFace]:
        height, width = frame.shape[:2]
        if around is not None:
            x0, y0, x1, y1, size = _search_region(around, width, height)
            found = self.hog_boxes(frame, (x0, y0, x1, y1), min(HOG_TRACK_PX / size, 4.0), self.threshold)
            found = found or self._cnn_checked(frame, [(around, 0.0)])
            return [self.face(frame, box, score) for box, score in found]
        found = self._full_frame(frame, min(1.0, self.detect_size / max(height, width)))
        if not found and self._skip <= 0:
            scale = min(2.0, (SMALL_FACE_PIXELS / (height * width)) ** 0.5)
            found = self._full_frame(frame, scale, small=True) if scale > 1.0 else []
            scale = min(CNN_UPSCALE, (CNN_PIXELS / (height * width)) ** 0.5)
            found = found or self.cnn_boxes(frame, (0, 0, width, height), scale)
            self._wait = 0 if found else min(max(2 * self._wait, RETRY_AFTER[0]), RETRY_AFTER[1])
            self._skip = self._wait
        elif found:
            self._skip = self._wait = 0
        else:
            self._skip -= 1
        return [self.face(frame, box, score) for box, score in found]

    def _full_frame(self, frame: np.ndarray, scale: float, small: bool = False):
        height, width = frame.shape[:2]
        candidates = self.hog_boxes(frame, (0, 0, width, height), scale, min(HOG_CANDIDATE, self.threshold))
        sure = [c for c in candidates if c[1] >= self.threshold and not small]
        return sure or self._cnn_checked(frame, candidates)

    def _cnn_checked(self, frame: np.ndarray, candidates):
        """The CNN's faces around each candidate box (each found once)."""
        found = []
        for box, _ in sorted(candidates, key=lambda c: -c[1])[:MAX_CHECKS]:
            for hit in self.cnn_near(frame, box):
                if all(iou(hit[0], kept[0]) < 0.5 for kept in found):
                    found.append(hit)
        return found


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
