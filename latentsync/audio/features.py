"""Audio -> per-video-frame whisper features: the UNet's cross-attention context, one `[50, 384]` chunk a frame.

Matches LatentSync's `Audio2Feature` (log-mel of the whole file, independent 30 s spans padded in the
log-mel domain, 5 hidden states without `ln_post`, 10 feature rows per frame) and generalises it:
- any frame rate (the reference only knows 25 fps);
- whisper's features of digital silence beside the audio's own, and the per-frame speech mask of the VAD's
  segments, so the sampler's frame plan can quiet the mouth in pauses (the VAD policies live there, not here);
- optional overlapping spans, which remove the jump in the features every 30 s (LatentSync issue #151).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch

from ..media.audio import SAMPLE_RATE, to_mono_16k
from ..core.memory import check_fits
from ..core.options import Option
from .vad import SpeechSegments
from .whisper import WhisperEncoder

N_FFT = 400
HOP = 160  # 10 ms: 100 log-mel frames per second
ROWS_PER_SECOND = 50  # encoder steps per second (conv2 has stride 2)
# The video's frame rate, which the features are made for and the sampler and the scorer take frames at.
FPS = Option("fps", 25.0, "Frame rate of the video (GetVideoComponents' or Video Info's fps).", 1.0, 240.0, step=0.001)
ROWS_PER_FRAME = 10  # 0.2 s of features per video frame, as LatentSync's audio_feat_length=[2, 2] at 25 fps


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = 80, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Slaney-style mel filterbank `[n_mels, n_fft // 2 + 1]`, the one whisper ships (librosa's defaults)."""
    def hz_to_mel(hz: np.ndarray) -> np.ndarray:
        # Slaney's scale: linear below 1 kHz, logarithmic above.
        hz = np.asarray(hz, dtype=np.float64)
        log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) * 27.0 / np.log(6.4)
        return np.where(hz < 1000.0, hz * 3.0 / 200.0, log_part)

    def mel_to_hz(mel: np.ndarray) -> np.ndarray:
        return np.where(mel < 15.0, mel * 200.0 / 3.0, 1000.0 * np.exp((mel - 15.0) * np.log(6.4) / 27.0))

    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(edges_hz)
    offsets = edges_hz[:, None] - fft_hz[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]  # Slaney norm: equal area per filter
    return torch.from_numpy(weights.astype(np.float32))


