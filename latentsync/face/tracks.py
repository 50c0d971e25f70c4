"""Every face of a clip, followed as one track per person and labelled A, B, C ... (`track_faces`).

`detect.py` follows the one face a run lip-syncs; this module finds them all, so that a user can say which
person speaks when. Each frame is searched whole; a detection joins the live track whose last box it overlaps
most (IoU), one detection per track. A track unseen for more than `max_track_gap` frames goes dormant, and so
does every track at a hard cut, because positions mean nothing across a cut: there a face is matched to a
dormant track by what it looks like (`describe.FaceDescriber`), computed only for faces no live track claims.
Without the descriptor model such a face starts a new track, and the user joins the tracks of one person with
`FaceTracks.merged`. Cuts follow the SyncNet reference's rule (`media.shots`), its spacing included: a cut
less than 15 frames after the previous one (or the clip's start) is not seen, and tracks go on by position.
With smoothing, each track's points are steadied by a filter of its own (`smooth.LandmarkSmoother`), started
afresh where the track starts and wherever it is taken up again by appearance (after a cut or a long absence).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..media.shots import SHOT_THRESHOLD, ShotDetector
from .describe import SAME_PERSON_DISTANCE, FaceDescriber, descriptor_distance
from .detect import (DETECTOR, DlibFaceDetector, _usable, check_selection, choose_face, iou, make_detector,
                     track_from_faces)
from .smooth import LandmarkSmoother
from .types import DetectedFace, FaceDetector, FaceModelMissing, FaceTrack
from .warp import Frames, frame_to_rgb_uint8

Progress = Callable[[int, int], None]

MIN_OVERLAP = 0.2  # the least IoU with a track's last box that continues it, as FaceTracker
# Distinct on skin, hair and most backgrounds; the editor's timeline shows each track in the same colour.
TRACK_COLOURS: list[tuple[int, int, int]] = [
    (255, 64, 64), (40, 140, 255), (60, 220, 60), (255, 200, 0),
    (200, 80, 255), (0, 220, 220), (255, 120, 200), (255, 140, 0),
]


def track_label(position: int) -> str:
    """"A" ... "Z", then "AA", "AB" ...: the label of the `position`-th track (from 0)."""
    label = ""
    position += 1
    while position:
        position, digit = divmod(position - 1, 26)
        label = chr(ord("A") + digit) + label
    return label


def track_colour(label: str) -> tuple[int, int, int]:
    """A label's colour: by its letters, so that a track keeps its colour when another is merged away."""
    position = 0
    for letter in label:
        position = position * 26 + ord(letter) - ord("A") + 1
    return TRACK_COLOURS[(position - 1) % len(TRACK_COLOURS)]


@dataclass
class FaceTracks:
    """Every person's face through a clip: one `FaceTrack` each, all the clip's length (invalid, NaN rows
    where that person is not seen). `reidentified` is False when faces were not matched by appearance across
    cuts (turned off, or no descriptor model: `note` says which); tracks of one person may then be split."""

    tracks: list[FaceTrack]
    labels: list[str]
    frame_hw: tuple[int, int]
    detector: str = ""
    frame_count: int | None = None  # the clip's length; taken from the tracks when not given
    reidentified: bool = True
    note: str = ""

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.tracks) or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"face tracks need one distinct label each: {len(self.tracks)} tracks, "
                             f"labels {self.labels}")
        lengths = {len(t) for t in self.tracks} | ({self.frame_count} if self.frame_count is not None else set())
        if len(lengths) > 1:
            raise ValueError(f"face tracks of one clip must all be its length, got lengths {sorted(lengths)}")
        self.frame_count = lengths.pop() if lengths else 0

    def __len__(self) -> int:
        return self.frame_count

    def by_label(self, label: str) -> FaceTrack:
        if label not in self.labels:
            raise ValueError(f"no face track {label!r}; the tracks are: {', '.join(self.labels) or 'none'}")
        return self.tracks[self.labels.index(label)]

    def merged(self, keep: str, other: str) -> FaceTracks:
        """The tracks with `other` joined into `keep` (the user says they are one person): `other`'s faces
        fill the frames where `keep` has none, and `other` is gone. The other labels do not change."""
        if keep == other:
            raise ValueError(f"cannot merge track {keep!r} with itself")
        first, second = self.by_label(keep), self.by_label(other)
        both = np.flatnonzero(first.valid & second.valid)
        if both.size:
            frames = ", ".join(str(i) for i in both[:5]) + (" ..." if both.size > 5 else "")
            raise ValueError(f"tracks {keep} and {other} both have a face in frame(s) {frames}: two people "
                             f"in one frame cannot be one person")
        fill = second.valid
        joined = FaceTrack(boxes=np.where(fill[:, None], second.boxes, first.boxes),
                           points3=np.where(fill[:, None, None], second.points3, first.points3),
                           scores=np.where(fill, second.scores, first.scores), valid=first.valid | fill,
                           frame_hw=first.frame_hw, detector=first.detector)
        tracks, labels = [], []
        for label, track in zip(self.labels, self.tracks):
            if label != other:
                tracks.append(joined if label == keep else track)
                labels.append(label)
        return FaceTracks(tracks, labels, self.frame_hw, self.detector, self.frame_count, self.reidentified,
                          self.note)

    def subset(self, indices: Sequence[int] | slice) -> FaceTracks:
        """Every track's rows of some frames, in the given order (as `FaceTrack.subset`)."""
        count = int(np.arange(self.frame_count)[indices].size)
        return FaceTracks([t.subset(indices) for t in self.tracks], list(self.labels), self.frame_hw,
                          self.detector, count, self.reidentified, self.note)

    def summary(self) -> list[dict]:
        """Per track: label, first and last frame seen, frames seen, and its mean box (x1, y1, x2, y2 px)."""
        out = []
        for label, track in zip(self.labels, self.tracks):
            seen = np.flatnonzero(track.valid)
            box = track.boxes[seen].mean(axis=0) if seen.size else np.full(4, np.nan)
            out.append({"label": label, "first": int(seen[0]) if seen.size else None,
                        "last": int(seen[-1]) if seen.size else None, "frames": int(seen.size),
                        "box": [round(float(v), 1) for v in box]})
        return out


