"""How players turn a file's stored pixels to show them, read once per file and applied to every frame.

Phones store video frames landscape and flag the turn in the file (a display matrix, or an older `rotate` tag);
cameras do the same for photos (EXIF orientation). `video.py`, `frame_reader.py` and `video_stream.py` read
frames through `Orientation.apply`, so every stage of the pack sees them upright, and nothing the pack writes
carries a flag.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import av
import numpy as np

# EXIF orientation (tag 0x0112) -> (quarter turns counter-clockwise, then mirrored), as image viewers show it.
_EXIF = {2: (0, True), 3: (2, False), 4: (2, True), 5: (3, True), 6: (3, False), 7: (1, True), 8: (1, False)}
_EXIF_TAG = 0x0112


class Orientation(NamedTuple):
    """How players turn a video's stored frames to show them: `turns` quarter turns counter-clockwise (np.rot90's
    `k`), then a left-right flip when `mirrored`. Phones store frames landscape and flag the turn in the file;
    every decode of the pack shows frames this way (`apply`), and what it writes carries no flag."""
    turns: int = 0
    mirrored: bool = False
    source: str = ""  # "display matrix" or "rotate tag": where the file asks for it

    @property
    def changes(self) -> bool:
        return bool(self.turns % 4) or self.mirrored

    def size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) shown for frames stored at `width` x `height`."""
        return (height, width) if self.turns % 2 else (width, height)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """A stored `[H, W, 3]` frame as players show it (contiguous; the same array when nothing changes)."""
        if not self.changes:
            return image
        image = np.rot90(image, self.turns)
        return np.ascontiguousarray(image[:, ::-1] if self.mirrored else image)

    def rgb(self, frame) -> np.ndarray:
        """A decoded `av.VideoFrame` as shown: `[H, W, 3]` uint8 RGB."""
        return self.apply(frame.to_ndarray(format="rgb24"))

    def warning(self, path: str | Path) -> str | None:
        """The line a run's `warnings` carry for the file `path` (None when its frames are shown as stored)."""
        if not self.changes:
            return None
        clockwise = -90 * self.turns % 360
        asked = " then ".join(([f"a {clockwise}° clockwise rotation"] if clockwise else [])
                              + (["a left-right mirror"] if self.mirrored else []))
        return f"{Path(path).name}: the file asks for {asked} ({self.source}); frames are read upright"


# A quarter turn counter-clockwise and a left-right flip as linear maps of the point (x, y), y down. A display
# matrix [a b u; c d v; tx ty w] shows the stored point (x, y) at (a x + c y + tx, b x + d y + ty) (ISO 14496-12
# `tkhd`, FFmpeg's AV_FRAME_DATA_DISPLAYMATRIX): `orientation_from_matrix` finds the product of these it equals.
_QUARTER_TURN = np.array([[0, 1], [-1, 0]])
_FLIP = np.array([[-1, 0], [0, 1]])


def orientation_from_matrix(matrix) -> Orientation:
    """The `Orientation` of a 3x3 display matrix (9 numbers in file order; any fixed-point scale). A turn that
    is not a multiple of 90° is taken to the nearest one, as no face pipeline wants tilted frames."""
    values = np.asarray(matrix, np.float64).reshape(-1)
    linear = np.array([[values[0], values[3]], [values[1], values[4]]])  # column vectors: (x', y') = linear (x, y)
    scale = np.abs(linear).max()
    if not scale:
        return Orientation()
    best = min(((turns, mirrored) for turns in range(4) for mirrored in (False, True)),
               key=lambda o: np.abs(np.linalg.matrix_power(_FLIP, o[1]) @ np.linalg.matrix_power(_QUARTER_TURN, o[0])
                                    - linear / scale).sum())
    return Orientation(*best, "display matrix") if best != (0, False) else Orientation()


def video_orientation(path: str | Path) -> Orientation:
    """How players turn the frames of a video's first video stream. FFmpeg hands the stream's display matrix to
    each decoded frame (frame side data), so the first frame is decoded; an older FFmpeg that exports the
    `rotate` tag instead (clockwise degrees) is read from the header. A file that cannot say is upright here:
    the decode that follows names what is wrong with it."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return Orientation()
            stream = container.streams.video[0]
            tag = stream.metadata.get("rotate")
            if tag:
                turns = -round(float(tag) / 90) % 4
                return Orientation(turns, False, "rotate tag") if turns else Orientation()
            for frame in container.decode(stream):
                matrix = frame.side_data.get("DISPLAYMATRIX")
                if matrix is None:
                    return Orientation()
                return orientation_from_matrix(np.frombuffer(bytes(matrix), "=i4"))
    except (av.error.FFmpegError, ValueError):
        pass
    return Orientation()


def image_orientation(image) -> Orientation:
    """How viewers turn a PIL image by its EXIF orientation (none: as stored)."""
    try:
        value = image.getexif().get(_EXIF_TAG)
    except Exception:  # noqa: BLE001 -- a damaged EXIF block: the pixels are still there, shown as stored
        return Orientation()
    turns, mirrored = _EXIF.get(value, (0, False))
    return Orientation(turns, mirrored, "EXIF orientation") if turns or mirrored else Orientation()
