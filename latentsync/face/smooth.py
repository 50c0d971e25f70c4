"""Steady face points: a One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) on the three alignment points.

dlib's landmarks move by a few pixels from frame to frame on a still head, and the crops shake with them. A
One-Euro filter is a low-pass whose cutoff rises with the signal's speed: still, it averages the noise away;
moving, it opens up and follows with little lag. It is causal (one frame at a time, as the tracker streams).

Time is counted in frames, not seconds: cutoffs are in cycles per frame (0.5 is the most a frame rate can
carry) and speeds per frame. Lengths are counted in face sizes, so a 40 px face and a 400 px face behave alike.

The three points are filtered as a pose plus a shape, each part by its own filter, so that a head that turns
or comes closer is followed as fast as one that slides:

- the centroid (translation), its speed measured in brow distances per frame;
- the log of the face's size (the RMS distance of the points from their centroid: the scale the alignment's
  similarity transform takes from them);
- the roll, the angle of the line from the image-left to the image-right brow;
- the shape: the points with centroid, size and roll taken out. It changes only as the head nods or turns,
  so its filter opens least with speed (lowest beta).

Filtering each coordinate instead would see a roll or a zoom as slow motion of the points near its centre,
which then lag; here each kind of motion opens its own filter, whatever point it moves.
"""
from __future__ import annotations

import math

import numpy as np

from ..core.options import Option

SMOOTHING = Option("smoothing", True, "Steadies the crops of a still head, follows a moving one, resets at cuts; "
                   "off: the reference's.")

# (min_cutoff in cycles per frame, beta per unit of speed, derivative cutoff in cycles per frame) of each part.
# Chosen on the synthetic faces of tests/test_smoothing.py, with noise of 1.5 % of the brow distance on every
# coordinate: a still head's jitter falls to about 0.27x, while a face sliding 3 % of its brow
# distance per frame, rolling 2 degrees or zooming 1 % per frame is, once settled (~5 frames), a third of a
# frame's motion behind. The low derivative cutoff keeps noise from opening the filter; each beta makes about
# one frame's worth of steady motion open it. Raising a beta trades stillness for less lag.
CENTRE = (0.02, 12.0, 0.03)  # speed: brow distances per frame
SIZE = (0.02, 40.0, 0.03)  # speed: change of the log size per frame
ROLL = (0.02, 12.0, 0.03)  # speed: radians per frame
SHAPE = (0.02, 8.0, 0.03)  # speed: face sizes per frame, the largest move of a coordinate


def _alpha(cutoff: float) -> float:
    """The weight of a new sample in an exponential average with this cutoff (cycles per frame)."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau)


class OneEuro:
    """A One-Euro filter of a vector, one sample per frame. `__call__(x, size)`: `size` divides the speed, so the
    cutoff follows speed in the signal's own units (face sizes per frame for a position)."""

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float) -> None:
        self.min_cutoff, self.beta, self.d_alpha = min_cutoff, beta, _alpha(d_cutoff)
        self.reset()

    def reset(self) -> None:
        self.value: np.ndarray | None = None
        self.speed: np.ndarray | None = None

    def __call__(self, x: np.ndarray, size: float = 1.0) -> np.ndarray:
        if self.value is None:
            self.value, self.speed = x.copy(), np.zeros_like(x)
            return self.value
        self.speed = self.speed + self.d_alpha * ((x - self.value) - self.speed)
        cutoff = self.min_cutoff + self.beta * float(np.abs(self.speed).max()) / size
        self.value = self.value + _alpha(cutoff) * (x - self.value)
        return self.value


def _rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


class LandmarkSmoother:
    """Smooths one face's `[3, 2]` points (image-left brow, image-right brow, nose centre) frame after frame.

    `smoother(points3)` returns the smoothed points (float32 `[3, 2]`); `reset()` forgets the past (at a cut, a
    gap, another face). Points that are not finite, or that collapse to one spot, reset the filter and come
    back unchanged, so that they cannot poison the frames after them."""

    def __init__(self) -> None:
        self._centre, self._size, self._roll, self._shape = (OneEuro(*c) for c in (CENTRE, SIZE, ROLL, SHAPE))

    def reset(self) -> None:
        for part in (self._centre, self._size, self._roll, self._shape):
            part.reset()

    def __call__(self, points3: np.ndarray) -> np.ndarray:
        points = np.asarray(points3, np.float64).reshape(3, 2)
        centre = points.mean(axis=0)
        offsets = points - centre
        size = math.sqrt(float((offsets ** 2).sum(axis=1).mean()))
        brow = points[1] - points[0]
        brow_distance = float(np.hypot(*brow))
        if not (np.isfinite(points).all() and size > 0 and brow_distance > 0):
            self.reset()
            return points.astype(np.float32)
        roll = math.atan2(brow[1], brow[0])
        if self._roll.value is not None:  # the same turn as before: no jump where the angle wraps at 180 degrees
            previous = float(self._roll.value[0])
            roll = previous + (roll - previous + math.pi) % (2 * math.pi) - math.pi
        shape = offsets @ _rotation(roll) / size  # rows rotated by -roll, in face sizes
        centre = self._centre(centre, brow_distance)
        size = math.exp(float(self._size(np.array([math.log(size)]))[0]))
        roll = float(self._roll(np.array([roll]))[0])
        shape = self._shape(shape.ravel()).reshape(3, 2)
        return (centre + size * shape @ _rotation(roll).T).astype(np.float32)
