"""Specification of latentsync/speakers/match.py: which face track is which speaker, by SyncNet.

Why most tests use a stand-in network: SyncNet with random weights (PyTorch's default init, or the golden weights
of shared/reference/syncnet) cannot tell a face in sync from the same face shifted against the audio. Measured on
the two-column clip below (the woman of demo1 in both columns, 75 frames, her own voice): shifting one column by
6 frames moved its 31 per-shift mean distances by at most ~0.1 (they spread over ~5) and left its offset where the
unshifted column's was.
An untrained video branch gives almost the same embedding for every frame of one face, so the table follows the
audio alone. The stand-in `PaintedSyncNet` sees only a patch that the test paints over each face, in a grey level
that follows the voice's loudness frame by frame. It answers the way a trained SyncNet answers for real lips
(distance near zero at the true alignment), so offsets are known exactly and everything around the network is
tested for real: crops from the track's boxes, 25 fps resampling, snippets restricted to each speaker's speech,
offsets and matching. One test runs the official network (random weights, official file layout) to check that
`sync_pairs` uses the metric's own table and arithmetic.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import two_people
from conftest import shared_path
from syncnet_model_files import write_syncnet_file

from latentsync.audio.vad import SpeechSegments
from latentsync.face.types import FaceTrack
from latentsync.media.audio import load_audio, to_mono_16k
from latentsync.score.evaluate import FaceCrops, TrackRules, score_sync
from latentsync.score.metric import SyncScoreError, mfcc, pcm16, score_from_distances
from latentsync.speakers import match
from latentsync.speakers.match import (PairSync, explain, match_speakers, speech_rows, sync_pairs,
                                       track_table)

FRAMES = 75  # 3 s at 25 fps: 70 snippets
SHIFT = 6  # frames
# The woman's face in demo1's first seconds, as fractions of the column width (dlib's boxes span about this).
FACE = np.array([0.43, 0.594, 0.667, 0.828])
PATCH = 0.3  # painted square: half-size as a fraction of the face's half-size (the crop centre, never its edge)
SPEECH_FROM = two_people.VOICE_START[1]  # demo1's voice starts here; the clip's audio is that voice from 0 s

pytestmark = pytest.mark.usefixtures("one_thread")


def face_box(column: int) -> np.ndarray:
    width = two_people.COLUMN
    return FACE * width + np.array([column * width, 0, column * width, 0])


def face_track(column: int, frames: int, height: int, visible: slice = slice(None)) -> FaceTrack:
    """The woman's box in one column in every frame (she moves by ~15 px; the 2.8x crop keeps her whole face)."""
    valid = np.zeros(frames, bool)
    valid[visible] = True
    boxes = np.where(valid[:, None], face_box(column)[None], np.nan)
    return FaceTrack(boxes=boxes, points3=np.zeros((frames, 3, 2), np.float32), scores=valid.astype(np.float32),
                     valid=valid, frame_hw=(height, 2 * two_people.COLUMN), detector="test")


# ---------------------------------------------------------------- the stand-in network and what it sees

def loudness(mfcc_c0: torch.Tensor | np.ndarray, low: float, high: float) -> np.ndarray:
    """Per video frame, the mean MFCC c0 (log energy) over its 4 steps, mapped to 0..1 between `low` and `high`."""
    c0 = np.asarray(mfcc_c0, np.float64)
    per_frame = c0[..., :c0.shape[-1] // 4 * 4].reshape(*c0.shape[:-1], -1, 4).mean(-1)
    return np.clip((per_frame - low) / (high - low), 0.0, 1.0)


class PaintedSyncNet(torch.nn.Module):
    """SyncNet's interface, with embeddings a test can predict: audio -> the loudness of each of the snippet's 5
    frames, video -> the grey level of the crop's centre (where the test paints) in each of its 5 frames."""

    def __init__(self, low: float, high: float):
        super().__init__()
        self.low, self.high = low, high
        self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)  # the metric asks its device

    def forward_audio(self, mfcc_snippets: torch.Tensor) -> torch.Tensor:  # [B, 1, 13, 20]
        return torch.from_numpy(loudness(mfcc_snippets[:, 0, 0].cpu(), self.low, self.high)).float()

    def forward_video(self, crops: torch.Tensor) -> torch.Tensor:  # [B, 3, 5, 224, 224] BGR 0-255
        # The face box centre lands at crop row 80 (rows span [cy - s, cy + 1.8 s)), column 112.
        return crops[:, :, :, 68:92, 100:124].mean(dim=(1, 3, 4)) / 255.0