@dataclass
class _Person:
    """A track while it is built: its faces by frame, the frames where it starts or is taken up again by
    appearance (its smoothing starts afresh there), and its descriptor once one was needed."""

    faces: dict[int, DetectedFace]
    last: int
    starts: set[int] = field(default_factory=set)
    live: bool = True
    descriptor: np.ndarray | None = field(default=None, repr=False)
    described_at: int = -1


def track_faces(frames: Frames, detector: str | FaceDetector = DETECTOR.default, *, threshold: float | None = None,
                max_track_gap: int = 25, min_frames: int = 3, reidentify: bool = True,
                cut_threshold: float = SHOT_THRESHOLD, match_distance: float = SAME_PERSON_DISTANCE,
                progress: Progress | None = None, smoothing: bool = True, **detector_options) -> FaceTracks:
    """Every face in `[N, H, W, C]` frames (C = 1, 3 or 4; uint8 or float 0-1), as labelled tracks.

    `threshold`: the detector's score threshold. `max_track_gap`: frames a track may miss and still continue
    by position. `min_frames`: tracks seen in fewer frames (at most the clip's length) are dropped as false
    detections. `reidentify`: match faces to earlier tracks by appearance after a cut (`cut_threshold`: mean
    HSV change that makes a cut) or a long absence, when their descriptors are nearer than `match_distance`.
    `progress(done, total)` is called after each frame and may raise to cancel. `smoothing` steadies each
    track's points (`smooth.LandmarkSmoother`, one per track, anew where it is taken up by appearance); off, they
    are the detector's.
    """
    if getattr(frames, "ndim", 0) != 4:
        raise ValueError(f"expected frames shaped [N, H, W, C], got {tuple(getattr(frames, 'shape', ()))}")
    for name, value in (("cut_threshold", cut_threshold), ("match_distance", match_distance)):
        if not np.isfinite(value) or value <= 0:  # NaN would silently turn cuts or re-identification off
            raise ValueError(f"{name} must be a positive number, got {value}")
    engine = make_detector(detector, threshold, **detector_options) if isinstance(detector, str) else detector
    describer, note = None, "re-identification across cuts was turned off"
    if reidentify:
        try:
            describer = FaceDescriber(engine if isinstance(engine, DlibFaceDetector) else None)
            note = ""
        except (FaceModelMissing, ImportError) as exc:
            note = f"faces were not re-identified across cuts (tracks of one person may be split): {exc}"
    count, people = len(frames), []
    shots = ShotDetector(threshold=cut_threshold)
    for index in range(count):
        rgb = frame_to_rgb_uint8(frames[index])
        cut = shots.add(rgb)
        for person in people:
            person.live = person.live and not cut and index - person.last <= max_track_gap
        faces = [f for f in engine.detect(rgb) if _usable(f)]
        left = _continue_by_position(people, faces, index)
        if left and describer is not None:
            left = _continue_by_appearance(people, left, index, rgb, frames, describer, match_distance)
        people.extend(_Person({index: face}, index, {index}) for face in left)
        if progress is not None:
            progress(index + 1, count)
    if smoothing:  # boxes (what the matching used) stay as detected: smoothing the points afterwards is the same
        for person in people:
            person.faces = _smoothed(person)
    return _labelled(people, count, tuple(frames.shape[1:3]), getattr(engine, "name", type(engine).__name__),
                     min(min_frames, count), describer is not None, note)


def _smoothed(person: _Person) -> dict[int, DetectedFace]:
    """A track's faces with their points steadied frame after frame, anew at each of its starts."""
    smoother, faces = LandmarkSmoother(), {}
    for index in sorted(person.faces):
        if index in person.starts:
            smoother.reset()
        face = person.faces[index]
        faces[index] = replace(face, points3=smoother(face.points3))
    return faces


