"""Steady landmarks (face/smooth.py) and the tracker that applies them (face/detect.FaceTracker), on synthetic
faces: no model files, CPU only, fast.

A face is the reference's three template points (brows 41 px apart at 256 px, nose 20 px below them), scaled to
a brow distance `d`. Jitter is the RMS of the frame-to-frame motion of the points once the true motion is taken
out, in brow distances; lag is how far the points are from the truth, in frames of the truth's own motion.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from latentsync.core.options import Option
from latentsync.face.detect import DetectedFace, FaceTracker, detect_faces
from latentsync.face.smooth import SMOOTHING, LandmarkSmoother
from latentsync.media.shots import ShotDetector

TEMPLATE = np.array([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]])
NOISE = 0.015  # of the brow distance, on every coordinate: dlib's jitter on a still head is about this
SETTLE = 8  # frames a filter may take to catch up with a motion that starts at the first frame


def face_points(d: float = 100.0, at: tuple[float, float] = (600.0, 400.0)) -> np.ndarray:
    """The template's points `[3, 2]` with brow distance `d`, centroid at `at`."""
    points = (TEMPLATE - TEMPLATE.mean(axis=0)) * d / 41.0
    return points + np.asarray(at)


def moving(frames: int, d: float = 100.0, slide: float = 0.0, roll_deg: float = 0.0, zoom: float = 0.0,
           start_deg: float = 0.0) -> np.ndarray:
    """`[N, 3, 2]` points of a face that slides `slide` brow distances, rolls `roll_deg` degrees and grows by
    `zoom` per frame (the last two about its centroid)."""
    base = face_points(d)
    centre = base.mean(axis=0)
    out = []
    for i in range(frames):
        angle = math.radians(start_deg + roll_deg * i)
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        out.append(centre + [slide * d * i, 0.0] + (1 + zoom) ** i * (base - centre) @ rotation.T)
    return np.array(out)


def smooth(points: np.ndarray) -> np.ndarray:
    smoother = LandmarkSmoother()
    out = np.array([smoother(p) for p in points])
    assert out.dtype == np.float32 and out.shape == points.shape
    return out.astype(np.float64)


def jitter(points: np.ndarray, truth: np.ndarray, d: float) -> float:
    wrong = np.diff(points, axis=0) - np.diff(truth, axis=0)
    return float(np.sqrt((np.linalg.norm(wrong, axis=-1) ** 2).mean())) / d


def lag(points: np.ndarray, truth: np.ndarray) -> float:
    """The largest distance of a point from the truth after `SETTLE` frames, in that point's steps per frame."""
    step = np.linalg.norm(np.diff(truth, axis=0), axis=-1)[SETTLE - 1:]
    return float((np.linalg.norm(points - truth, axis=-1)[SETTLE:] / step).max())


# ------------------------------------------------------------------------------------------------ the filter


def test_the_option_is_declared_once():
    assert isinstance(SMOOTHING, Option) and SMOOTHING.default is True and SMOOTHING.kind is bool
    assert len(SMOOTHING.help) <= 120 and "\n" not in SMOOTHING.help


@pytest.mark.parametrize("d", [40.0, 400.0])
def test_a_still_head_is_steadied(d):
    truth = np.repeat(face_points(d)[None], 600, axis=0)
    noisy = truth + np.random.default_rng(0).normal(0.0, NOISE * d, truth.shape)
    ratio = jitter(smooth(noisy), truth, d) / jitter(noisy, truth, d)
    print(f"\nstill head, brow distance {d:g} px: jitter {ratio:.3f}x of the raw points'")
    assert ratio <= 0.35