@pytest.fixture(scope="module")
def voice() -> np.ndarray:
    waveform, rate = load_audio(shared_path("media/latentsync_demo1_audio.wav"))
    return to_mono_16k(waveform, rate).numpy().astype(np.float32)


@pytest.fixture(scope="module")
def levels_and_net(voice):
    """The loudness of each frame of the voice (enough frames for every shift) and the network that reads it."""
    c0 = mfcc(pcm16(voice[:(FRAMES + 2 * SHIFT + 1) * 640]))[:, 0]  # whole frames: one more than is painted
    # Grey levels span the speech's own range (100 MFCC steps a second); the opening pause is digital silence.
    low, high = np.percentile(c0[round(SPEECH_FROM * 100):], [5, 95])
    return loudness(c0, low, high), PaintedSyncNet(low, high)


def painted_clip(levels: np.ndarray, shift_left: int = 0, shift_right: int = 0, start: int = 0) -> np.ndarray:
    """The woman in both columns; each column shows its frame `i + shift` at frame `i`, video and painted
    loudness alike (`start` moves both columns, for an audio that starts `start` frames in)."""
    left, right = start + shift_left, start + shift_right
    frames = two_people.two_person_frames(FRAMES, right="demo1", shift_left=left, shift_right=right)
    for column, shift in ((0, left), (1, right)):
        x1, y1, x2, y2 = face_box(column)
        cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, PATCH * max(x2 - x1, y2 - y1) / 2
        rows, cols = slice(round(cy - half), round(cy + half)), slice(round(cx - half), round(cx + half))
        for i in range(FRAMES):
            frames[i, rows, cols] = round(levels[i + shift] * 255)
    return frames


def speaking(*segments: tuple[float, float], duration: float = FRAMES / 25) -> SpeechSegments:
    return SpeechSegments(duration, tuple(segments))


# ---------------------------------------------------------------- the check: a shifted face loses

def test_the_face_shifted_against_the_audio_loses_either_way(voice, levels_and_net):
    """Same person in both columns: only timing tells them apart. Shifting a column's video by k frames moves
    its offset by k, and the speaker goes to the other column; shifting the other column flips the pick."""
    levels, net = levels_and_net
    audio = voice[:FRAMES * 640]
    speakers = {"SPEAKER_00": speaking((SPEECH_FROM, FRAMES / 25))}

    def pairs(frames: np.ndarray, sound: np.ndarray = audio) -> list[PairSync]:
        tracks = [face_track(c, FRAMES, frames.shape[1]) for c in (0, 1)]
        return sync_pairs(frames, 25, sound, 16000, tracks, speakers, net)

    # Video ahead of the audio by k frames: offset b - k, b being the unshifted column's offset (its column is
    # the unshifted pair's, pixel for pixel). The direction moves the offset away from zero for b <= 0; this
    # network puts a face in sync at b = 0 (any b would do for the offsets, not for the pick).
    offsets = []
    for shifted in (1, 0):
        shifts = {"shift_right": SHIFT} if shifted == 1 else {"shift_left": SHIFT}
        result = pairs(painted_clip(levels, **shifts))
        b = result[1 - shifted].offset
        offsets.append(b)
        assert abs(result[shifted].offset - (b - SHIFT)) <= 1
        # Snippets whose first frame's centre is in the speech: the 70 minus those starting before it.
        assert [p.snippets for p in result] == [70 - math.ceil(SPEECH_FROM * 25 - 0.5)] * 2
        assert match_speakers(result) == {"SPEAKER_00": 1 - shifted}
        line = explain(result, match_speakers(result))[0]
        assert line.startswith(f"SPEAKER_00 -> track {1 - shifted}: offset {b}") and f"track {shifted}, offset" in line
    assert offsets == [0, 0]

    # Video behind the audio by k frames (the audio starts k frames later): offset b + k; the pick follows.
    late = pairs(painted_clip(levels, shift_left=-SHIFT, start=SHIFT), voice[SHIFT * 640:(FRAMES + SHIFT) * 640])
    assert late[1].offset == 0 and abs(late[0].offset - SHIFT) <= 1
    assert match_speakers(late) == {"SPEAKER_00": 1}


# ---------------------------------------------------------------- each speaker uses its own snippets

