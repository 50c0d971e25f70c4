"""Mouth sharpness: "sharper" as a number, with no trained metric.

The measure is the variance of the Laplacian (the 4-neighbour kernel, `cv2.Laplacian(ksize=1)`, on BT.601 luma
in 0-255): blur removes high frequencies and lowers it, sharpening raises it. It is taken over the mouth only,
the part of the aligned face crop that LatentSync regenerates (`faces.mask` 0), so a blurry mouth is not
hidden by sharp hair or background. Each frame is warped into its aligned crop at the side where one crop pixel
covers about one frame pixel (the face's own detail, neither invented by upsampling nor thrown away), and the
region is eroded a few pixels so that the edge of the mask itself (an edge in any picture) is not measured.

Values depend on the content and on the face's size in the frame, so compare a clip with its own source
(`compare_sharpness`: the ratio generated / source), not across clips.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ..face.align import FILL, AlignedFaces, face_fit_side
from ..face.warp import footprint, frame_region_255, warp_affine

LUMA = (0.299, 0.587, 0.114)  # BT.601, as cv2's RGB2GRAY
ERODE_AT_256 = 4  # px of a 256 px crop trimmed off the mouth region's edge (scaled with the side)
MIN_SIDE = 32


def laplacian_variance(gray: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor) -> float:
    """Variance of the 4-neighbour Laplacian of `gray` (`[H, W]`, 0-255) over the pixels where `mask` is True.

    Borders are mirrored without repeating the edge pixel (OpenCV's default BORDER_REFLECT_101), so the value
    equals `cv2.Laplacian(gray, cv2.CV_64F, ksize=1)[mask].var()`. NaN when the mask is empty.
    """
    image = torch.as_tensor(np.asarray(gray, np.float64) if not isinstance(gray, torch.Tensor) else gray).double()
    region = torch.as_tensor(np.asarray(mask)).bool()
    if image.ndim != 2 or tuple(region.shape) != tuple(image.shape):
        raise ValueError(f"expected a [H, W] image and a mask of the same shape, got {tuple(image.shape)} and "
                         f"{tuple(region.shape)}")
    if not bool(region.any()):
        return math.nan
    if min(image.shape) < 2:
        return 0.0  # a single row or column has no second neighbour to mirror; nothing to measure
    padded = F.pad(image[None, None], (1, 1, 1, 1), mode="reflect")[0, 0]
    laplacian = (padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
                 - 4.0 * padded[1:-1, 1:-1])
    return float(laplacian[region].var(unbiased=False))


def mouth_region(faces: AlignedFaces, side: int) -> torch.Tensor:
    """`[side, side]` bool: the regenerated part of the faces' mask at `side`, eroded by a few pixels (from
    the crop's border too, where the paste-back blends generated and source pixels)."""
    regenerated = (faces.mask < 0.5).float()[None, None]
    regenerated = F.interpolate(regenerated, size=(side, side), mode="nearest")
    radius = max(1, round(ERODE_AT_256 * side / 256))
    outside = F.pad(1.0 - regenerated, (radius,) * 4, value=1.0)
    return F.max_pool2d(outside, 2 * radius + 1, stride=1)[0, 0] == 0


def square_crop_matrix(matrix: torch.Tensor, crop_wh: tuple[int, int], side: int) -> torch.Tensor:
    """Frame -> crop matrix for the aligned crop resized from `crop_wh` to `side x side` (as the model's crop
    is squeezed to R x R); pixel centres on integers, the resize centre-aligned."""
    k = torch.tensor([side / crop_wh[0], side / crop_wh[1]], dtype=torch.float64)
    out = matrix.double() * k[:, None]
    out[:, 2] += (k - 1) / 2
    return out


def face_luma(frame: np.ndarray | torch.Tensor, matrix: torch.Tensor, side: int) -> torch.Tensor:
    """`[side, side]` luma of the frame's aligned face crop; only the frame region the crop samples is read."""
    inverse = torch.linalg.inv(torch.cat([matrix, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)]))[:2]
    box = footprint(inverse.numpy(), (side, side), tuple(frame.shape[:2]), margin=2)
    if box is None:
        return torch.full((side, side), FILL)
    region = frame_region_255(frame, box)  # [3, h, w] 0-255
    gray = (region.permute(1, 2, 0) @ torch.tensor(LUMA))[None]
    return warp_affine(gray, matrix, (side, side), fill=FILL, origin=box[:2])[0]


def mouth_sharpness(frames: Iterable[np.ndarray | torch.Tensor], faces: AlignedFaces,
                    side: int | None = None) -> np.ndarray:
    """Laplacian variance of the mouth region per frame, `[N]` float64, NaN for frames without a face.

    `frames` are `[H, W, 3]` RGB frames (uint8 or float 0-1; a `[N, H, W, 3]` batch or any iterable, read one
    at a time so memory does not grow with the clip), one per entry of `faces`. `side` is the crop side to
    measure at (default: one crop pixel per frame pixel, `face_fit_side`).
    """
    side = face_fit_side(faces, minimum=MIN_SIDE) if side is None else int(side)
    if side < 3:
        raise ValueError(f"the crop side must be at least 3 px, got {side}")
    region = mouth_region(faces, side)
    values = []
    for index, frame in enumerate(frames):
        if index >= len(faces):
            raise ValueError(f"more frames than faces ({len(faces)}); give one aligned face per frame")
        if not bool(faces.valid[index]):
            values.append(math.nan)
            continue
        matrix = square_crop_matrix(faces.matrices[index], faces.crop_wh, side)
        values.append(laplacian_variance(face_luma(frame, matrix, side), region))
    if len(values) != len(faces):
        raise ValueError(f"{len(values)} frames but {len(faces)} aligned faces; give one frame per face")
    return np.asarray(values, np.float64)


def compare_sharpness(generated: Iterable[np.ndarray | torch.Tensor],
                      source: Iterable[np.ndarray | torch.Tensor] | None, faces: AlignedFaces) -> dict:
    """Median mouth sharpness of the generated frames and of their source frames (the same faces, the same
    side), and the ratio generated / source: below 1 the generated mouth is softer than the original.
    Frames without a face are left out of the medians. Without `source`: only "generated" (and "side")."""
    side = face_fit_side(faces, minimum=MIN_SIDE)
    ours = _median(mouth_sharpness(generated, faces, side))
    if source is None:
        return {"generated": ours, "side": side}
    theirs = _median(mouth_sharpness(source, faces, side))
    ratio = ours / theirs if theirs > 0 else math.nan
    return {"generated": ours, "source": theirs, "ratio": ratio, "side": side}


def _median(values: np.ndarray) -> float:
    found = values[np.isfinite(values)]
    return float(np.median(found)) if found.size else math.nan