def test_the_filter_does_not_care_how_big_the_face_is():
    """The same motion and noise, in brow distances, come out the same for a 40 px and a 400 px face."""
    rng = np.random.default_rng(1)
    unit = moving(120, d=1.0, slide=0.05, roll_deg=1.0) + rng.normal(0.0, NOISE, (120, 3, 2))
    unit[60:] += [0.0, 0.4]  # a sudden jump: the filter must open for it alike at both sizes
    small, large = smooth(unit * 40.0) / 40.0, smooth(unit * 400.0) / 400.0
    np.testing.assert_allclose(small, large, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name, motion", [
    ("slide 3%", dict(slide=0.03)),
    ("slide 10%", dict(slide=0.10)),
    ("slide 30%", dict(slide=0.30)),
    ("roll 2 degrees, through 180", dict(roll_deg=2.0, start_deg=150.0)),
    ("zoom 1%", dict(zoom=0.01)),
])
def test_a_moving_face_is_followed_within_half_a_frame(name, motion):
    truth = moving(80, **motion)
    behind = lag(smooth(truth), truth)
    print(f"\n{name}: {behind:.3f} of a frame's motion behind")
    assert behind < 0.5


def test_a_moving_face_is_followed_through_noise():
    """Noise does not stop the filter from following: on average it stays within a frame of a sliding face."""
    d = 100.0
    truth = moving(300, d, slide=0.03)
    noisy = truth + np.random.default_rng(2).normal(0.0, NOISE * d, truth.shape)
    bias = (smooth(noisy) - truth)[SETTLE:].mean(axis=(0, 1))
    assert abs(bias[0]) < 0.03 * d and abs(bias[1]) < 0.01 * d


def test_a_nan_resets_and_passes_through():
    truth = np.repeat(face_points()[None], 40, axis=0)
    noisy = truth + np.random.default_rng(3).normal(0.0, NOISE * 100, truth.shape)
    noisy[20, 1] = np.nan
    smoother = LandmarkSmoother()
    out = [smoother(p) for p in noisy]
    assert np.isnan(out[20]).any() and np.isfinite(np.delete(np.array(out), 20, axis=0)).all()
    np.testing.assert_array_equal(out[21], noisy[21].astype(np.float32))  # afresh: nothing from before
    assert not np.allclose(out[22], noisy[22], atol=1e-3)  # and smoothing again


def test_collapsed_points_pass_through():
    smoother = LandmarkSmoother()
    smoother(face_points())
    same = np.full((3, 2), 5.0, np.float32)
    np.testing.assert_array_equal(smoother(same), same)


# ------------------------------------------------------------------------------------------------ the tracker

H, W = 240, 320


def image(seed: int) -> np.ndarray:
    """A noise picture: two different seeds make a hard cut."""
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def numbered(pictures: list[np.ndarray]) -> np.ndarray:
    """`[N, H, W, 3]` frames, each with its number in its first pixel for `ScriptedDetector`."""
    frames = np.stack(pictures)
    for i in range(len(frames)):
        frames[i, 0, 0, :2] = i % 256, i // 256
    return frames


class ScriptedDetector:
    """Finds the faces it is told to, by frame number (read from the frame's first pixel): `points[i]` is the
    points of frame i's face, or None for no face."""

    name = "scripted"

    def __init__(self, points: list[np.ndarray | None]) -> None:
        self.points = points

    @staticmethod
    def face(points: np.ndarray) -> DetectedFace:
        (x1, y1), (x2, y2) = points.min(axis=0), points.max(axis=0)
        pad = (x2 - x1) * 0.5
        return DetectedFace(box=(x1 - pad, y1 - pad, x2 + pad, y2 + pad), score=1.0,
                            points3=np.asarray(points, np.float32))

    def detect(self, frame: np.ndarray, around=None) -> list[DetectedFace]:
        points = self.points[int(frame[0, 0, 0]) + 256 * int(frame[0, 0, 1])]
        return [] if points is None else [self.face(points)]


