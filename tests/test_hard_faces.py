"""The `auto` detector on hard faces made from the shared clip (bench/faces_hard.py's cases): small, rolled,
dim and covered faces that HOG alone misses, found where the truth is (HOG's sure face on the untouched frame,
moved by the same geometry); CNN boxes in HOG's place; a frame without a face costs the slow passes only now
and then, and passes through unchanged."""
from __future__ import annotations

import numpy as np
import pytest

from bench.faces_hard import Truth, cases
from conftest import shared_path
from latentsync.face import dlib_models
from latentsync.face.detect import FaceTracker, detect_faces, iou, make_detector
from latentsync.media.video import decode_frames


@pytest.fixture(scope="module")
def source() -> tuple[np.ndarray, Truth]:
    frames, _, _ = decode_frames(shared_path("media/latentsync_demo1_video.mp4"))
    frame = next(iter(frames))
    face = max(make_detector("dlib").detect(frame), key=lambda f: f.score)
    assert face.score > 0.8
    return frame, Truth(np.array(face.box), face.points3)


@pytest.fixture(scope="module")
def detectors() -> dict:
    return {name: make_detector(name) for name in ("dlib", "auto", "dlib-cnn")}


def hard_frame(source, family: str, name: str, face_px: int):
    case = next(c for c in cases((face_px,)) if (c.family, c.name) == (family, name) and c.face_px == face_px)
    return case.make(*source, 0)


def found(detector, image: np.ndarray, truth: Truth):
    """The face a fresh tracker takes in `image` if it is the true one (IoU >= 0.5), else None."""
    face = FaceTracker(detector, smoothing=False).step(image)
    return face if face is not None and iou(face.box, truth.box) >= 0.5 else None


@pytest.mark.parametrize("family, name, face_px", [("size", "48px", 48), ("roll", "+30°", 64),
                                                   ("light", "dim", 64), ("cover", "upper", 120)])
def test_auto_finds_faces_hog_misses(source, detectors, family, name, face_px):
    image, truth = hard_frame(source, family, name, face_px)
    assert found(detectors["dlib"], image, truth) is None  # the case is hard for HOG alone
    face = found(detectors["auto"], image, truth)
    assert face is not None, f"auto missed the {family} {name} face"
    error = np.linalg.norm(face.points3 - truth.points3, axis=1).mean() / truth.eye_distance
    assert error < 0.15, f"alignment points {error:.3f} eye distances off"


def test_auto_is_hog_on_a_clear_face(source, detectors):
    """Where HOG is sure, auto returns HOG's face as is (no CNN look, same box and points)."""
    frame, _ = source
    hog = max(detectors["dlib"].detect(frame), key=lambda f: f.score)
    auto = detectors["auto"].detect(frame)
    assert len(auto) == 1 and auto[0].box == hog.box
    np.testing.assert_array_equal(auto[0].points3, hog.points3)


def test_cnn_boxes_sit_where_hog_boxes_do(source, detectors):
    """The CNN's boxes are moved onto HOG's (`CNN_SHIFT`, `CNN_GROW`), so the landmarks and the tracker see one
    kind of box whichever detector found the face."""
    image, truth = hard_frame(source, "grey", "grey", 120)
    hog = max(detectors["dlib"].detect(image), key=lambda f: f.score)
    cnn = detectors["dlib-cnn"].detect(image)
    assert len(cnn) == 1 and iou(cnn[0].box, hog.box) >= 0.75, (cnn, hog.box)
    error = np.linalg.norm(cnn[0].points3 - hog.points3, axis=1).mean() / truth.eye_distance
    assert error < 0.05


def test_a_faceless_stretch_runs_the_slow_passes_only_now_and_then(source, monkeypatch):
    """Full-frame searches that find nothing: the CNN looks at the whole frame on the first, then waits longer
    and longer (`RETRY_AFTER`); a face found again resets the wait. The frames pass through unchanged."""
    detector = make_detector("auto")
    looks = []
    original = detector.cnn_boxes
    monkeypatch.setattr(detector, "cnn_boxes", lambda *a: looks.append(a[2]) or original(*a))
    empty = np.full((360, 640, 3), 90, np.uint8)
    for _ in range(30):
        assert detector.detect(empty) == []
    first, second = dlib_models.RETRY_AFTER[0], 2 * dlib_models.RETRY_AFTER[0]
    assert len(looks) == 1 + (29 >= first + 1) + (29 >= first + second + 2), looks
    assert len(looks) < 5
    frame, _ = source
    assert detector.detect(frame)  # a face again: the next empty frame is searched in full
    looks.clear()
    detector.detect(empty)
    assert len(looks) == 1
    clip = np.stack([frame, np.full_like(frame, 90), frame])
    track = detect_faces(clip, detector)
    assert track.valid.tolist() == [True, False, True]


def test_the_slow_search_finds_a_small_face_only_when_asked(source):
    """The small-face pass doubles the frame: HOG alone at its search size does not see a 48 px face."""
    image, truth = hard_frame(source, "size", "48px", 48)
    assert make_detector("dlib").detect(image) == []
    faces = make_detector("auto").detect(image)
    assert any(iou(f.box, truth.box) >= 0.5 for f in faces)
