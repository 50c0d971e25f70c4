"""Who drives which face: speakers, the clip's face tracks, and the mapping between them.

A `Speaker` is a voice as the sampler needs it: the per-frame whisper chunks that drive a mouth and the
segments where that voice speaks (its own stem's VAD, or its diarized turns in a mixed track). A `Cast` pairs
each face track (A, B, ...) with at most one speaker; a face with no speaker is left as it is.

The mapping is plain text, so a workflow keeps it as a widget value: entries separated by commas, semicolons or
new lines, each `TRACKS = SPEAKER`:
- `A = SPEAKER_00`: track A is driven by the speaker of that name (or `A = 1`: the first speaker);
- `A + C = 2`: tracks A and C are one person (a track split by a cut the detector could not bridge);
- `B = none` (or `-`): face B stays untouched;
- `auto`: each speaker is matched to the face whose lips agree best (SyncNet) when that can be measured, else
  speakers are given to tracks in order (A to the first speaker, B to the second, ...).
Faces not named in an explicit mapping stay untouched.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch

from ..audio.features import AudioFeatures
from ..audio.vad import SpeechSegments
from ..face.tracks import FaceTracks, keyframe_index, label_keyframe, track_colour
from ..face.types import FaceTrack
from ..score.metric import SyncScoreError
from .match import explain, match_speakers, sync_pairs

AUTO = "auto"
NOBODY = ("none", "-", "nobody")


@dataclass(frozen=True)
class Speaker:
    """One voice: `features` drive its face, `speech` says when it speaks; `audio16k` (`[T]` at 16 kHz, the
    voice or the mix it was found in) lets SyncNet find its face."""

    name: str
    features: AudioFeatures
    speech: SpeechSegments
    audio16k: torch.Tensor | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Role:
    """A face track and the speaker that drives it (None: the face is left untouched)."""

    label: str
    track: FaceTrack
    speaker: Speaker | None


@dataclass(frozen=True)
class Cast:
    """Every face track of the clip with its speaker, in label order: the order the faces are generated and
    pasted back, so where two crops overlap the later label's face is on top."""

    roles: tuple[Role, ...]
    speakers: tuple[Speaker, ...]
    how: str = ""  # how the mapping was decided, one line per speaker, for the node's report

    @property
    def mapping(self) -> dict[str, str | None]:
        return {role.label: role.speaker.name if role.speaker else None for role in self.roles}

    def mapping_text(self) -> str:
        """The mapping in the widget's syntax; typing it in keeps this exact assignment."""
        return ", ".join(f"{label} = {name if name else 'none'}" for label, name in self.mapping.items())


def unique_speakers(speakers: list[Speaker]) -> list[Speaker]:
    """The speakers with names made unique (`name`, `name_2`, ...) and empty names filled in (`SPEAKER_1`...)."""
    seen: set[str] = set()
    out = []
    for number, speaker in enumerate(speakers, 1):
        base = speaker.name.strip() or f"SPEAKER_{number}"
        name, k = base, 2
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        seen.add(name)
        out.append(speaker if name == speaker.name else Speaker(name, speaker.features, speaker.speech,
                                                                   speaker.audio16k))
    return out


@dataclass(frozen=True)
class Mapping:
    """A parsed mapping: `auto`, or the tracks merged and each named track's speaker (None: untouched)."""

    auto: bool
    merges: tuple[tuple[str, ...], ...] = ()
    assigned: tuple[tuple[str, str | None], ...] = ()  # (label, speaker name or None)


def parse_mapping(text: str, labels: list[str], speakers: list[Speaker]) -> Mapping:
    """Read the mapping widget's text (see the module's docstring); errors name what is there to choose from."""
    entries = [e.strip() for e in re.split(r"[,;\n]", text or "") if e.strip()]
    if not entries or [e.lower() for e in entries] == [AUTO]:
        return Mapping(auto=True)
    names = [s.name for s in speakers]
    known = ", ".join(labels) or "none found"
    merges, assigned, used = [], [], set()
    for entry in entries:
        left, sep, right = entry.partition("=")
        if not sep:
            left, sep, right = entry.partition(":")
        if not sep or not left.strip() or not right.strip():
            raise ValueError(f"mapping entry {entry!r} is not TRACK = SPEAKER (e.g. 'A = {names[0] if names else '1'}'"
                             f", 'A + C = 2', 'B = none'), or write 'auto'")
        group = [part.strip().upper() for part in left.split("+")]
        for label in group:
            if label not in labels:
                raise ValueError(f"mapping entry {entry!r}: there is no face track {label!r}; the tracks are {known}")
            if label in used:
                raise ValueError(f"mapping entry {entry!r}: face track {label} is named twice")
            used.add(label)
        if len(group) > 1:
            merges.append(tuple(group))
        assigned.append((group[0], _speaker_name(right.strip(), names, entry)))
    return Mapping(auto=False, merges=tuple(merges), assigned=tuple(assigned))


def _speaker_name(token: str, names: list[str], entry: str) -> str | None:
    if token.lower() in NOBODY:
        return None
    if token in names:
        return token
    if token.isdigit() and 1 <= int(token) <= len(names):
        return names[int(token) - 1]
    matches = [n for n in names if n.lower() == token.lower()]
    if len(matches) == 1:
        return matches[0]
    listed = ", ".join(f"{i} = {n}" for i, n in enumerate(names, 1)) or "none connected"
    raise ValueError(f"mapping entry {entry!r}: no speaker {token!r}; the speakers are {listed} (or 'none')")


