"""Mouth flicker: how much the mouth changes from one frame to the next, as a number.

The measure is the mean absolute frame-to-frame change of BT.601 luma (0-255) over the mouth region, the part of
the aligned face crop that LatentSync regenerates (`faces.mask` 0), eroded as for the sharpness
(`sharpness.mouth_region`). Each frame is warped into its aligned crop at the side where one crop pixel covers
about one frame pixel, so the crop follows the head and what is left is the mouth's own change: speech, and any
flicker the generation or a restorer added. Only pairs of consecutive frames that both have a face count.

A mouth that speaks changes, so compare a clip with its own source (`compare_flicker`: the ratio generated /
source): near 1 the output is as steady as the video, above 1 it flickers more. A still mouth must stay still: a
source whose mouth does not move measures 0, so the ratio floors both values at `FLOOR` luma levels (below what
8-bit video holds still), and two still clips are 1, not 0/0.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch

from ..face.align import AlignedFaces, face_fit_side
from .sharpness import MIN_SIDE, face_luma, mouth_region, square_crop_matrix

FLOOR = 0.1  # luma levels (0-255): smaller mean changes count as this much in the ratio


def mouth_flicker(frames: Iterable[np.ndarray | torch.Tensor], faces: AlignedFaces,
                  side: int | None = None) -> np.ndarray:
    """Mean absolute luma change of the mouth region between frame i and i + 1, `[N - 1]` float64 (0-255), NaN
    where either frame has no face.

    `frames` are `[H, W, 3]` RGB frames (uint8 or float 0-1; a `[N, H, W, 3]` batch or any iterable, read one at a
    time and only the previous frame's mouth kept), one per entry of `faces`. `side` as in `mouth_sharpness`.
    """
    side = face_fit_side(faces, minimum=MIN_SIDE) if side is None else int(side)
    if side < 3:
        raise ValueError(f"the crop side must be at least 3 px, got {side}")
    region = mouth_region(faces, side)
    values, previous, count = [], None, 0
    for index, frame in enumerate(frames):
        if index >= len(faces):
            raise ValueError(f"more frames than faces ({len(faces)}); give one aligned face per frame")
        current = None
        if bool(faces.valid[index]):
            matrix = square_crop_matrix(faces.matrices[index], faces.crop_wh, side)
            current = face_luma(frame, matrix, side)[region].double()
        if index > 0:
            both = previous is not None and current is not None and current.numel() > 0
            values.append(float((current - previous).abs().mean()) if both else math.nan)
        previous, count = current, index + 1
    if count != len(faces):
        raise ValueError(f"{count} frames but {len(faces)} aligned faces; give one frame per face")
    return np.asarray(values, np.float64)


def compare_flicker(generated: Iterable[np.ndarray | torch.Tensor], source: Iterable[np.ndarray | torch.Tensor] | None,
                    faces: AlignedFaces) -> dict:
    """Mean mouth flicker of the generated frames and of their source frames (the same faces, the same side) and
    the ratio generated / source, each floored at `FLOOR`: near 1 as steady as the source, above 1 more
    flicker. NaN where no two consecutive frames have a face. Without `source`: only "generated" (and "side")."""
    side = face_fit_side(faces, minimum=MIN_SIDE)
    ours = _mean(mouth_flicker(generated, faces, side))
    if source is None:
        return {"generated": ours, "side": side}
    theirs = _mean(mouth_flicker(source, faces, side))
    ratio = max(ours, FLOOR) / max(theirs, FLOOR) if math.isfinite(ours) and math.isfinite(theirs) else math.nan
    return {"generated": ours, "source": theirs, "ratio": ratio, "side": side}


def _mean(values: np.ndarray) -> float:
    found = values[np.isfinite(values)]
    return float(found.mean()) if found.size else math.nan
