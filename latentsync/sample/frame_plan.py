"""Which output frames the sampler makes, from which input frames, in which windows, with how many steps.

Output frames follow the audio: output frame j is driven by audio chunk j (the features were taken at the
video's own frame times). Lengths (`plan_length`):
- audio longer than the video: "loop" plays the video forward, backward, forward, ... (the reference's
  ping-pong), "freeze" holds the last frame;
- audio shorter: "stop" ends the output with the audio, "keep" keeps the remaining frames unchanged.
The audio's length is its duration in frames (a frame counts when at least half of it has audio), capped at
the number of chunks, so the reference's two extra chunks past the end do not lengthen a clip whose audio
and video are equally long.

Windows (`plan_frames`): frames without a face are never diffused, so windows lie along runs of face frames.
- off / silence: each run is cut like the reference's grid, full windows then the remainder;
- skip / fast: non-speech stretches of at least `min_silence_s` are singled out. "skip" leaves them out
  (except `crossfade_frames` frames at their edges, generated and faded out into the original video);
  "fast" generates them with silence conditioning and `fast_steps` steps. Windows then follow the speech
  and silence runs, each cut into near-equal windows of at most `window` frames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..face.types import no_face_found
from .settings import AUDIO_LONGER, AUDIO_SHORTER, SamplerSettings


@dataclass(frozen=True)
class Window:
    """Output frames `start ... stop - 1`, denoised together in `steps` steps."""

    start: int
    stop: int
    steps: int

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def indices(self) -> np.ndarray:
        return np.arange(self.start, self.stop)


@dataclass
class FramePlan:
    """Per output frame: its input frame, how its chunk mixes with silence, how much of it is generated."""

    source_index: np.ndarray  # [M] int64: input frame each output frame is made from
    audio_frames: int  # output frames 0 ... audio_frames - 1 have audio (chunks)
    chunk_weight: np.ndarray  # [M] float32: 1 = the features' chunk, 0 = silence, between = a blend
    output_weight: np.ndarray  # [M] float32: weight of the generated frame in the output (0 = not generated)
    windows: list[Window]
    warnings: list[str] = field(default_factory=list)  # why nothing will be generated, when nothing will

    @property
    def frames(self) -> int:
        return len(self.source_index)

    @property
    def generated(self) -> np.ndarray:
        return self.output_weight > 0

    @property
    def total_steps(self) -> int:
        return sum(window.steps for window in self.windows)


def audio_frame_count(duration_s: float, fps: float, chunks: int) -> int:
    """Frames the audio drives: its duration in frames, rounded (a frame counts when at least half of it
    has audio), at least 1 and at most the number of chunks."""
    return max(1, min(int(chunks), int(math.floor(duration_s * fps + 0.5))))


def ping_pong(frames: int, length: int) -> np.ndarray:
    """Input indices for `length` output frames: forward, backward, forward, ... (ends repeat, as the
    reference's `loop_video` concatenates the video and its reverse)."""
    if frames == 1:
        return np.zeros(length, dtype=np.int64)
    period = np.concatenate([np.arange(frames), np.arange(frames)[::-1]])
    return period[np.arange(length) % (2 * frames)].astype(np.int64)


def plan_length(input_frames: int, audio_frames: int, longer: str = "loop",
                shorter: str = "stop") -> np.ndarray:
    """`source_index` [M]: the input frame of each output frame under the length rules."""
    if longer not in AUDIO_LONGER:
        raise ValueError(f"audio_longer must be one of {AUDIO_LONGER}, got {longer!r}")
    if shorter not in AUDIO_SHORTER:
        raise ValueError(f"audio_shorter must be one of {AUDIO_SHORTER}, got {shorter!r}")
    if input_frames < 1:
        raise ValueError("no input frames")
    if audio_frames > input_frames:
        if longer == "loop":
            return ping_pong(input_frames, audio_frames)
        return np.minimum(np.arange(audio_frames), input_frames - 1).astype(np.int64)
    length = audio_frames if shorter == "stop" else input_frames
    return np.arange(length, dtype=np.int64)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """`(start, stop)` of each run of True in a 1-D mask."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[0::2], edges[1::2])]


def grid_windows(start: int, stop: int, size: int, steps: int) -> list[Window]:
    """The reference's layout: full windows of `size`, then the remainder."""
    return [Window(a, min(a + size, stop), steps) for a in range(start, stop, size)]


def even_windows(start: int, stop: int, size: int, steps: int) -> list[Window]:
    """`ceil(n / size)` windows of near-equal length, so no run ends in a window of one or two frames,
    which would give the motion modules and the clip-wide norms little to work with."""
    count = math.ceil((stop - start) / size)
    edges = np.linspace(start, stop, count + 1).round().astype(int)
    return [Window(int(a), int(b), steps) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def speech_weights(speech_mask: np.ndarray, crossfade_frames: int) -> np.ndarray:
    """1 on speech frames, 0 on silence, ramping down over `crossfade_frames` non-speech frames at each edge.

    The ramp lies outside the speech so that speech is never muted; VAD segments already carry padding.
    """
    speech_mask = np.asarray(speech_mask, dtype=bool)
    weights = speech_mask.astype(np.float32)
    speech_at = np.flatnonzero(speech_mask)
    if crossfade_frames <= 0 or speech_at.size == 0:
        return weights
    frames = np.arange(speech_mask.size)
    after = np.searchsorted(speech_at, frames)  # first speech frame at or after each frame
    to_next = np.where(after < speech_at.size, speech_at[np.minimum(after, speech_at.size - 1)] - frames, np.inf)
    to_prev = np.where(after > 0, frames - speech_at[np.maximum(after - 1, 0)], np.inf)
    nearest = np.minimum(to_next, to_prev)
    ramp = np.clip(1.0 - nearest / (crossfade_frames + 1), 0.0, 1.0)
    return np.maximum(weights, ramp).astype(np.float32)


def long_silences(speech_mask: np.ndarray, min_frames: int) -> np.ndarray:
    """True on frames inside non-speech stretches of at least `min_frames` frames."""
    out = np.zeros(len(speech_mask), dtype=bool)
    for a, b in runs(~np.asarray(speech_mask, bool)):
        if b - a >= min_frames:
            out[a:b] = True
    return out


def plan_frames(input_frames: int, audio_frames: int, face_valid: np.ndarray, settings: SamplerSettings, *,
                fps: float, speech_mask: np.ndarray | None = None) -> FramePlan:
    """The whole plan for one clip (see the module docstring), every policy of `settings` applied here.

    `face_valid` [input_frames]: frames with a usable face. `speech_mask` [audio_frames]: True where someone
    speaks (needed by every policy but "off"). `fps` turns `min_silence_s` into frames.
    """
    vad_policy, window, steps = settings.vad_policy, settings.window, settings.steps
    crossfade_frames, min_silence_frames = settings.crossfade_frames, round(settings.min_silence_s * fps)
    source = plan_length(input_frames, audio_frames, settings.audio_longer, settings.audio_shorter)
    frames = len(source)
    audible = np.arange(frames) < audio_frames
    candidates = np.asarray(face_valid, bool)[source] & audible
    chunk_weight = np.ones(frames, np.float32)
    output_weight = candidates.astype(np.float32)
    windows: list[Window] = []

    if vad_policy != "off":
        if speech_mask is None:
            raise ValueError(f"vad_policy {vad_policy!r} needs to know where the speech is: pass the speech "
                             "segments (the VAD node's output), or features extracted with them")
        talk = np.zeros(frames, bool)
        talk[:audio_frames] = np.asarray(speech_mask, bool)[:audio_frames]
    if vad_policy in ("off", "silence"):
        if vad_policy == "silence":
            chunk_weight[:audio_frames] = speech_weights(talk[:audio_frames], crossfade_frames)
        for a, b in runs(candidates):
            windows += grid_windows(a, b, window, steps)
    else:
        quiet = np.zeros(frames, bool)
        quiet[:audio_frames] = long_silences(talk[:audio_frames], max(int(min_silence_frames), 1))
        # Fades reach from the frames that are generated in full into the quiet stretches.
        fade = speech_weights(~quiet[:audio_frames], crossfade_frames)
        if vad_policy == "skip":
            output_weight[:audio_frames] *= fade
            for a, b in runs(output_weight > 0):
                windows += even_windows(a, b, window, steps)
        else:
            chunk_weight[:audio_frames] = fade
            for a, b in runs(candidates & ~quiet):
                windows += even_windows(a, b, window, steps)
            for a, b in runs(candidates & quiet):
                windows += even_windows(a, b, window, settings.fast_steps)
            windows.sort(key=lambda w: w.start)
    return FramePlan(source_index=source, audio_frames=int(audio_frames), chunk_weight=chunk_weight,
                     output_weight=output_weight, windows=windows,
                     warnings=nothing_done(face_valid, candidates, output_weight, vad_policy,
                                           None if vad_policy == "off" else talk[:audio_frames]))


def nothing_done(face_valid: np.ndarray, candidates: np.ndarray, output_weight: np.ndarray, vad_policy: str,
                 talk: np.ndarray | None) -> list[str]:
    """One line saying why no frame will be generated, when none will (else nothing): a run that changes
    nothing must say so instead of passing the video through in silence."""
    if np.any(output_weight > 0):
        return []
    unchanged = "nothing was lip-synced: the output is the input's frames, unchanged"
    face_valid = np.asarray(face_valid, bool)
    if not face_valid.any():
        return [f"{no_face_found(len(face_valid))}; {unchanged}"]
    if not np.any(candidates):
        return [f"the frames with a face lie outside the audio's length; {unchanged}"]
    if vad_policy == "skip" and talk is not None and not np.any(talk):
        return [f"no speech was found in the audio and vad_policy 'skip' leaves silent frames alone (lower the VAD "
                f"threshold, or use vad_policy 'silence' to close the mouth); {unchanged}"]
    return [f"vad_policy {vad_policy!r} left no frame to generate; {unchanged}"]
