"""Every face of a clip as labelled tracks (face/tracks.py), on the two-person clip of tests/two_people.py:
demo1's woman in the left column, demo3's man in the right one, 288 px columns, and a hard cut where they
swap sides.

The real dlib detector finds the faces. It runs upsampled once (the faces are ~70 px wide, under the 80 px of
HOG's window) and remembers its answer per frame, so that the cases share one pass over each distinct frame.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from two_people import COLUMN, two_person_frames
from latentsync.face import describe
from latentsync.face.detect import DetectedFace, DlibFaceDetector, FaceModelMissing, track_from_faces
from latentsync.face.tracks import (TRACK_COLOURS, FaceTracks, choose_track, keyframe_index, label_keyframe,
                                    track_colour, track_faces, track_label)

FRAMES = 30
SWAP_AT = 15  # the shot rule keeps cuts 15 frames apart from the clip's start


class RememberingDetector:
    """The dlib detector, each distinct frame searched once."""

    name = "dlib"

    def __init__(self) -> None:
        self.engine = DlibFaceDetector(upsample=1)
        self.answers: dict[str, list[DetectedFace]] = {}

    def detect(self, frame: np.ndarray, around=None) -> list[DetectedFace]:
        assert around is None, "track_faces searches whole frames"
        key = hashlib.sha1(np.ascontiguousarray(frame).tobytes()).hexdigest()
        if key not in self.answers:
            self.answers[key] = self.engine.detect(frame)
        return list(self.answers[key])


class ExtraFaces:
    """A detector that adds made-up faces to a real one's answers: `extra[frame number]` is a list of faces."""

    name = "dlib+extra"

    def __init__(self, real: RememberingDetector, extra: dict[int, list[DetectedFace]]) -> None:
        self.real, self.extra, self.frame = real, extra, -1

    def detect(self, frame: np.ndarray, around=None) -> list[DetectedFace]:
        self.frame += 1
        return self.real.detect(frame) + self.extra.get(self.frame, [])


@pytest.fixture(scope="module")
def detector() -> RememberingDetector:
    return RememberingDetector()


@pytest.fixture(scope="module")
def side_by_side() -> np.ndarray:
    return two_person_frames(FRAMES)


@pytest.fixture(scope="module")
def swapped() -> np.ndarray:
    return two_person_frames(FRAMES, swap_at=SWAP_AT)


def sides(tracks: FaceTracks, label: str) -> str:
    """One letter a frame: L or R for the side of the frame the track's box centre is on, '.' where absent."""
    track = tracks.by_label(label)
    centres = (track.boxes[:, 0] + track.boxes[:, 2]) / 2
    return "".join("." if not ok else "L" if x < COLUMN else "R" for ok, x in zip(track.valid, centres))


def made_up_face(box: tuple[float, float, float, float], usable: bool = True) -> DetectedFace:
    x0, y0, x1, y1 = box
    points = np.array([[x0 + 0.3 * (x1 - x0), y0 + 0.4 * (y1 - y0)], [x0 + 0.7 * (x1 - x0), y0 + 0.4 * (y1 - y0)],
                       [(x0 + x1) / 2, y0 + 0.6 * (y1 - y0)]], np.float32)
    return DetectedFace(box=box, score=1.0, points3=points if usable else np.full((3, 2), np.nan, np.float32))


def test_two_people_side_by_side_are_two_tracks(detector, side_by_side):
    tracks = track_faces(side_by_side, detector)
    assert tracks.labels == ["A", "B"] and len(tracks) == FRAMES and tracks.frame_hw == side_by_side.shape[1:3]
    for label, side in (("A", "L"), ("B", "R")):
        seen = sides(tracks, label)
        assert set(seen) <= {side, "."}, f"track {label} changed sides: {seen}"
        assert seen.count(side) >= FRAMES - 2, f"track {label} lost its face: {seen}"
    summary = tracks.summary()
    assert [s["label"] for s in summary] == ["A", "B"] and summary[0]["first"] == 0
    assert summary[0]["box"][2] < COLUMN < summary[1]["box"][0]
    # the one-face selection rule picks among the tracks (Detect Faces with track_all)
    assert choose_track(tracks, "index", 1) is tracks.by_label("B")
    assert choose_track(tracks, "position", position=(0.2, 0.4)) is tracks.by_label("A")
    assert not choose_track(tracks, "index", 2).valid.any() and len(choose_track(tracks, "index", 2)) == FRAMES


