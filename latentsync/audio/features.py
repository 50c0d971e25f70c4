"""Audio -> per-video-frame whisper features: the UNet's cross-attention context, one `[50, 384]` chunk a frame.

Matches LatentSync's `Audio2Feature` (log-mel of the whole file, independent 30 s windows padded in the
log-mel domain, 5 hidden states without `ln_post`, 10 feature rows per frame) and generalises it:
- any frame rate (the reference only knows 25 fps);
- optional silence during non-speech (VAD), so the mouth rests instead of mumbling to breath and noise;
- optional overlapping windows, which remove the jump in the features every 30 s (LatentSync issue #151).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..media.audio import SAMPLE_RATE, to_mono_16k
from ..memory import check_fits
from .vad import SpeechSegments
from .whisper import WhisperEncoder

N_FFT = 400
HOP = 160  # 10 ms: 100 log-mel frames per second
ROWS_PER_SECOND = 50  # encoder steps per second (conv2 has stride 2)
ROWS_PER_FRAME = 10  # 0.2 s of features per video frame, as LatentSync's audio_feat_length=[2, 2] at 25 fps
SPEECH_POLICIES = ("keep", "silence")


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

    The dynamic-range floor (max - 8) is taken over the whole input, as LatentSync does, not per window.
    """
    audio = audio16k.detach().to("cpu", torch.float32)
    spectrum = torch.stft(audio, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = spectrum[..., :-1].abs() ** 2
    log_spec = torch.clamp(mel_filters(n_mels) @ power, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def window_plan(num_rows: int, *, seamless: bool, context_rows: int,
                window_rows: int = 1500) -> list[tuple[int, int, int, np.ndarray]]:
    """Which encoder windows make up `num_rows` feature rows: `(window start, lo, hi, weights[hi - lo])`.

    Reference: back-to-back windows, each row from exactly one. Seamless: windows hop by
    `window_rows - 2 * context_rows`; in the middle of each overlap the rows cross-fade linearly from one
    window to the next over `context_rows` rows, so no single step in the features jumps. Every row with
    weight > 0 then has at least `context_rows / 2` rows of its window on both sides (or the clip edge).
    """
    if not seamless:
        context_rows = 0
    elif not 0 <= context_rows <= window_rows // 3:
        raise ValueError(f"seamless context must be 0-{window_rows // 3 / ROWS_PER_SECOND:g} s, "
                         f"got {context_rows / ROWS_PER_SECOND:g} s")
    hop = window_rows - 2 * context_rows
    starts = [0]
    while starts[-1] + window_rows < num_rows:
        starts.append(starts[-1] + hop)
    # Blend k runs over [centre - half, centre + half) around the middle of the overlap of windows k, k+1.
    centres = [start + context_rows for start in starts[1:]]
    half = context_rows / 2
    plan = []
    for k, start in enumerate(starts):
        lo, hi = (centres[k - 1] - half if k else 0), (centres[k] + half if k < len(centres) else num_rows)
        lo, hi = max(int(math.floor(lo)), start), min(int(math.ceil(hi)), start + window_rows, num_rows)
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
               context_s: float = 5.0, batch_windows: int = 4) -> torch.Tensor:
    """Whisper hidden states `[L, n_layer + 1, width]` float32 at 50 rows/s, `L = floor(mel frames / 2)`.

    Each 30 s window is zero-padded in the log-mel domain and encoded on its own (the reference's
    recipe). `seamless` overlaps the windows by `2 * context_s` and cross-fades them (`window_plan`).
    Audio up to 30 s is one window either way.
    """
    window_rows = encoder.dims.n_audio_ctx
    num_rows = mel.shape[-1] // 2
    plan = window_plan(num_rows, seamless=seamless, context_rows=round(context_s * ROWS_PER_SECOND),
                       window_rows=window_rows)
    windows = torch.zeros(len(plan), mel.shape[0], encoder.window_frames)
    for w, (start, *_) in enumerate(plan):
        piece = mel[:, 2 * start: 2 * start + encoder.window_frames]
        windows[w, :, :piece.shape[-1]] = piece
    # Identical neighbours (the full windows of a silent signal) are encoded once.
    source = list(range(len(plan)))
    for w in range(1, len(plan)):
        if torch.equal(windows[w], windows[source[w - 1]]):
            source[w] = source[w - 1]
    unique = sorted(set(source))
    param = next(encoder.parameters())
    out = torch.zeros(num_rows, encoder.dims.n_audio_layer + 1, encoder.dims.n_audio_state)
    for first in range(0, len(unique), batch_windows):
        group = unique[first:first + batch_windows]
        states = dict(zip(group, encoder(windows[group].to(param.device, param.dtype)).float().cpu()))
        for w, (start, lo, hi, weights) in enumerate(plan):
            if source[w] not in states:
                continue
            rows = states[source[w]][lo - start: hi - start]
            if (weights == 1).all():  # exact copy, so reference mode is bit-identical to plain windows
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
    four on each side. At other rates the window is centred on the row boundary nearest to the frame's
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


def speech_weights(mask: np.ndarray, crossfade_frames: int) -> np.ndarray:
    """1 on speech frames, 0 on silence, ramping down over `crossfade_frames` non-speech frames at each edge.

    The ramp lies outside the speech so that speech is never muted; VAD segments already carry padding.
    """
    mask = np.asarray(mask, dtype=bool)
    weights = mask.astype(np.float32)
    speech_at = np.flatnonzero(mask)
    if crossfade_frames <= 0 or speech_at.size == 0:
        return weights
    frames = np.arange(mask.size)
    after = np.searchsorted(speech_at, frames)  # first speech frame at or after each frame
    to_next = np.where(after < speech_at.size, speech_at[np.minimum(after, speech_at.size - 1)] - frames, np.inf)
    to_prev = np.where(after > 0, frames - speech_at[np.maximum(after - 1, 0)], np.inf)
    nearest = np.minimum(to_next, to_prev)
    ramp = np.clip(1.0 - nearest / (crossfade_frames + 1), 0.0, 1.0)
    return np.maximum(weights, ramp).astype(np.float32)


@dataclass(frozen=True)
class AudioFeatures:
    """Whisper features of a clip and the per-frame chunks a video of `frames` frames at `fps` is driven by."""

    features: torch.Tensor  # [L, 5, 384] float32, 50 rows per second
    chunks: torch.Tensor  # [N, 50, 384] float32, one per video frame
    speech_mask: torch.Tensor  # [N] bool; all True when no speech segments were given
    speech_weight: torch.Tensor  # [N] float32 in [0, 1]: how much of each chunk is the speech features
    rows: np.ndarray  # [N, 10] feature rows each frame was built from
    fps: float
    duration: float  # seconds of audio
    speech_policy: str
    seamless: bool
    # [L, 5, 384]: whisper's features of digital silence as long as the audio (None unless speech segments
    # or the silence policy were given): what the sampler's VAD policies condition non-speech frames on.
    silence_features: torch.Tensor | None = None

    @property
    def frames(self) -> int:
        return int(self.chunks.shape[0])

    def silence_chunks(self, frames: np.ndarray | slice | None = None) -> torch.Tensor:
        """Chunks of digital silence `[n, 50, 384]` for some frames (all by default), gathered from the same
        rows as `chunks`; raises `ValueError` when the features were made without speech segments."""
        if self.silence_features is None:
            raise ValueError("these audio features carry no silence features: extract them with the speech "
                             "segments (extract_features(..., segments=...)) or the 'silence' speech policy")
        rows = self.rows if frames is None else self.rows[frames]
        return gather_chunks(self.silence_features, np.atleast_2d(rows))

    def summary(self) -> dict:
        return {"duration": round(self.duration, 6), "fps": self.fps, "frames": self.frames,
                "features": list(self.features.shape), "chunks": list(self.chunks.shape),
                "speech_frames": int(self.speech_mask.sum()), "speech_policy": self.speech_policy,
                "seamless": self.seamless}


def extract_features(waveform: torch.Tensor | np.ndarray, sample_rate: int, encoder: WhisperEncoder, *,
                     fps: float = 25.0, frames: int | None = None, segments: SpeechSegments | None = None,
                     speech_policy: str = "keep", crossfade_frames: int = 3, seamless: bool = False,
                     context_s: float = 5.0) -> AudioFeatures:
    """Whisper features and per-frame chunks for `frames` video frames at `fps` (any rate).

    `frames=None` gives LatentSync's count for this audio (`reference_frame_count`, 82 for 3.2 s at 25 fps).
    With more frames than audio, the extra frames repeat the last feature row (the reference's clamping);
    with fewer, the rest of the audio is unused. `speech_policy="silence"` needs `segments`: frames whose
    centre is outside speech get the chunks whisper gives for digital silence of the same length (frames
    past the end of the audio count as non-speech), blended in over `crossfade_frames` frames.
    `seamless=True` overlaps the 30 s windows by `2 * context_s`; audio up to 30 s is unaffected.
    """
    if speech_policy not in SPEECH_POLICIES:
        raise ValueError(f"speech_policy must be one of {SPEECH_POLICIES}, got {speech_policy!r}")
    if speech_policy == "silence" and segments is None:
        raise ValueError("speech_policy='silence' needs the speech segments from detect_speech")
    if crossfade_frames < 0:
        raise ValueError(f"crossfade_frames must be >= 0, got {crossfade_frames}")
    _check_fps(fps)
    if frames is not None and frames <= 0:
        raise ValueError(f"frames must be positive, got {frames}")
    audio = to_mono_16k(waveform, sample_rate)
    duration = audio.numel() / SAMPLE_RATE
    num_rows = audio.numel() // HOP // 2  # what encode_mel will return, known before encoding
    if frames is None:
        frames = reference_frame_count(num_rows, fps)
    _check_feature_memory(encoder, num_rows, frames, with_silence=segments is not None or speech_policy == "silence",
                          blend=speech_policy == "silence")
    if segments is not None and abs(segments.duration - duration) > 0.1:
        raise ValueError(f"the speech segments are for {segments.duration:.2f} s of audio but this audio is "
                         f"{duration:.2f} s; run detect_speech on the same audio")
    features = encode_mel(encoder, log_mel_spectrogram(audio, encoder.dims.n_mels), seamless=seamless,
                          context_s=context_s)
    rows = frame_feature_rows(features.shape[0], fps, frames)
    chunks = gather_chunks(features, rows)

    mask = segments.speech_mask(fps, frames) if segments is not None else np.ones(frames, dtype=bool)
    weight = np.ones(frames, dtype=np.float32)
    silent = None
    if segments is not None or speech_policy == "silence":
        # Whisper of digital silence is cheap (identical 30 s windows are encoded once) and lets the sampler
        # quiet the mouth on any frames it chooses, not only those chosen here.
        silent = encode_mel(encoder, log_mel_spectrogram(torch.zeros_like(audio), encoder.dims.n_mels),
                            seamless=seamless, context_s=context_s)
    if speech_policy == "silence":
        weight = speech_weights(mask, crossfade_frames)
        if (weight < 1).any():
            w = torch.from_numpy(weight)[:, None, None]
            chunks = w * chunks + (1 - w) * gather_chunks(silent, rows)
    return AudioFeatures(features=features, chunks=chunks.contiguous(), speech_mask=torch.from_numpy(mask),
                         speech_weight=torch.from_numpy(weight), rows=rows, fps=float(fps), duration=duration,
                         speech_policy=speech_policy, seamless=seamless, silence_features=silent)


def _check_feature_memory(encoder: WhisperEncoder, num_rows: int, frames: int, *, with_silence: bool,
                          blend: bool) -> None:
    """Refuse a frame count whose chunks cannot fit in RAM, before encoding anything."""
    row_bytes = (encoder.dims.n_audio_layer + 1) * encoder.dims.n_audio_state * 4
    chunk_bytes = frames * ROWS_PER_FRAME * row_bytes
    # The silence policy's blend holds the chunks, silence's chunks, both weighted and their sum at once.
    needed = num_rows * row_bytes * (2 if with_silence else 1) + chunk_bytes * (5 if blend else 1)
    check_fits(needed, f"whisper features for {frames} frames ({ROWS_PER_FRAME * row_bytes // 1024} KiB each)",
               "frames (0 = as many as the audio lasts) or fps, or use shorter audio", "cpu")


def window_seams(num_rows: int, window_rows: int = 1500) -> list[int]:
    """Rows where the reference starts a new, independent 30 s window (the first row of each)."""
    return list(range(window_rows, num_rows, window_rows))


def step_ratios(features: torch.Tensor, neighbourhood: int = 50) -> torch.Tensor:
    """`[L]`: entry r is the feature step from row r-1 to r relative to the median step within
    `neighbourhood` rows of it (entry 0 is 0). Steps are RMS differences over all layers and channels;
    about 1 is ordinary, a seam between independently encoded windows shows up as a spike."""
    steps = (features[1:] - features[:-1]).pow(2).mean(dim=tuple(range(1, features.ndim))).sqrt()
    if steps.numel() == 0:
        return torch.zeros(features.shape[0])
    width = min(neighbourhood, steps.numel() - 1)
    padded = torch.cat([steps[:1].expand(width), steps, steps[-1:].expand(width)])
    local = padded.unfold(0, 2 * width + 1, 1).median(dim=1).values
    return torch.cat([torch.zeros(1), steps / local.clamp_min(1e-12)])


def seam_discontinuity(features: torch.Tensor, seam: int, neighbourhood: int = 50) -> float:
    """`step_ratios` at one row, e.g. a 30 s window boundary from `window_seams`: ~1 means no seam."""
    if not 0 < seam < features.shape[0]:
        raise ValueError(f"seam row {seam} is outside the features (0 < seam < {features.shape[0]})")
    return float(step_ratios(features, neighbourhood)[seam])