def _continue_by_position(people: list[_Person], faces: list[DetectedFace], index: int) -> list[DetectedFace]:
    """Give faces to live tracks by best overlap first (one face a track); the faces left over."""
    live = [p for p in people if p.live]
    # best overlap first; on a tie the older track (built first) wins
    pairs = sorted((-iou(p.faces[p.last].box, f.box), i, j) for i, p in enumerate(live) for j, f in enumerate(faces))
    taken, used = set(), set()
    for overlap, i, j in pairs:
        if -overlap < MIN_OVERLAP:
            break
        if i not in taken and j not in used:
            live[i].faces[index], live[i].last = faces[j], index
            taken.add(i), used.add(j)
    return [f for j, f in enumerate(faces) if j not in used]


def _continue_by_appearance(people: list[_Person], faces: list[DetectedFace], index: int, rgb: np.ndarray,
                            frames: Frames, describer: FaceDescriber, match_distance: float) -> list[DetectedFace]:
    """Give faces no live track overlaps to a track not seen in this frame that looks the same (nearest
    first); the faces left over. Descriptors are computed here only, once per track sighting."""
    waiting = [p for p in people if p.last != index]
    if not waiting:
        return faces
    for person in waiting:
        if person.described_at != person.last:
            person.descriptor = describer.describe(frame_to_rgb_uint8(frames[person.last]),
                                                   person.faces[person.last].box)
            person.described_at = person.last
    looks = [describer.describe(rgb, f.box) for f in faces]
    pairs = sorted((descriptor_distance(p.descriptor, d), i, j) for i, p in enumerate(waiting)
                   for j, d in enumerate(looks))
    taken, used = set(), set()
    for distance, i, j in pairs:
        if distance >= match_distance:
            break
        if i not in taken and j not in used:
            person = waiting[i]
            person.faces[index], person.last, person.live = faces[j], index, True
            person.starts.add(index)
            taken.add(i), used.add(j)
    return [f for j, f in enumerate(faces) if j not in used]


def _labelled(people: list[_Person], count: int, frame_hw: tuple[int, int], detector: str, min_frames: int,
              reidentified: bool, note: str) -> FaceTracks:
    """Tracks seen in at least `min_frames` frames, labelled by first appearance, ties left to right."""
    kept = [p for p in people if len(p.faces) >= max(min_frames, 1)]
    kept.sort(key=lambda p: (min(p.faces), p.faces[min(p.faces)].centre[0]))
    tracks = [track_from_faces([p.faces.get(i) for i in range(count)], frame_hw, detector) for p in kept]
    return FaceTracks(tracks, [track_label(i) for i in range(len(kept))], (int(frame_hw[0]), int(frame_hw[1])),
                      detector, count, reidentified, note)


def choose_track(tracks: FaceTracks, select: str = "largest", index: int = 0,
                 position: tuple[float, float] | None = None) -> FaceTrack:
    """The track that the one-face selection rule (`detect.choose_face`: largest, `index`-th from the left, or
    at `position`) picks among the tracks' mean boxes; an empty track when the clip has no face."""
    check_selection(select, index, position)
    seen = [(track, DetectedFace(box=tuple(s["box"]), score=1.0, points3=np.zeros((3, 2), np.float32)))
            for track, s in zip(tracks.tracks, tracks.summary()) if s["frames"]]
    chosen = choose_face([mean for _, mean in seen], select, index, position, tracks.frame_hw)
    if chosen is None:
        return track_from_faces([None] * len(tracks), tracks.frame_hw, tracks.detector)
    return next(track for track, mean in seen if mean is chosen)


def keyframe_index(tracks: FaceTracks) -> int:
    """The first frame where the most tracks are seen (0 for a clip without faces)."""
    if not tracks.tracks or len(tracks) == 0:
        return 0
    return int(np.argmax(np.sum([t.valid for t in tracks.tracks], axis=0)))


def label_keyframe(frame: Frames, tracks: FaceTracks, index: int) -> np.ndarray:
    """`[H, W, 3]` uint8: `frame` (frame `index` of the clip) with each track's box in its colour and its label
    in a tag inside the box's top-left corner; the preview where the user tells the people apart."""
    if not 0 <= index < len(tracks):
        raise ValueError(f"frame {index} is outside the clip's {len(tracks)} frames")
    picture = Image.fromarray(frame_to_rgb_uint8(frame))
    draw = ImageDraw.Draw(picture)
    line = max(2, round(min(picture.size) / 200))
    font = ImageFont.load_default(size=max(12, round(min(picture.size) / 30)))
    for label, track in zip(tracks.labels, tracks.tracks):
        if not track.valid[index]:
            continue
        colour = track_colour(label)
        x0, y0, x1, y1 = (int(round(v)) for v in track.boxes[index])
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=line)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        pad = line
        tag = (x0, y0, min(x0 + right - left + 2 * pad, x1 - 1), min(y0 + bottom - top + 2 * pad, y1 - 1))
        draw.rectangle(tag, fill=colour)
        ink = (0, 0, 0) if sum(c * w for c, w in zip(colour, (0.299, 0.587, 0.114))) > 140 else (255, 255, 255)
        draw.text((x0 + pad - left, y0 + pad - top), label, fill=ink, font=font)
    return np.asarray(picture).copy()