def test_a_cut_is_crossed_by_appearance(detector, swapped):
    tracks = track_faces(swapped, detector)
    assert tracks.reidentified and tracks.labels == ["A", "B"]
    # A is the woman: on the left before the cut, on the right after it.
    assert sides(tracks, "A") == "L" * SWAP_AT + "R" * (FRAMES - SWAP_AT)
    assert sides(tracks, "B") == "R" * SWAP_AT + "L" * (FRAMES - SWAP_AT)


def test_each_track_is_smoothed_on_its_own_afresh_where_it_starts_and_after_a_cut(detector, swapped):
    steady, plain = track_faces(swapped, detector), track_faces(swapped, detector, smoothing=False)
    assert steady.labels == plain.labels == ["A", "B"]
    for label in steady.labels:
        smoothed, detected = steady.by_label(label), plain.by_label(label)
        np.testing.assert_array_equal(smoothed.valid, detected.valid)
        np.testing.assert_array_equal(smoothed.boxes, detected.boxes)  # tracks are matched on the boxes as found
        seen = np.flatnonzero(smoothed.valid)
        assert not np.allclose(smoothed.points3[seen], detected.points3[seen])
        # a filter of its own, started afresh: the first face of the track and the first after the cut (found
        # again by appearance) are the detector's
        for start in (seen[0], seen[seen >= SWAP_AT][0]):
            np.testing.assert_allclose(smoothed.points3[start], detected.points3[start], atol=1e-3)
        assert not np.allclose(smoothed.points3[start + 1], detected.points3[start + 1], atol=1e-3)


def test_without_reidentification_a_cut_starts_new_tracks_and_merging_joins_them(detector, swapped):
    tracks = track_faces(swapped, detector, reidentify=False)
    assert not tracks.reidentified and "turned off" in tracks.note
    assert tracks.labels == ["A", "B", "C", "D"]  # after the cut: the man (C) on the left, the woman (D) right
    assert sides(tracks, "C") == "." * SWAP_AT + "L" * (FRAMES - SWAP_AT)
    joined = tracks.merged("A", "D").merged("B", "C")
    assert joined.labels == ["A", "B"]
    assert sides(joined, "A") == "L" * SWAP_AT + "R" * (FRAMES - SWAP_AT)
    assert sides(joined, "B") == "R" * SWAP_AT + "L" * (FRAMES - SWAP_AT)
    np.testing.assert_array_equal(joined.by_label("A").boxes[SWAP_AT:], tracks.by_label("D").boxes[SWAP_AT:])
    np.testing.assert_array_equal(joined.by_label("A").points3[:SWAP_AT], tracks.by_label("A").points3[:SWAP_AT])
    assert tracks.merged("B", "C").labels == ["A", "B", "D"]  # the others keep their labels
    with pytest.raises(ValueError, match="both have a face in frame"):
        tracks.merged("A", "B")
    with pytest.raises(ValueError, match="itself"):
        tracks.merged("A", "A")
    with pytest.raises(ValueError, match="the tracks are: A, B, C, D"):
        tracks.merged("A", "E")


def test_without_the_descriptor_model_tracking_goes_on_and_says_so(detector, swapped, monkeypatch):
    def missing(name):
        raise FaceModelMissing(f"dlib's model {name} was not found")

    monkeypatch.setattr(describe, "_face_recognition_model", missing)
    tracks = track_faces(swapped, detector)
    assert not tracks.reidentified and "dlib_face_recognition_resnet_model_v1.dat" in tracks.note
    assert tracks.labels == ["A", "B", "C", "D"]


def test_short_and_unusable_detections_are_dropped(detector, side_by_side):
    stray = made_up_face((20.0, 20.0, 60.0, 60.0))  # a "face" in the top-left corner, one frame only
    blind = made_up_face((200.0, 400.0, 260.0, 460.0), usable=False)  # every frame, but without points
    clip = side_by_side[:12]
    x0, y0, x1, y1 = detector.detect(clip[9])[0].box
    shifted = 0.4 * (x1 - x0)  # a second, overlapping box on a real face (IoU ~0.4): a track takes one of them
    double = made_up_face((x0 + shifted, y0, x1 + shifted, y1))
    extra = {i: [blind] for i in range(12)}
    extra[7], extra[9] = [stray, blind], [double, blind]
    tracks = track_faces(clip, ExtraFaces(detector, extra), reidentify=False)
    assert tracks.labels == ["A", "B"]
    everything = track_faces(clip, ExtraFaces(detector, extra), reidentify=False, min_frames=1)
    assert everything.labels == ["A", "B", "C", "D"]
    assert everything.summary()[3]["frames"] == 1 and everything.by_label("D").valid[9]
    assert everything.summary()[2] == {"label": "C", "first": 7, "last": 7, "frames": 1,
                                       "box": [20.0, 20.0, 60.0, 60.0]}
    # each usable detection went to exactly one track, never two to one track
    found = sum(len(detector.detect(frame)) for frame in clip) + 2
    assert sum(int(t.valid.sum()) for t in everything.tracks) == found
    # min_frames is clamped to the clip's length: a 2-frame clip keeps its people
    assert track_faces(clip[:2], detector, reidentify=False, min_frames=3).labels == ["A", "B"]


