"""LSE-C, LSE-D and the AV offset, computed exactly as LatentSync's reference evaluation does.

Per face-crop clip at 25 fps with 16 kHz audio (`SyncNetEval.evaluate`, vshift 15):
- MFCCs as `python_speech_features.mfcc(int16 samples, 16000)` computes them (re-implemented here in
  float64 numpy, no dependency), 100 per second, so 4 MFCC steps per video frame;
- N = min(frames, samples // 640) - 5 snippets (0.2 s each; the reference calls them windows); snippet i is
  frames [i, i+5) and MFCC columns [4i, 4i+20);
- d[i, k] = ||v_i - a_(i+k-15) + 1e-6||, with a_j the zero vector outside 0..N-1 (padded terms count);
- mean over snippets per k; LSE-D = min, offset = 15 - first argmin, LSE-C = median - min.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np
import torch

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
MFCC_STEPS_PER_FRAME = 4
SNIPPET_FRAMES = 5
SNIPPET_MFCC_STEPS = 20
MAX_SHIFT = 15
MIN_FRAMES = SNIPPET_FRAMES + 1  # the reference never uses the last frame, so one snippet needs six
CROP_SIZE = 224
SILENCE_DBFS = -70.0  # quieter than a quiet room; speech sits around -20 to -30 dBFS


class SyncScoreError(ValueError):
    """The clip cannot be scored as given; the message says why and what to do."""


@dataclass(frozen=True)
class SyncScore:
    """The reference metric for one clip (or the mean over its face tracks).

    `distances[k]` is the mean distance with the audio shifted by k - 15 frames; `offset > 0` means the
    video lags the audio by that many frames. `crops` says where the face crops came from: "s3fd" (the
    reference detector, comparable with papers), "pack" (face boxes from this pack or the caller), or
    "input" (the frames were already face crops).
    """

    lse_c: float
    lse_d: float
    offset: int
    distances: np.ndarray
    crops: str
    snippets: int  # 5-frame snippets scored
    snippet_distances: np.ndarray = field(repr=False)
    framewise_conf: np.ndarray = field(repr=False)
    first_frame: int = 0
    tracks: tuple[SyncScore, ...] = field(default=(), repr=False)
    jpeg: bool = False

    def to_json(self) -> dict:
        """The score as the `score` command prints it; "windows" counts the snippets (the reference's name)."""
        out = {"lse_c": self.lse_c, "lse_d": self.lse_d, "offset": self.offset, "crops": self.crops,
               "jpeg": self.jpeg, "windows": self.snippets, "distances": [round(float(d), 6) for d in self.distances]}
        if self.tracks:
            out["tracks"] = [{"first_frame": t.first_frame, "windows": t.snippets, "lse_c": t.lse_c,
                              "lse_d": t.lse_d, "offset": t.offset} for t in self.tracks]
        return out


# ---------------------------------------------------------------- MFCC (python_speech_features 0.6 defaults)

def _mel_filterbank(n_filters: int = 26, nfft: int = 512, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    high_mel = 2595.0 * np.log10(1.0 + (sample_rate / 2) / 700.0)
    mel_points = np.linspace(0.0, high_mel, n_filters + 2)
    hz_points = 700.0 * (10 ** (mel_points / 2595.0) - 1.0)
    edges = np.floor((nfft + 1) * hz_points / sample_rate)
    bank = np.zeros((n_filters, nfft // 2 + 1))
    for j in range(n_filters):
        lo, mid, hi = edges[j], edges[j + 1], edges[j + 2]
        for i in range(int(lo), int(mid)):
            bank[j, i] = (i - lo) / (mid - lo)
        for i in range(int(mid), int(hi)):
            bank[j, i] = (hi - i) / (hi - mid)
    return bank


_FILTERBANK = _mel_filterbank()


def mfcc(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """`[F, 13]` float64 MFCCs of 16 kHz samples, as `python_speech_features.mfcc(samples, 16000)`.

    The reference passes raw int16 values (not scaled to [-1, 1]); the scale only moves coefficient 0.
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"the SyncNet MFCCs are defined at {SAMPLE_RATE} Hz, got {sample_rate}")
    signal = np.asarray(samples)
    if signal.ndim != 1 or signal.size == 0:
        raise ValueError(f"expected a non-empty 1-D signal, got shape {signal.shape}")
    signal = signal.astype(np.float64)
    emphasised = np.concatenate([signal[:1], signal[1:] - 0.97 * signal[:-1]])
    frame_len, hop = 400, 160
    count = 1 if signal.size <= frame_len else 1 + -(-(signal.size - frame_len) // hop)
    padded = np.concatenate([emphasised, np.zeros((count - 1) * hop + frame_len - signal.size)])
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_len)[::hop]  # a view, not a copy
    power = 1.0 / 512 * np.square(np.absolute(np.fft.rfft(frames, 512)))
    energy = power.sum(axis=1)
    eps = np.finfo(float).eps
    energy = np.where(energy == 0, eps, energy)
    mel = np.dot(power, _FILTERBANK.T)
    mel = np.where(mel == 0, eps, mel)
    from scipy.fftpack import dct

    cepstra = dct(np.log(mel), type=2, axis=1, norm="ortho")[:, :13]
    cepstra = cepstra * (1 + 11.0 * np.sin(np.pi * np.arange(13) / 22))
    cepstra[:, 0] = np.log(energy)
    return cepstra


def pcm16(waveform: np.ndarray | torch.Tensor) -> np.ndarray:
    """Float samples in [-1, 1] -> int16 values, as ffmpeg writes the reference's s16 WAV."""
    audio = torch.as_tensor(waveform).detach().cpu().double().numpy()
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)


def check_audio(samples: np.ndarray) -> None:
    """Raise `SyncScoreError` for digitally silent or near-silent 16 kHz int16 audio."""
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64))))) if samples.size else 0.0
    level = 20 * np.log10(max(rms, 1e-9) / 32768.0)
    if level < SILENCE_DBFS:
        raise SyncScoreError(f"the audio is silent ({'digital zero' if rms == 0 else f'{level:.0f} dBFS'}); "
                             "LSE-C/LSE-D measure speech against lip motion, so score a clip with speech")


