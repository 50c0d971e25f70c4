"""A picture of the audio with its speech segments, for users to check what the VAD gate will do."""
from __future__ import annotations

import numpy as np
import torch

from .vad import SpeechSegments

BACKGROUND = (24, 24, 28)
SPEECH = (38, 112, 74)
WAVE = (220, 220, 220)
PROB = (250, 190, 60)


def envelope(audio: torch.Tensor, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Min and max sample in each of `bins` equal time bins of a 1-D signal."""
    samples = audio.detach().float().cpu().numpy()
    edges = np.linspace(0, samples.size, bins + 1).astype(np.int64)
    edges[1:] = np.maximum(edges[1:], edges[:-1] + 1)  # never an empty bin
    edges = np.minimum(edges, samples.size)
    starts = np.minimum(edges[:-1], samples.size - 1)
    lo = np.minimum.reduceat(samples, starts)
    hi = np.maximum.reduceat(samples, starts)
    return lo, hi


def render_timeline(audio16k: torch.Tensor, segments: SpeechSegments, width: int = 1024,
                    height: int = 160) -> np.ndarray:
    """Waveform over green speech spans, with silero's probability as a yellow line; uint8 `[H, W, 3]`."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    duration = max(segments.duration, 1e-9)
    for start, end in segments.speech:
        x0, x1 = int(round(start / duration * width)), int(round(end / duration * width))
        image[:, x0:max(x1, x0 + 1)] = SPEECH

    lo, hi = envelope(audio16k, width)
    peak = max(float(np.abs(np.concatenate([lo, hi])).max()), 1e-6)
    mid = (height - 1) / 2
    top = np.clip(np.round(mid - hi / peak * mid * 0.9), 0, height - 1).astype(int)
    bottom = np.clip(np.round(mid - lo / peak * mid * 0.9), 0, height - 1).astype(int)
    rows = np.arange(height)[:, None]
    image[(rows >= top[None]) & (rows <= bottom[None])] = WAVE

    if segments.frame_probs.size:
        x = (np.arange(width) + 0.5) / width * segments.frame_probs.size
        probs = segments.frame_probs[np.minimum(x.astype(int), segments.frame_probs.size - 1)]
        y = np.clip(np.round((1 - probs) * (height - 1)), 0, height - 1).astype(int)
        image[y, np.arange(width)] = PROB
    return image
