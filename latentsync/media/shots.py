"""Hard cuts between frames: PySceneDetect's content rule (mean HSV change), as the SyncNet reference runs it.

Kept in media/ because two stages need it: the SyncNet metric cuts tracks at shots (score/crops.py), and the
all-faces tracker re-identifies people across a cut (face/tracks.py); face/ must not import score/.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SHOT_THRESHOLD = 27.0  # PySceneDetect 0.6.1 ContentDetector defaults, as LatentSync pins
SHOT_MIN_LENGTH = 15


def resize_linear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`[h, w, C]` uint8 -> `[height, width, C]` uint8 with cv2.INTER_LINEAR's sampling (no antialiasing)."""
    if image.shape[:2] == (height, width):
        return image
    # torch's uint8 kernel rounds halves up in fixed point, as cv2 does, and is ~40x faster than via float.
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
    return x[0].permute(1, 2, 0).contiguous().numpy()


def hsv_like_cv2(rgb: np.ndarray) -> np.ndarray:
    """uint8 HSV as OpenCV makes it for 8-bit images: hue 0-179 (degrees / 2), saturation and value 0-255."""
    x = rgb.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    # elementwise over the three planes: the same numbers as max/min over the last axis, several times faster
    value = np.maximum(np.maximum(r, g), b)
    delta = value - np.minimum(np.minimum(r, g), b)
    safe = np.where(delta == 0, 1, delta)
    sat = np.where(value == 0, 0, 255 * delta / np.where(value == 0, 1, value))
    hue = np.where(value == r, 60 * (g - b) / safe, np.where(value == g, 120 + 60 * (b - r) / safe,
                                                              240 + 60 * (r - g) / safe))
    hue = np.where(delta == 0, 0, np.where(hue < 0, hue + 360, hue)) / 2
    return np.stack([np.round(hue) % 180, np.round(sat), value], axis=-1).astype(np.uint8)


class ShotDetector:
    """Cuts where the mean HSV change between frames reaches 27, at least 15 frames apart (PySceneDetect's
    ContentDetector as the reference runs it, on frames auto-downscaled to about 256 px wide).

    Frames are given one at a time (`add`); `add` says whether the frame it was given starts a new shot, so a
    caller can act on a cut as it streams (the tracker does), or read every cut at the end (`cuts`, `shots`)."""

    def __init__(self, threshold: float = SHOT_THRESHOLD, min_length: int = SHOT_MIN_LENGTH) -> None:
        self.threshold, self.min_length = threshold, min_length
        self.cuts: list[int] = []
        self._previous: np.ndarray | None = None
        self._frames = 0

    def add(self, rgb: np.ndarray) -> bool:
        """Take the next frame (`[H, W, 3]` uint8 RGB); True if a cut comes just before it."""
        factor = rgb.shape[1] // 256 if rgb.shape[1] >= 256 else 1
        if factor > 1:
            rgb = resize_linear(rgb, round(rgb.shape[0] / factor), round(rgb.shape[1] / factor))
        hsv = hsv_like_cv2(rgb).astype(np.int32)
        index, self._frames = self._frames, self._frames + 1
        cut = False
        if self._previous is not None:
            change = float(np.abs(hsv - self._previous).mean(axis=(0, 1)).mean())
            last_cut = self.cuts[-1] if self.cuts else 0
            if change >= self.threshold and index - last_cut >= self.min_length:
                self.cuts.append(index)
                cut = True
        self._previous = hsv
        return cut

    def shots(self) -> list[tuple[int, int]]:
        """[start, end) frame ranges; the whole clip when there is no cut."""
        edges = [0, *self.cuts, self._frames]
        return [(a, b) for a, b in zip(edges[:-1], edges[1:])]