def test_the_detector_by_name_and_progress(detector, side_by_side):
    calls = []
    tracks = track_faces(side_by_side[:2], "dlib", upsample=1, reidentify=False,
                         progress=lambda done, total: calls.append((done, total)))
    assert tracks.detector == "dlib" and tracks.labels == ["A", "B"]
    assert calls == [(1, 2), (2, 2)]

    def cancel(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        track_faces(side_by_side[:3], detector, progress=cancel)
    with pytest.raises(ValueError, match="N, H, W, C"):
        track_faces(side_by_side[0], "dlib")


def test_label_keyframe_draws_each_track_near_its_box(detector, side_by_side):
    tracks = track_faces(side_by_side, detector)
    index = keyframe_index(tracks)
    picture = label_keyframe(side_by_side[index], tracks, index)
    assert picture.shape == side_by_side.shape[1:] and picture.dtype == np.uint8
    changed = (picture != side_by_side[index]).any(axis=2)
    near = np.zeros_like(changed)
    for label in tracks.labels:
        x0, y0, x1, y1 = np.round(tracks.by_label(label).boxes[index]).astype(int)
        near[max(y0 - 3, 0):y1 + 3, max(x0 - 3, 0):x1 + 3] = True
        colour = (picture == np.array(track_colour(label), np.uint8)).all(axis=2)
        assert (colour & changed).sum() > 50, f"track {label}'s colour is not drawn"
    assert changed.any() and not (changed & ~near).any(), "drawing outside the boxes"
    assert track_colour("A") != track_colour("B") and track_colour("A") == TRACK_COLOURS[0]
    float_picture = label_keyframe(side_by_side[index] / 255.0, tracks, index)  # ComfyUI's float frames
    assert np.abs(float_picture.astype(int) - picture).max() <= 1
    with pytest.raises(ValueError, match="outside the clip"):
        label_keyframe(side_by_side[0], tracks, FRAMES)


def synthetic(spans: dict[str, tuple[int, int]], count: int = 8) -> FaceTracks:
    """Tracks seen in frames [first, last) each, with boxes that say which frame they are from."""
    tracks = []
    for position, (first, last) in enumerate(spans.values()):
        faces = [made_up_face((10.0 * i, 100.0 * position, 10.0 * i + 50, 100.0 * position + 50))
                 if first <= i < last else None for i in range(count)]
        tracks.append(track_from_faces(faces, (480, 640), "test"))
    return FaceTracks(tracks, list(spans), (480, 640), "test")


def test_subset_by_label_and_keyframe():
    tracks = synthetic({"A": (0, 5), "B": (3, 8)})
    assert keyframe_index(tracks) == 3
    part = tracks.subset([6, 2])
    assert len(part) == 2 and part.labels == ["A", "B"]
    assert part.by_label("A").valid.tolist() == [False, True] and part.by_label("B").valid.tolist() == [True, False]
    assert part.by_label("B").boxes[0, 0] == 60.0
    assert len(tracks.subset(slice(2, 5))) == 3
    with pytest.raises(ValueError, match="no face track 'C'; the tracks are: A, B"):
        tracks.by_label("C")
    with pytest.raises(ValueError, match=r"frame\(s\) 3, 4"):
        tracks.merged("A", "B")
    apart = synthetic({"A": (0, 3), "B": (5, 8)}).merged("B", "A")
    assert apart.labels == ["B"] and apart.tracks[0].valid.tolist() == [True] * 3 + [False] * 2 + [True] * 3
    with pytest.raises(ValueError, match="all be its length"):
        FaceTracks([tracks.tracks[0], part.tracks[0]], ["A", "B"], (480, 640))
    with pytest.raises(ValueError, match="one distinct label each"):
        FaceTracks(tracks.tracks, ["A", "A"], (480, 640))
    assert len(FaceTracks(tracks.tracks, ["A", "B"], (480, 640))) == 8  # the length from the tracks
    empty = FaceTracks([], [], (480, 640), "test", 4)
    assert keyframe_index(empty) == 0 and empty.summary() == []
    with pytest.raises(ValueError, match="the tracks are: none"):
        empty.by_label("A")
    assert [track_label(i) for i in (0, 1, 25, 26, 27)] == ["A", "B", "Z", "AA", "AB"]