def test_each_speaker_is_scored_on_the_snippets_inside_its_speech(voice, levels_and_net, monkeypatch):
    """Two speakers in halves of the clip and one who speaks after it ends. The right face (in sync) appears
    halfway through; the left one is 6 frames ahead all along."""
    levels, net = levels_and_net
    frames = painted_clip(levels, shift_left=SHIFT)
    tracks = [face_track(0, FRAMES, frames.shape[1]), face_track(1, FRAMES, frames.shape[1], visible=slice(37, None))]
    duration = 5.0
    speakers = {"A": speaking((0.0, 1.5), duration=duration), "B": speaking((1.5, 3.0), duration=duration),
                "C": speaking((4.0, 5.0), duration=duration)}
    calls, tables = [], []

    def recorded_table(*args, **kwargs) -> match.TrackTable:
        tables.append(track_table(*args, **kwargs))
        return tables[-1]

    monkeypatch.setattr(match, "track_table", recorded_table)
    pairs = sync_pairs(frames, 25, voice[:FRAMES * 640], 16000, tracks, speakers, net,
                       progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)] and len(tables) == 2  # one table per track, whatever the speakers
    by_pair = {(p.speaker, p.track): p for p in pairs}

    # A snippet counts when its five frame centres are inside the speech: A has starts 0..32 ((32 + 4.5) / 25
    # < 1.5), B 37..69 (37.5 / 25 >= 1.5; 69 is the last of 70); 33..36 straddle the change. The right face's
    # 38 frames from frame 37 give starts 37..69, all B's; C speaks after the clip.
    assert {key: p.snippets for key, p in by_pair.items()} == {
        ("A", 0): 33, ("A", 1): 0, ("B", 0): 33, ("B", 1): 33, ("C", 0): 0, ("C", 1): 0}
    assert by_pair["A", 1].offset is None and math.isnan(by_pair["A", 1].confidence)

    # The numbers are the metric's, on those rows of the track's table only.
    assert tables[0].starts.tolist() == list(range(70)) and tables[1].starts.tolist() == list(range(37, 70))
    for speaker, rows in (("A", slice(0, 33)), ("B", slice(37, 70))):
        expected = score_from_distances(torch.from_numpy(tables[0].distances[rows]), crops="pack")
        assert (by_pair[speaker, 0].offset, by_pair[speaker, 0].snippets) == (expected.offset, expected.snippets)
        assert by_pair[speaker, 0].confidence == pytest.approx(expected.lse_c, abs=1e-6)
        assert by_pair[speaker, 0].distance == pytest.approx(expected.lse_d, abs=1e-6)
    assert by_pair["A", 0].offset == by_pair["B", 0].offset == -SHIFT and by_pair["B", 1].offset == 0

    # B takes the face in sync; A gets the only face visible while it speaks, flagged as out of sync; C nothing.
    mapping = match_speakers(pairs)
    assert mapping == {"A": 0, "B": 1}
    lines = explain(pairs, mapping)
    assert "out of sync" in lines[0] and "no other track scored" in lines[0]
    assert lines[2] == "C: not matched (no face track is visible while this speaker speaks)"


