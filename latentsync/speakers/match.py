"""Which face is which speaker, by SyncNet: for re-syncing a clip whose own soundtrack holds several voices.

When the clip's audio is the voice (re-sync, not dubbing) and we know when each speaker speaks (diarized turns,
or VAD segments per stem), the face whose lips agree with a speaker's speech is that speaker's face. The SyncNet
metric (`score/`) gives, per face track, a distance for each 5-frame snippet and each audio shift -15..+15. Each
speaker keeps only the snippets inside its own speech and gets an offset and a confidence from those rows, the
same way a whole clip gets its score.

- `track_table`: one face track's snippet distances, computed once however many speakers there are;
- `pair_sync` / `sync_pairs`: one `PairSync` (offset, confidence, distance) for each (speaker, track) pair;
- `match_speakers`: a one-to-one speaker -> track assignment; `explain` gives the reason, one line per speaker.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..audio.vad import SpeechSegments
from ..face.types import FaceTrack
from ..media.audio import to_mono_16k
from ..score.crops import frames_at_25fps
from ..score.evaluate import FaceCrops, TrackRules, score_sync
from ..score.metric import (FPS, MIN_FRAMES, SNIPPET_FRAMES, SyncScoreError, check_audio, check_frame_count, pcm16,
                            score_from_distances)
from ..score.syncnet import SyncNet, load_syncnet

# The reference's track rules (more than 50 frames, faces over 100 px) keep its numbers comparable across papers;
# here the tracks come from the caller, who already decided they are faces. A face visible for six frames (one
# snippet) can be scored, and a small face is scored too: its crop is blurrier, so it earns less confidence rather
# than no say at all.
MIN_TRACK_FRAMES = MIN_FRAMES - 1  # a crop track needs more than this many frames
MIN_FACE_PX = 0.0
MAX_OFFSET = 2  # frames: real recordings drift by a frame or two; the right face sits near offset 0

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TrackTable:
    """One face track's SyncNet distances: `distances[i, k]` for the snippet of 25 fps frames
    `[starts[i], starts[i] + 5)` with the audio shifted by k - 15 frames. No rows when the track could not be
    scored; `why` then says why (never visible, too short, silent while visible)."""

    starts: np.ndarray  # [N] int64, 25 fps frame indices
    distances: np.ndarray  # [N, 31] float32
    why: str = ""

    @classmethod
    def empty(cls, why: str) -> TrackTable:
        return cls(np.zeros(0, np.int64), np.zeros((0, 31), np.float32), why)


@dataclass(frozen=True)
class PairSync:
    """How well one face track's lips follow one speaker's speech.

    `snippets` counts the 5-frame snippets inside the speaker's speech where the track was scored. With none
    (the face is not visible while the speaker speaks) there is nothing to measure: `offset` is None and
    `confidence` and `distance` are NaN. Otherwise they are the metric's AV offset (frames, > 0: the video lags),
    LSE-C-style confidence (median - min of the per-shift means) and minimum mean distance, over those snippets.
    """

    speaker: str
    track: int
    offset: int | None
    confidence: float
    distance: float
    snippets: int

    @property
    def scored(self) -> bool:
        return self.snippets > 0


def track_table(frames: np.ndarray | torch.Tensor | Sequence[np.ndarray], fps: float,
                audio: np.ndarray | torch.Tensor, sample_rate: int, track: FaceTrack, syncnet: SyncNet, *,
                min_track: int = MIN_TRACK_FRAMES, min_face_size: float = MIN_FACE_PX) -> TrackTable:
    """The distance table of the crops of `track` (crops="pack": its box in each frame where it is valid).

    A track the metric cannot score (never visible, shorter than `min_track` + 1 frames, silent audio while it
    is visible) gives an empty table. When a cut or a long absence splits the track, the metric scores each
    stretch against its own audio; if one stretch cannot be scored, neither can the others (the metric raises
    for the whole track).
    """
    if len(track) != len(frames):
        raise ValueError(f"the face track has {len(track)} frames but the clip has {len(frames)}")
    boxes = [track.boxes[i] if track.valid[i] else None for i in range(len(track))]
    if not np.any(track.valid):
        return TrackTable.empty("the face is never visible")
    try:
        score = score_sync(frames, audio, sample_rate, fps, syncnet, FaceCrops("pack", face_boxes=boxes),
                           tracks=TrackRules(min_track=min_track, min_face_size=min_face_size))
    except SyncScoreError as error:
        return TrackTable.empty(str(error))
    # Several stretches come back as `tracks`, each with its own first frame; one comes back as the score itself.
    parts = score.tracks or (score,)
    starts = np.concatenate([part.first_frame + np.arange(part.snippets, dtype=np.int64) for part in parts])
    distances = np.concatenate([part.snippet_distances for part in parts]).astype(np.float32)
    return TrackTable(starts, distances)


def speech_rows(starts: np.ndarray, speech: SpeechSegments) -> np.ndarray:
    """`[N]` bool: the snippets whose five frames (their centre times at 25 fps) all lie inside `speech`.

    A snippet that straddles the start or end of a turn also holds another voice or silence, so it is left out.
    """
    if starts.size == 0:
        return np.zeros(0, bool)
    mask = speech.speech_mask(FPS, int(starts.max()) + SNIPPET_FRAMES)
    inside = np.lib.stride_tricks.sliding_window_view(mask, SNIPPET_FRAMES).all(axis=1)
    return inside[starts]


def pair_sync(speaker: str, track: int, table: TrackTable, speech: SpeechSegments) -> PairSync:
    """The metric of `table` restricted to the snippets inside `speech`."""
    rows = table.distances[speech_rows(table.starts, speech)]
    if rows.shape[0] == 0:
        return PairSync(speaker, track, None, math.nan, math.nan, 0)
    score = score_from_distances(torch.from_numpy(np.ascontiguousarray(rows)), crops="pack")
    return PairSync(speaker, track, score.offset, score.lse_c, score.lse_d, score.snippets)


def sync_pairs(frames: np.ndarray | torch.Tensor | Sequence[np.ndarray], fps: float,
               audio: np.ndarray | torch.Tensor, sample_rate: int, tracks: Sequence[FaceTrack],
               speakers: Mapping[str, SpeechSegments], syncnet: SyncNet | str | Path, *,
               min_track: int = MIN_TRACK_FRAMES, min_face_size: float = MIN_FACE_PX,
               progress: Progress | None = None) -> list[PairSync]:
    """A `PairSync` for every speaker and track (speakers in the given order, then tracks), from the clip's
    frames `[N, H, W, 3]` at `fps` and its own soundtrack `audio`.

    Each track's table is computed once (`progress(done, len(tracks))` after each); a speaker uses its rows.
    `speakers` holds each speaker's speech in seconds of this clip. A clip too short for the metric or silent
    audio raise `SyncScoreError`, as they would for every pair.
    """
    check_frame_count(sum(1 for _ in frames_at_25fps(range(len(frames)), fps)))
    check_audio(pcm16(to_mono_16k(audio, sample_rate)))
    net = load_syncnet(syncnet) if isinstance(syncnet, (str, Path)) else syncnet
    tables = []
    for done, track in enumerate(tracks, 1):
        tables.append(track_table(frames, fps, audio, sample_rate, track, net, min_track=min_track,
                                  min_face_size=min_face_size))
        if progress is not None:
            progress(done, len(tracks))
    return [pair_sync(name, index, table, speech)
            for name, speech in speakers.items() for index, table in enumerate(tables)]


def _rank(pair: PairSync, max_offset: int) -> tuple[bool, int, float]:
    distance_from_sync = abs(pair.offset)
    beyond = distance_from_sync > max_offset
    return beyond, distance_from_sync if beyond else 0, -pair.confidence


def match_speakers(pairs: Sequence[PairSync], *, max_offset: int = MAX_OFFSET) -> dict[str, int]:
    """Speaker -> track, one to one, from the pairs of `sync_pairs`.

    The face that speaks a speaker's words moves its lips with them: SyncNet finds it in sync (|offset| within
    `max_offset` frames, the drift of real recordings) and confident. A silent face or another person's has no
    consistent offset: its minimum lands anywhere in -15..+15. So pairs are ranked by being in sync first, then
    by how far out of sync they are, then by confidence; confidence alone would favour a large, sharp face over
    the right one, as its scale depends on the crop. The best pair is assigned first and each speaker and each
    track is used once, so the clearest match is settled before a weaker one could take its track. A speaker with
    no scored pair (not visible while speaking), or whose tracks all went to others, stays out of the result.
    Ties keep the order of `pairs`.
    """
    ranked = sorted((pair for pair in pairs if pair.scored), key=lambda pair: _rank(pair, max_offset))
    chosen: dict[str, int] = {}
    for pair in ranked:
        if pair.speaker not in chosen and pair.track not in chosen.values():
            chosen[pair.speaker] = pair.track
    order = list(dict.fromkeys(pair.speaker for pair in pairs))
    return {speaker: chosen[speaker] for speaker in order if speaker in chosen}


def _describe(pair: PairSync) -> str:
    return f"track {pair.track}, offset {pair.offset}, confidence {pair.confidence:.2f}"


def explain(pairs: Sequence[PairSync], mapping: Mapping[str, int], *, max_offset: int = MAX_OFFSET) -> list[str]:
    """One line per speaker saying what it got and why, for a node's report, e.g.
    "SPEAKER_00 -> track 0: offset 0, confidence 3.10 over 42 snippets (next best: track 1, offset 6, confidence 0.40)".
    """
    lines = []
    for speaker in dict.fromkeys(pair.speaker for pair in pairs):
        scored = sorted((p for p in pairs if p.speaker == speaker and p.scored), key=lambda p: _rank(p, max_offset))
        if speaker not in mapping:
            reason = (f"its best, {_describe(scored[0])}, went to another speaker" if scored
                      else "no face track is visible while this speaker speaks")
            lines.append(f"{speaker}: not matched ({reason})")
            continue
        pair = next(p for p in scored if p.track == mapping[speaker])
        others = [p for p in scored if p.track != pair.track]
        warning = f", out of sync by more than {max_offset} frames (a weak match)" if abs(pair.offset) > max_offset \
            else ""
        runner_up = f"next best: {_describe(others[0])}" if others else "no other track scored"
        lines.append(f"{speaker} -> track {pair.track}: offset {pair.offset}, confidence {pair.confidence:.2f} over "
                     f"{pair.snippets} snippets{warning} ({runner_up})")
    return lines