def still_face(frames: int, at: tuple[float, float], seed: int, d: float = 40.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return list(face_points(d, at) + rng.normal(0.0, NOISE * d, (frames, 3, 2)))


def track(frames: np.ndarray, points: list, smoothing: bool = True) -> list[DetectedFace | None]:
    tracker = FaceTracker(ScriptedDetector(points), smoothing=smoothing)
    return [tracker.step(frame) for frame in frames]


def test_the_test_pictures_make_a_cut():
    shots = ShotDetector()
    assert [shots.add(frame) for frame in numbered([image(1)] * 20 + [image(2)] * 20)].index(True) == 20
    assert not any(ShotDetector().add(frame) for frame in numbered([image(1)] * 40))


def test_the_tracker_smooths_the_points_and_keeps_the_box():
    points = still_face(60, (160.0, 120.0), seed=4)
    frames = numbered([image(1)] * 60)
    faces = track(frames, points)
    boxes = [ScriptedDetector.face(p).box for p in points]
    assert [f.box for f in faces] == boxes
    truth = np.repeat(face_points(40.0, (160.0, 120.0))[None], 60, axis=0)
    ratio = jitter(np.array([f.points3 for f in faces], np.float64), truth, 40.0) / \
        jitter(np.array(points), truth, 40.0)
    assert ratio <= 0.5
    plain = track(frames, points, smoothing=False)
    for face, raw in zip(plain, points):
        np.testing.assert_array_equal(face.points3, np.asarray(raw, np.float32))


@pytest.mark.parametrize("picture_after", [2, 1])  # another picture: a cut; the same: none (the control)
def test_a_cut_starts_the_smoothing_afresh(picture_after):
    """The face moves by a third of its box at frame 20, still overlapping the last box, so the tracker follows
    it: only the cut can reset the filter."""
    points = still_face(20, (150.0, 120.0), seed=5) + still_face(20, (165.0, 125.0), seed=6)
    faces = track(numbered([image(1)] * 20 + [image(picture_after)] * 20), points)
    after = faces[20].points3
    if picture_after == 2:
        np.testing.assert_array_equal(after, np.asarray(points[20], np.float32))
        assert not np.allclose(faces[22].points3, points[22], atol=1e-3)  # smoothing again
    else:
        behind = (np.asarray(points[20]) - after).mean(axis=0) @ np.array([15.0, 5.0]) / math.hypot(15, 5)
        assert behind > 1.0  # blended with the frames before: short of the jump's 16 px


def test_a_blink_of_the_detector_keeps_the_filter():
    """One frame without the face, then the same face followed: still smoothed (no jump back to raw points),
    exactly as if the frame without it were not there."""
    points = still_face(20, (150.0, 120.0), seed=7) + [None] + still_face(20, (152.0, 121.0), seed=8)
    faces = track(numbered([image(1)] * 41), points)
    assert faces[20] is None
    assert not np.allclose(faces[21].points3, points[21], atol=1e-3)
    without = track(numbered([image(1)] * 40), points[:20] + points[21:])
    np.testing.assert_array_equal(np.array([f.points3 for f in faces if f is not None]),
                                  np.array([f.points3 for f in without]))


def test_a_cut_away_starts_the_smoothing_afresh():
    """The face, a cut to another picture without it, a cut back: the face is followed again (it overlaps its
    last box) but the cut away resets the filter when it returns."""
    points = still_face(20, (150.0, 120.0), seed=7) + [None] * 3 + still_face(20, (152.0, 121.0), seed=8)
    faces = track(numbered([image(1)] * 20 + [image(2)] * 3 + [image(1)] * 20), points)
    np.testing.assert_array_equal(faces[23].points3, np.asarray(points[23], np.float32))
    assert not np.allclose(faces[25].points3, points[25], atol=1e-3)


def test_a_face_chosen_anew_starts_the_smoothing_afresh():
    """The face is gone from its place and another one is far away: chosen, not followed."""
    points = still_face(20, (80.0, 120.0), seed=9) + still_face(20, (240.0, 120.0), seed=10)
    faces = track(numbered([image(1)] * 40), points)
    np.testing.assert_array_equal(faces[20].points3, np.asarray(points[20], np.float32))


def test_detect_faces_passes_smoothing_on():
    points = still_face(30, (160.0, 120.0), seed=11)
    frames = numbered([image(1)] * 30)
    detector = ScriptedDetector(points)
    plain = detect_faces(frames, detector, smoothing=False)
    np.testing.assert_array_equal(plain.points3, np.array(points, np.float32))
    steady = detect_faces(frames, detector)
    assert steady.valid.all() and not np.allclose(steady.points3[2:], plain.points3[2:], atol=1e-3)
    np.testing.assert_array_equal(steady.boxes, plain.boxes)