def in_order(labels: list[str], speakers: list[Speaker]) -> dict[str, str | None]:
    """The fallback of `auto`: A to the first speaker, B to the second, ...; extra tracks untouched."""
    return {label: speakers[i].name if i < len(speakers) else None for i, label in enumerate(labels)}


def make_cast(tracks: FaceTracks, speakers: list[Speaker], mapping: str = AUTO,
              automatic: dict[str, str | None] | None = None, how: str = "") -> Cast:
    """The cast of `tracks` and `speakers` under the `mapping` text. For `auto`, `automatic` (label -> speaker
    name, e.g. from SyncNet matching) is used when given, else `in_order`."""
    if not speakers:
        raise ValueError("no speaker: connect at least one (Speaker or Diarize Speakers)")
    speakers = unique_speakers(list(speakers))
    parsed = parse_mapping(mapping, list(tracks.labels), speakers)
    for group in parsed.merges:
        for other in group[1:]:
            tracks = tracks.merged(group[0], other)
    if parsed.auto:
        chosen = automatic if automatic is not None else in_order(list(tracks.labels), speakers)
        how = how or "auto: speakers given to the face tracks in order (A to the first speaker, ...)"
    else:
        chosen = dict(parsed.assigned)
        how = how or "as written in mapping"
    by_name = {s.name: s for s in speakers}
    roles = tuple(Role(label, tracks.by_label(label), by_name.get(chosen.get(label)) if chosen.get(label) else None)
                  for label in tracks.labels)
    return Cast(roles=roles, speakers=tuple(speakers), how=how)


def auto_mapping(frames, fps: float, tracks: FaceTracks, speakers: list[Speaker],
                 syncnet: torch.nn.Module) -> tuple[dict[str, str | None] | None, str]:
    """Each speaker's face by SyncNet (`match.py`): label -> speaker name, and a report of how it was decided.
    (None, why) when it cannot be measured: no speaker carries its audio."""
    heard = [s for s in speakers if s.audio16k is not None]
    if not heard:
        return None, ("auto: the speakers carry no audio (connect it to Speaker / Diarize Speakers) so SyncNet "
                      "could not compare them; speakers given to the face tracks in order")
    pairs = []
    by_audio: dict[int, list[Speaker]] = {}
    for speaker in heard:  # speakers of one mixed track share its audio: one SyncNet pass for all of them
        by_audio.setdefault(id(speaker.audio16k), []).append(speaker)
    try:
        for group in by_audio.values():
            pairs += sync_pairs(frames, fps, group[0].audio16k, 16000, list(tracks.tracks),
                                {s.name: s.speech for s in group}, syncnet)
    except SyncScoreError as exc:  # too short a clip for the metric, silent audio: say so and go on in order
        return None, f"auto: SyncNet could not compare the faces ({exc}); speakers given to the face tracks in order"
    chosen = match_speakers(pairs)
    mapping: dict[str, str | None] = {label: None for label in tracks.labels}
    for name, track in chosen.items():
        mapping[tracks.labels[track]] = name
    lines = explain(pairs, chosen)
    return mapping, "auto (SyncNet): " + "; ".join(lines) if lines else "auto (SyncNet): nothing could be scored"


def preview_frame(frames, cast: Cast) -> np.ndarray:
    """A keyframe with every face track's box and letter, `[H, W, 3]` uint8 (`face.tracks.label_keyframe`)."""
    tracks = FaceTracks(tracks=[r.track for r in cast.roles], labels=[r.label for r in cast.roles],
                         frame_hw=cast.roles[0].track.frame_hw if cast.roles else tuple(frames.shape[1:3]))
    index = keyframe_index(tracks) if cast.roles else 0
    frame = frames[index]
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu().numpy()
    if frame.dtype != np.uint8:
        frame = np.round(np.clip(frame[..., :3], 0, 1) * 255).astype(np.uint8)
    return label_keyframe(frame, tracks, index) if cast.roles else np.ascontiguousarray(frame[..., :3])


def timeline_payload(speakers, roles=(), mapping: str = "", how: str = "") -> dict:
    """What the editor's speaker timeline draws (js/cast_view.js): each speaker's speech in a lane coloured like
    the face track it drives (the keyframe's colours), and the mapping in words."""
    faces_of: dict[str, list[str]] = {}
    for role in roles:
        if role.speaker is not None:
            faces_of.setdefault(role.speaker.name, []).append(role.label)
    duration = max([s.speech.duration for s in speakers] or [0.0])
    return {"duration": round(duration, 6), "mapping": mapping, "how": how,
            "faces": [{"label": r.label, "colour": list(track_colour(r.label)), "frames": int(r.track.valid.sum())}
                      for r in roles],
            "speakers": [{"name": s.name, "faces": faces_of.get(s.name, []),
                          "speech": [[round(a, 3), round(b, 3)] for a, b in s.speech.speech]} for s in speakers]}


def cast_payload(cast: Cast) -> dict:
    """`timeline_payload` of a cast."""
    return timeline_payload(cast.speakers, cast.roles, cast.mapping_text(), cast.how)