def log_mel_spectrogram(audio16k: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """Whisper's log-mel `[n_mels, floor(T / 160)]` of 16 kHz mono audio, normalised over the whole clip.

    The dynamic-range floor (max - 8) is taken over the whole input, as LatentSync does, not per span.
    """
    audio = audio16k.detach().to("cpu", torch.float32)
    spectrum = torch.stft(audio, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = spectrum[..., :-1].abs() ** 2
    log_spec = torch.clamp(mel_filters(n_mels) @ power, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def span_plan(num_rows: int, *, seamless: bool, context_rows: int,
              span_rows: int = 1500) -> list[tuple[int, int, int, np.ndarray]]:
    """Which encoder spans make up `num_rows` feature rows: `(span start, lo, hi, weights[hi - lo])`.

    A span is what whisper encodes at once: 30 s (1500 feature rows).

    Reference: back-to-back spans, each row from exactly one. Seamless: spans hop by
    `span_rows - 2 * context_rows`; in the middle of each overlap the rows cross-fade linearly from one
    span to the next over `context_rows` rows, so no single step in the features jumps. Every row with
    weight > 0 then has at least `context_rows / 2` rows of its span on both sides (or the clip edge).
    """
    if not seamless:
        context_rows = 0
    elif not 0 <= context_rows <= span_rows // 3:
        raise ValueError(f"seamless context must be 0-{span_rows // 3 / ROWS_PER_SECOND:g} s, "
                         f"got {context_rows / ROWS_PER_SECOND:g} s")
    hop = span_rows - 2 * context_rows
    starts = [0]
    while starts[-1] + span_rows < num_rows:
        starts.append(starts[-1] + hop)
    # Blend k runs over [centre - half, centre + half) around the middle of the overlap of spans k, k+1.
    centres = [start + context_rows for start in starts[1:]]
    half = context_rows / 2
    plan = []
    for k, start in enumerate(starts):
        lo, hi = (centres[k - 1] - half if k else 0), (centres[k] + half if k < len(centres) else num_rows)
        lo, hi = max(int(math.floor(lo)), start), min(int(math.ceil(hi)), start + span_rows, num_rows)
        rows = np.arange(lo, hi) + 0.5
        weights = np.ones(hi - lo)
        if k:
            weights *= _ramp(rows, centres[k - 1], half)
        if k < len(centres):
            weights *= 1.0 - _ramp(rows, centres[k], half)
        plan.append((start, lo, hi, weights.astype(np.float32)))
    return plan


def _ramp(rows: np.ndarray, centre: float, half: float) -> np.ndarray:
    if half <= 0:
        return (rows >= centre).astype(np.float64)
    return np.clip((rows - (centre - half)) / (2 * half), 0.0, 1.0)


@torch.no_grad()
def encode_mel(encoder: WhisperEncoder, mel: torch.Tensor, *, seamless: bool = False,
               context_s: float = 5.0, batch_spans: int = 4) -> torch.Tensor:
    """Whisper hidden states `[L, n_layer + 1, width]` float32 at 50 rows/s, `L = floor(mel frames / 2)`.

    Each 30 s span is zero-padded in the log-mel domain and encoded on its own (the reference's
    recipe). `seamless` overlaps the spans by `2 * context_s` and cross-fades them (`span_plan`).
    Audio up to 30 s is one span either way.
    """
    span_rows = encoder.dims.n_audio_ctx
    num_rows = mel.shape[-1] // 2
    plan = span_plan(num_rows, seamless=seamless, context_rows=round(context_s * ROWS_PER_SECOND),
                     span_rows=span_rows)
    spans = torch.zeros(len(plan), mel.shape[0], encoder.span_frames)
    for w, (start, *_) in enumerate(plan):
        piece = mel[:, 2 * start: 2 * start + encoder.span_frames]
        spans[w, :, :piece.shape[-1]] = piece
    # Identical neighbours (the full spans of a silent signal) are encoded once.
    source = list(range(len(plan)))
    for w in range(1, len(plan)):
        if torch.equal(spans[w], spans[source[w - 1]]):
            source[w] = source[w - 1]
    unique = sorted(set(source))
    param = next(encoder.parameters())
    out = torch.zeros(num_rows, encoder.dims.n_audio_layer + 1, encoder.dims.n_audio_state)
    for first in range(0, len(unique), batch_spans):
        group = unique[first:first + batch_spans]
        states = dict(zip(group, encoder(spans[group].to(param.device, param.dtype)).float().cpu()))
        for w, (start, lo, hi, weights) in enumerate(plan):
            if source[w] not in states:
                continue
            rows = states[source[w]][lo - start: hi - start]
            if (weights == 1).all():  # exact copy, so reference mode is bit-identical to plain spans
                out[lo:hi] += rows
            else:
                out[lo:hi] += torch.from_numpy(weights)[:, None, None] * rows
    return out


def reference_frame_count(num_rows: int, fps: float) -> int:
    """How many frames LatentSync generates for `num_rows` feature rows: it appends frames while the
    frame's start row `int(i * 50 / fps)` is within the audio, plus the first one past it. At 25 fps this
    is `floor(L / 2) + 2`, two more than the audio's own frame count (82 for 3.2 s)."""
    _check_fps(fps)
    step = ROWS_PER_SECOND / float(fps)
    # Every frame before `sure` starts within the audio; only the few around the end are tested (a huge fps
    # would otherwise allocate one test per frame before the memory check can refuse the count).
    sure = max(0, int((num_rows + 1) / step) - 2)
    candidates = np.arange(sure, sure + 6)
    return sure + int((np.floor(candidates * step + 1e-9) <= num_rows).sum()) + 1


def frame_feature_rows(num_rows: int, fps: float, frames: int) -> np.ndarray:
    """Feature rows `[frames, 10]` for each video frame: the 10 rows centred on the frame's middle.

    At 25 fps this is the reference's `clamp(2i - 4 ... 2i + 5, 0, L - 1)`: the frame's own two rows plus
    four on each side. At other rates the ten rows are centred on the row boundary nearest to the frame's
    centre time (i + 0.5) / fps, so it is off by at most half a row (10 ms). Rows beyond the audio repeat
    the first or last row, as in the reference, so frames past the end of the audio see its last row.
    """
    _check_fps(fps)
    if num_rows <= 0:
        raise ValueError("no feature rows: the audio is shorter than 20 ms")
    centres = (np.arange(frames, dtype=np.float64) + 0.5) * (ROWS_PER_SECOND / float(fps))
    first = np.floor(centres + 0.5 + 1e-9).astype(np.int64) - ROWS_PER_FRAME // 2
    return np.clip(first[:, None] + np.arange(ROWS_PER_FRAME), 0, num_rows - 1)


def _check_fps(fps: float) -> None:
    try:
        ok = math.isfinite(float(fps)) and float(fps) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"fps must be a positive number, got {fps!r}")


def gather_chunks(features: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """`[frames, 10 * layers, width]` chunks, time-major (row 0's layers, then row 1's, ...) as LatentSync."""
    picked = features[torch.from_numpy(rows)]
    return picked.reshape(rows.shape[0], -1, features.shape[-1])


@dataclass(frozen=True)
class AudioFeatures:
    """Whisper features of a clip and the per-frame chunks a video of `frames` frames at `fps` is driven by,
    with the same of digital silence and, when the VAD's segments were given, where the speech is.

    Chunks are gathered when asked for (`chunks`, `mixed_chunks`), so a long clip holds its feature rows
    (750 KiB a second of audio, silence's included) and not also 75 KiB per video frame."""

    features: torch.Tensor  # [L, 5, 384] float32, 50 rows per second
    silence_features: torch.Tensor  # [L, 5, 384]: whisper's features of digital silence as long as the audio
    rows: np.ndarray  # [N, 10] feature rows each frame's chunk is made of
    fps: float
    duration: float  # seconds of audio
    seamless: bool
    speech: SpeechSegments | None = None  # the VAD's segments the features were made with, if any

    def with_speech(self, speech: SpeechSegments | None) -> "AudioFeatures":
        """These features with the VAD's `speech` segments, which the sampler's policies read (the chunks do not
        depend on them); None keeps the features' own."""
        return self if speech is None else replace(self, speech=speech)

    @property
    def frames(self) -> int:
        return int(self.rows.shape[0])

    @property
    def chunk_shape(self) -> tuple[int, int]:
        """`(50, 384)`: one frame's chunk, its rows' layers one after the other."""
        return self.rows.shape[1] * self.features.shape[1], self.features.shape[2]

    @property
    def chunks(self) -> torch.Tensor:
        """Every frame's chunk `[N, 50, 384]` at once; the sampler takes a window's at a time instead."""
        return gather_chunks(self.features, self.rows)

    @property
    def speech_mask(self) -> torch.Tensor:
        """`[N]` bool: frames whose centre lies in speech (all True when no segments were given)."""
        if self.speech is None:
            return torch.ones(self.frames, dtype=torch.bool)
        return torch.from_numpy(self.speech.speech_mask(self.fps, self.frames))

    def silence_chunks(self, frames: np.ndarray | slice | None = None) -> torch.Tensor:
        """Chunks of digital silence `[n, 50, 384]` for some frames (all by default), from the same rows as
        `chunks`: what a frame is conditioned on for the mouth to rest."""
        rows = self.rows if frames is None else self.rows[frames]
        return gather_chunks(self.silence_features, np.atleast_2d(rows))

    def mixed_chunks(self, frames: np.ndarray, weight: np.ndarray) -> torch.Tensor:
        """`[n, 50, 384]`: the chunks of `frames` blended with silence's, `weight` [n] of the speech (1 = its own
        chunk, exactly; 0 = silence)."""
        frames = np.asarray(frames)
        chunks = gather_chunks(self.features, np.atleast_2d(self.rows[frames]))
        weight = np.asarray(weight, dtype=np.float32)
        if (weight >= 1).all():
            return chunks
        w = torch.from_numpy(weight)[:, None, None]
        return w * chunks + (1 - w) * self.silence_chunks(frames)

    def summary(self) -> dict:
        return {"duration": round(self.duration, 6), "fps": self.fps, "frames": self.frames,
                "features": list(self.features.shape), "chunks": [self.frames, *self.chunk_shape],
                "speech_frames": int(self.speech_mask.sum()), "speech_segments": self.speech is not None,
                "seamless": self.seamless}


def extract_features(waveform: torch.Tensor | np.ndarray, sample_rate: int, encoder: WhisperEncoder, *,
                     fps: float = FPS.default, frames: int | None = None, segments: SpeechSegments | None = None,
                     seamless: bool = False, context_s: float = 5.0) -> AudioFeatures:
    """Whisper features and per-frame chunks for `frames` video frames at `fps` (any rate).

    `frames=None` gives LatentSync's count for this audio (`reference_frame_count`, 82 for 3.2 s at 25 fps).
    With more frames than audio, the extra frames repeat the last feature row (the reference's clamping);
    with fewer, the rest of the audio is unused. `segments` (from `detect_speech`) ride along as the speech
    mask: a frame is speech when its centre is inside a segment (frames past the end of the audio are not).
    The chunks are always the audio's own; the sampler's frame plan decides which frames get silence.
    `seamless=True` overlaps the 30 s spans by `2 * context_s`; audio up to 30 s is unaffected.
    """
    _check_fps(fps)
    if frames is not None and frames <= 0:
        raise ValueError(f"frames must be positive, got {frames}")
    audio = to_mono_16k(waveform, sample_rate)
    duration = audio.numel() / SAMPLE_RATE
    num_rows = audio.numel() // HOP // 2  # what encode_mel will return, known before encoding
    if frames is None:
        frames = reference_frame_count(num_rows, fps)
    _check_feature_memory(encoder, num_rows, frames)
    if segments is not None and abs(segments.duration - duration) > 0.1:
        raise ValueError(f"the speech segments are for {segments.duration:.2f} s of audio but this audio is "
                         f"{duration:.2f} s; run detect_speech on the same audio")
    features = encode_mel(encoder, log_mel_spectrogram(audio, encoder.dims.n_mels), seamless=seamless,
                          context_s=context_s)
    # Whisper of digital silence is cheap (identical 30 s spans are encoded once) and lets the sampler quiet
    # the mouth on whichever frames its policy chooses.
    silent = encode_mel(encoder, log_mel_spectrogram(torch.zeros_like(audio), encoder.dims.n_mels),
                        seamless=seamless, context_s=context_s)
    rows = frame_feature_rows(features.shape[0], fps, frames)
    return AudioFeatures(features=features, silence_features=silent, rows=rows, fps=float(fps), duration=duration,
                         seamless=seamless, speech=segments)


def _check_feature_memory(encoder: WhisperEncoder, num_rows: int, frames: int) -> None:
    """Refuse audio or a frame count whose features cannot fit in RAM, before encoding anything."""
    row_bytes = (encoder.dims.n_audio_layer + 1) * encoder.dims.n_audio_state * 4
    # The audio's feature rows and silence's, and the rows each frame's chunk is made of.
    needed = num_rows * row_bytes * 2 + frames * ROWS_PER_FRAME * 8
    check_fits(needed, f"whisper features of {num_rows / ROWS_PER_SECOND:.0f} s of audio for {frames} frames",
               "frames (0 = as many as the audio lasts) or fps, or use shorter audio", "cpu")


def span_seams(num_rows: int, span_rows: int = 1500) -> list[int]:
    """Rows where the reference starts a new, independent 30 s span (the first row of each)."""
    return list(range(span_rows, num_rows, span_rows))


def step_ratios(features: torch.Tensor, neighbourhood: int = 50) -> torch.Tensor:
    """`[L]`: entry r is the feature step from row r-1 to r relative to the median step within
    `neighbourhood` rows of it (entry 0 is 0). Steps are RMS differences over all layers and channels;
    about 1 is ordinary, a seam between independently encoded spans shows up as a spike."""
    steps = (features[1:] - features[:-1]).pow(2).mean(dim=tuple(range(1, features.ndim))).sqrt()
    if steps.numel() == 0:
        return torch.zeros(features.shape[0])
    width = min(neighbourhood, steps.numel() - 1)
    padded = torch.cat([steps[:1].expand(width), steps, steps[-1:].expand(width)])
    local = padded.unfold(0, 2 * width + 1, 1).median(dim=1).values
    return torch.cat([torch.zeros(1), steps / local.clamp_min(1e-12)])


def seam_discontinuity(features: torch.Tensor, seam: int, neighbourhood: int = 50) -> float:
    """`step_ratios` at one row, e.g. a 30 s span boundary from `span_seams`: ~1 means no seam."""
    if not 0 < seam < features.shape[0]:
        raise ValueError(f"seam row {seam} is outside the features (0 < seam < {features.shape[0]})")
    return float(step_ratios(features, neighbourhood)[seam])