# ---------------------------------------------------------------- snippets and embeddings

def check_frame_count(frames: int) -> None:
    """Raise `SyncScoreError` for clips too short for one snippet."""
    if frames < MIN_FRAMES:
        raise SyncScoreError(f"the clip has {frames} frames at 25 fps; the metric needs at least {MIN_FRAMES} "
                             f"(one 5-frame snippet plus the frame the reference never uses)")


def snippet_count(frames: int, samples: int) -> int:
    """The reference's snippet count: one less than the complete 5-frame snippets, so the last frame is unused."""
    return min(frames, samples // SAMPLES_PER_FRAME) - SNIPPET_FRAMES


def audio_snippets(mfcc_features: np.ndarray, count: int) -> torch.Tensor:
    """`[count, 1, 13, 20]` float32: snippet i holds MFCC columns [4i, 4i+20)."""
    columns = torch.from_numpy(np.ascontiguousarray(mfcc_features.T)).float()
    starts = torch.arange(count) * MFCC_STEPS_PER_FRAME
    return columns[:, starts[:, None] + torch.arange(SNIPPET_MFCC_STEPS)].permute(1, 0, 2).unsqueeze(1).contiguous()


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


@contextmanager
def full_float32() -> Iterator[None]:
    """Turn TF32 off while embedding: cuDNN convolutions default to TF32 on recent GPUs, which moves
    embeddings by ~1e-3, far outside the reference's float32 tolerance. Restored afterwards."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@torch.no_grad()
@full_float32()
def audio_embeddings(syncnet: torch.nn.Module, snippets: torch.Tensor, batch_size: int = 20) -> torch.Tensor:
    """`[N, 1024]` embeddings of `[N, 1, 13, 20]` MFCC snippets, on the CPU."""
    device = _device_of(syncnet)
    out = [syncnet.forward_audio(snippets[i:i + batch_size].to(device)).float().cpu()
           for i in range(0, snippets.shape[0], batch_size)]
    return torch.cat(out)


@torch.no_grad()
@full_float32()
def video_embeddings(syncnet: torch.nn.Module, crops_bgr: np.ndarray | torch.Tensor, count: int,
                     batch_size: int = 20) -> torch.Tensor:
    """`[count, 1024]` embeddings of the 5-frame snippets of `[T, 224, 224, 3]` uint8 BGR crops, on the CPU."""
    crops = torch.as_tensor(crops_bgr)
    device = _device_of(syncnet)
    offsets = torch.arange(SNIPPET_FRAMES)
    out = []
    for start in range(0, count, batch_size):
        starts = torch.arange(start, min(count, start + batch_size))
        # Snippets are gathered per batch so that only batch_size x 5 frames exist as float at once.
        batch = crops[starts[:, None] + offsets].to(device).permute(0, 4, 1, 2, 3).float()
        out.append(syncnet.forward_video(batch).float().cpu())
    return torch.cat(out)


# ---------------------------------------------------------------- distances and the score

def distance_table(video: torch.Tensor, audio: torch.Tensor, max_shift: int = MAX_SHIFT) -> torch.Tensor:
    """`[N, 2*max_shift+1]`: row i, column k = ||video_i - audio_(i+k-max_shift) + 1e-6||, zero audio outside."""
    padded = torch.nn.functional.pad(audio, (0, 0, max_shift, max_shift))
    candidates = padded.unfold(0, 2 * max_shift + 1, 1).permute(0, 2, 1)  # [N, 31, D]
    return torch.nn.functional.pairwise_distance(video[:, None, :], candidates, eps=1e-6)


def median_filter(values: np.ndarray, kernel: int) -> np.ndarray:
    """`scipy.signal.medfilt` (odd kernel, zero-padded edges) without importing scipy.signal (~2 s)."""
    half = kernel // 2
    padded = np.concatenate([np.zeros(half, values.dtype), values, np.zeros(half, values.dtype)])
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, kernel), axis=1).astype(values.dtype)


def score_from_distances(table: torch.Tensor, crops: str, first_frame: int = 0) -> SyncScore:
    """LSE-D = min of the per-offset means, offset = 15 - first argmin, LSE-C = median - min (lower median)."""
    table = table.float()
    max_shift = (table.shape[1] - 1) // 2
    # Same reduction layout as the reference (offsets x snippets, mean over snippets).
    means = table.t().contiguous().mean(1)
    best = int(torch.argmin(means))
    lse_d = means[best]
    median = torch.median(means)
    fconf = (median - table[:, best]).numpy()
    return SyncScore(lse_c=float(median - lse_d), lse_d=float(lse_d), offset=max_shift - best,
                     distances=means.numpy(), crops=crops, snippets=int(table.shape[0]),
                     snippet_distances=table.numpy(), framewise_conf=median_filter(fconf, 9),
                     first_frame=first_frame)


def evaluate_clip(syncnet: torch.nn.Module, crops_bgr: np.ndarray | torch.Tensor, samples: np.ndarray,
                  crops: str = "input", first_frame: int = 0, batch_size: int = 20) -> SyncScore:
    """Score one face-crop clip: `[T, 224, 224, 3]` uint8 BGR frames at 25 fps and 16 kHz int16 samples."""
    frames = int(crops_bgr.shape[0])
    if tuple(crops_bgr.shape[1:]) != (CROP_SIZE, CROP_SIZE, 3):
        raise SyncScoreError(f"face crops must be [T, 224, 224, 3], got {tuple(crops_bgr.shape)}")
    check_frame_count(frames)
    count = snippet_count(frames, int(samples.size))
    if count < 1:
        raise SyncScoreError(f"the audio is {samples.size / SAMPLE_RATE:.2f} s long; the metric needs at least "
                             f"{MIN_FRAMES * SAMPLES_PER_FRAME / SAMPLE_RATE:.2f} s ({MIN_FRAMES} frames)")
    check_audio(samples)
    audio = audio_embeddings(syncnet, audio_snippets(mfcc(samples), count), batch_size)
    video = video_embeddings(syncnet, crops_bgr, count, batch_size)
    return score_from_distances(distance_table(video, audio), crops, first_frame)


def combine_tracks(scores: list[SyncScore]) -> SyncScore:
    """One score for a video with several face tracks, as `eval_sync_conf.py` reports it.

    LSE-C is the mean over tracks and the offset is int(mean) (truncated); the reference discards LSE-D,
    here it is the mean too, and so are the per-offset distances.
    """
    if len(scores) == 1:
        return scores[0]
    return replace(
        scores[0], lse_c=float(np.mean([s.lse_c for s in scores])), lse_d=float(np.mean([s.lse_d for s in scores])),
        offset=int(np.mean([s.offset for s in scores])),
        distances=np.mean([s.distances for s in scores], axis=0).astype(np.float32),
        snippets=sum(s.snippets for s in scores),
        snippet_distances=np.concatenate([s.snippet_distances for s in scores]),
        framewise_conf=np.concatenate([s.framewise_conf for s in scores]), tracks=tuple(scores))