def test_other_frame_rates_map_snippets_to_the_same_times(voice, levels_and_net):
    """The clip at 30 fps (nearest frame by time) is resampled back to the same 25 fps frames by the metric: the
    pairs are the 25 fps ones, speech restriction included."""
    levels, net = levels_and_net
    frames25 = painted_clip(levels, shift_right=SHIFT)
    frames30 = frames25[[min(round(j * 25 / 30), FRAMES - 1) for j in range(FRAMES * 30 // 25)]]
    speakers = {"A": speaking((0.5, 1.7)), "B": speaking((1.9, 2.9))}
    audio = voice[:FRAMES * 640]

    def pairs(frames: np.ndarray, fps: float) -> list[tuple]:
        track = face_track(1, len(frames), frames.shape[1])  # the shifted face: offsets away from 0 show more
        return [(p.speaker, p.offset, p.snippets, round(p.confidence, 5))
                for p in sync_pairs(frames, fps, audio, 16000, [track], speakers, net)]

    at25 = pairs(frames25, 25)
    assert at25 == pairs(frames30, 30)
    assert [row[1:3] for row in at25] == [(-SHIFT, 26), (-SHIFT, 21)]  # A: starts 12..37, B: 47..67


# ---------------------------------------------------------------- one to one

def pair(speaker: str, track: int, offset: int | None, confidence: float) -> PairSync:
    return PairSync(speaker, track, offset, confidence if offset is not None else math.nan,
                    10.0 if offset is not None else math.nan, 20 if offset is not None else 0)


def test_assignment_is_one_to_one_and_in_sync_beats_confident():
    pairs = [pair("A", 0, 0, 5.0), pair("A", 1, 7, 9.0), pair("B", 0, 1, 3.0), pair("B", 1, -2, 1.0)]
    # A's pair with track 0 ranks first (in sync, more confident than B's): B cannot have track 0 too.
    assert match_speakers(pairs) == {"A": 0, "B": 1}
    # In sync wins over confident: A's confidence 9 at offset 7 loses to offset 0.
    assert match_speakers([pair("A", 0, 0, 0.5), pair("A", 1, 7, 9.0)]) == {"A": 0}
    # Both out of sync: the one nearer sync wins, whatever the confidences; max_offset widens "in sync".
    assert match_speakers([pair("A", 0, 9, 0.5), pair("A", 1, -4, 0.1)]) == {"A": 1}
    assert match_speakers([pair("A", 0, 9, 0.5), pair("A", 1, -4, 0.1)], max_offset=10) == {"A": 0}


def test_more_speakers_than_tracks_leaves_one_out():
    pairs = [pair(s, t, o, c) for s, t, o, c in (("A", 0, 0, 4.0), ("A", 1, 5, 1.0), ("B", 0, 1, 2.0),
                                                  ("B", 1, 0, 3.0), ("C", 0, 0, 6.0), ("C", 1, None, 0.0))]
    mapping = match_speakers(pairs)
    assert mapping == {"B": 1, "C": 0}
    assert len(set(mapping.values())) == len(mapping)
    assert explain(pairs, mapping)[0] == "A: not matched (its best, track 0, offset 0, confidence 4.00, went to " \
                                         "another speaker)"
    assert match_speakers([pair("A", 0, None, 0.0)]) == {}


def test_speech_rows_need_all_five_frames_inside():
    starts = np.arange(10)
    inside = speech_rows(starts, SpeechSegments(1.0, ((0.1, 0.3),)))  # frame centres 2.5/25 .. 7.5/25 -> 2..6 in
    assert inside.tolist() == [False, False, True] + [False] * 7
    assert speech_rows(np.zeros(0, np.int64), SpeechSegments(1.0, ((0.0, 1.0),))).size == 0


# ---------------------------------------------------------------- the official network

def test_official_network_table_is_the_metrics_own(voice, tmp_path):
    """A random-weight `syncnet_v2.model` by path: each speaker's numbers are the metric's score of exactly
    its rows of the table that `score_sync` computes for the track (random weights say nothing about who
    speaks; this checks the plumbing with the real network)."""
    count = 16  # 11 snippets
    frames = two_people.two_person_frames(count, right="demo1")
    audio = voice[round(SPEECH_FROM * 16000):][:count * 640]
    track = face_track(1, count, frames.shape[1])
    path = write_syncnet_file(tmp_path / "syncnet_v2.model")
    speakers = {"all": speaking((0.0, count / 25)), "end": speaking((0.3, count / 25))}
    pairs = sync_pairs(frames, 25, audio, 16000, [track], speakers, path)
    whole = score_sync(frames, audio, 16000, 25, path, FaceCrops(face_boxes=list(track.boxes)),
                       tracks=TrackRules(min_track=5, min_face_size=0))
    assert whole.snippets == 11
    assert (pairs[0].offset, pairs[0].snippets) == (whole.offset, whole.snippets)
    assert pairs[0].confidence == pytest.approx(whole.lse_c, abs=1e-5)
    end = score_from_distances(torch.from_numpy(whole.snippet_distances[7:]), crops="pack")  # (7.5 / 25 >= 0.3)
    assert (pairs[1].offset, pairs[1].snippets) == (end.offset, 4)
    assert pairs[1].confidence == pytest.approx(end.lse_c, abs=1e-5)
    hidden = face_track(1, count, frames.shape[1], visible=slice(0))
    assert track_table(frames, 25, audio, 16000, hidden, None).why == "the face is never visible"  # no network run
    with pytest.raises(SyncScoreError, match="silent"):
        sync_pairs(frames, 25, np.zeros_like(audio), 16000, [track], speakers, path)
