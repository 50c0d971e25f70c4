"""A picture of SyncNet's mean distance at each audio offset, with the chosen offset marked."""
from __future__ import annotations

import numpy as np

from .metric import SyncScore

BACKGROUND, GRID, LINE, BEST, ZERO = (24, 24, 28), (60, 60, 66), (220, 220, 220), (250, 190, 60), (38, 112, 74)


def render_distances(score: SyncScore, width: int = 512, height: int = 192) -> np.ndarray:
    """uint8 `[H, W, 3]`: offsets -15..15 left to right, distance top (high) to bottom (low); the green
    column is offset 0, the yellow one the offset with the least distance."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    distances = np.asarray(score.distances, dtype=np.float64)
    count = distances.size
    xs = np.round((np.arange(count) + 0.5) / count * (width - 1)).astype(int)
    low, high = float(distances.min()), float(distances.max())
    span = max(high - low, 1e-9)
    ys = np.round(8 + (high - distances) / span * (height - 17)).astype(int)
    for y in range(8, height - 8, max(1, (height - 16) // 4)):
        image[y, :] = GRID
    image[:, xs[count // 2]] = ZERO
    best = int(np.argmin(distances))
    image[:, max(xs[best] - 1, 0): xs[best] + 2] = BEST
    for (x0, y0), (x1, y1) in zip(zip(xs[:-1], ys[:-1]), zip(xs[1:], ys[1:])):
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        line_x = np.round(np.linspace(x0, x1, steps + 1)).astype(int)
        line_y = np.round(np.linspace(y0, y1, steps + 1)).astype(int)
        image[line_y, line_x] = LINE
        image[np.minimum(line_y + 1, height - 1), line_x] = LINE
    return image
