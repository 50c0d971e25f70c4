"""Aligned face crops: three face points -> similarity transform -> a fixed-size crop per frame.

Matches the reference's `AlignRestore` (align_points=3): template points `(17, 20), (58, 20), (37.5, 40)`
scaled by `k = R / 256 * 2.8`, a `int(75k) x int(100k)` crop (210x280 at 256 px, 420x560 at 512 px) filled with
grey 127 outside the frame, then an OpenCV Lanczos4 resize to `R x R`. Its temporal smoothing is a low-pass
on a translation bias (`0.2 * previous + 0.8 * current`), carried from one face frame to the next; frames
without a face leave that state untouched, so a cut-away does not disturb the frames after it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .detect import FaceTrack
from .mask import latent_mask, pixel_mask
from .warp import (Frames, footprint, frame_region_255, resize_lanczos4_uint8, transform_points,
                        warp_affine)
from ..core.threads import single_threaded

FILL = 127.0  # the reference's padding colour outside the frame

Progress = Callable[[int, int], None]


def crop_geometry(resolution: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The reference's template points `[3, 2]` (left brow, right brow, nose centre) and crop size `(w, h)`."""
    ratio = resolution / 256 * 2.8
    template = np.array([[19 - 2, 30 - 10], [56 + 2, 30 - 10], [37.5, 45 - 5]]) * ratio
    return template, (int(75 * ratio), int(100 * ratio))


def similarity_transform(points: np.ndarray | torch.Tensor, template: np.ndarray | torch.Tensor,
                         previous_bias: torch.Tensor | None = None,
                         smooth: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's `transformation_from_points`: frame points `[3, 2]` -> template, in float32.

    Returns the `[2, 3]` matrix (frame -> crop) and the smoothing bias to carry to the next frame. The bias is
    the difference of the normalised nose points, low-passed across frames and added to the translation in
    pixels (units as in the reference).
    """
    p1 = torch.as_tensor(np.asarray(points, np.float32) if not isinstance(points, torch.Tensor) else points,
                         dtype=torch.float32)
    p2 = torch.as_tensor(np.asarray(template, np.float32) if not isinstance(template, torch.Tensor) else template,
                         dtype=torch.float32)
    c1, c2 = p1.mean(dim=0), p2.mean(dim=0)
    q1, q2 = p1 - c1, p2 - c2
    s1, s2 = q1.std(), q2.std()  # over all six coordinates, unbiased, as torch.std in the reference
    n1, n2 = q1 / s1, q2 / s2
    u, _, vh = torch.linalg.svd(n1.T @ n2)
    v = vh.T.clone()
    rotation = v @ u.T
    if torch.det(rotation) < 0:  # a reflection is not a face pose
        v[:, -1] = -v[:, -1]
        rotation = v @ u.T
    scaled = (s2 / s1) * rotation
    shift = c2.reshape(2, 1) - (s2 / s1) * (rotation @ c1.reshape(2, 1))
    matrix = torch.cat([scaled, shift], dim=1)
    bias = previous_bias
    if smooth:
        bias = n2[2] - n1[2]
        if previous_bias is not None:
            bias = previous_bias * 0.2 + bias * 0.8
        matrix[:, 2] = matrix[:, 2] + bias
    return matrix, bias


def smoothed_matrices(points3: np.ndarray, valid: np.ndarray, resolution: int,
                      smooth: bool = True) -> np.ndarray:
    """Frame -> crop matrices `[N, 2, 3]` float32 for a track, frame after frame; NaN where `valid` is False."""
    template, _ = crop_geometry(resolution)
    matrices = np.full((len(points3), 2, 3), np.nan, np.float32)
    bias = None
    with single_threaded():  # 3x2 matrices: a second thread can only add waits
        for i in np.flatnonzero(valid):
            matrix, bias = similarity_transform(points3[i], template, bias, smooth)
            matrices[i] = matrix.numpy()
    return matrices


def warp_face(frame: Frames, matrix: np.ndarray | torch.Tensor, crop_wh: tuple[int, int]) -> torch.Tensor:
    """The reference's crop of one frame: `[h, w, 3]` uint8, grey 127 where it leaves the frame.

    Only the frame region the crop samples from is read and converted, so a 1080p frame costs what its face
    costs.
    """
    matrix = torch.as_tensor(np.asarray(matrix, np.float32))
    w, h = crop_wh
    inverse = torch.linalg.inv(torch.cat([matrix.double(), torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)]))
    box = footprint(inverse[:2].numpy(), (w, h), tuple(frame.shape[:2]), margin=2)
    if box is None:
        return torch.full((h, w, 3), int(FILL), dtype=torch.uint8)
    region = frame_region_255(frame, box)
    crop = warp_affine(region, matrix, (h, w), fill=FILL, origin=box[:2])
    # The reference casts with numpy's astype(uint8): truncation.
    return crop.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()


def anchors_in_frame(matrices: np.ndarray | torch.Tensor, resolution: int) -> np.ndarray:
    """Where the crop's three template points sit in each frame, `[N, 3, 2]` (NaN for frames without a face):
    the alignment points as the smoothed transform sees them."""
    template, _ = crop_geometry(resolution)
    out = np.full((len(matrices), 3, 2), np.nan)
    for i, matrix in enumerate(np.asarray(matrices, np.float64)):
        if np.isfinite(matrix).all():
            full = np.vstack([matrix, [0.0, 0.0, 1.0]])
            out[i] = transform_points(np.linalg.inv(full)[:2], template)
    return out


def motion_stats(points: np.ndarray) -> dict:
    """Frame-to-frame motion of `[N, 3, 2]` points over runs of consecutive valid frames: mean and 95th
    percentile step (px), and jitter, the RMS second difference (px; steady motion has none), also relative
    to the distance between the two brow points."""
    ok = np.isfinite(points).all(axis=(1, 2))
    step = np.linalg.norm(points[1:] - points[:-1], axis=-1)[ok[1:] & ok[:-1]]
    second = np.linalg.norm(points[2:] - 2 * points[1:-1] + points[:-2], axis=-1)[ok[2:] & ok[1:-1] & ok[:-2]]
    brows = np.linalg.norm(points[ok, 1] - points[ok, 0], axis=-1)
    if step.size == 0 or second.size == 0:
        return {"frames": int(ok.sum()), "step_mean_px": float("nan"), "step_p95_px": float("nan"),
                "jitter_rms_px": float("nan"), "jitter_rel": float("nan")}
    jitter = float(np.sqrt(np.mean(second ** 2)))
    return {"frames": int(ok.sum()), "step_mean_px": float(step.mean()), "step_p95_px": float(np.percentile(step, 95)),
            "jitter_rms_px": jitter, "jitter_rel": jitter / float(np.median(brows))}


def crop_displacement(matrix_a: np.ndarray, matrix_b: np.ndarray, crop_wh: tuple[int, int]) -> float:
    """How far apart two alignments put the same content, in crop pixels: the largest move of the crop's
    corners and centre when mapped frame-wise by `b` and back by `a`."""
    w, h = crop_wh
    probe = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [(w - 1) / 2, (h - 1) / 2]])
    inverse_b = np.linalg.inv(np.vstack([np.asarray(matrix_b, np.float64), [0.0, 0.0, 1.0]]))[:2]
    moved = transform_points(matrix_a, transform_points(inverse_b, probe))
    return float(np.linalg.norm(moved - probe, axis=1).max())


@dataclass
class AlignedFaces:
    """Per-frame face crops and how to put them back.

    - `crops`: `[N, R, R, 3]` uint8, the reference's model input (grey 127 for frames without a face);
    - `matrices`: `[N, 2, 3]` float32 frame -> crop (at crop size `crop_wh`, before the resize to R); NaN
      where `valid` is False;
    - `valid`: `[N]` bool, False for frames without a usable face; those pass through `paste_back` unchanged;
    - `mask` `[R, R]` and `latent_mask` `[1, R/8, R/8]`: 1 = keep, 0 = regenerate.
    """

    crops: torch.Tensor
    matrices: torch.Tensor
    valid: torch.Tensor
    resolution: int
    crop_wh: tuple[int, int]
    frame_hw: tuple[int, int]
    mask: torch.Tensor
    latent_mask: torch.Tensor

    def __len__(self) -> int:
        return int(self.valid.shape[0])

    def subset(self, indices) -> "AlignedFaces":
        """The rows `indices` (a sequence, repeats allowed, or a slice) of these faces, in that order."""
        index = indices if isinstance(indices, slice) else torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return dataclasses.replace(self, crops=self.crops[index], matrices=self.matrices[index],
                                   valid=self.valid[index])

    def images(self) -> torch.Tensor:
        """Crops as a ComfyUI IMAGE: `[N, R, R, 3]` float32 in [0, 1]."""
        return self.crops.to(torch.float32) / 255.0

    def pixel_values(self) -> torch.Tensor:
        """Crops as the VAE's input: `[N, 3, R, R]` float32 in [-1, 1]."""
        return (self.crops.permute(0, 3, 1, 2).to(torch.float32) / 255.0 - 0.5) / 0.5

    def masked_pixel_values(self) -> torch.Tensor:
        """`pixel_values() * mask`: the keep region only, as the UNet's masked-image input."""
        return self.pixel_values() * self.mask


def face_box_sizes(matrices: torch.Tensor, crop_wh: tuple[int, int]) -> list[tuple[int, int]]:
    """"Fit to the face box" sizes: per aligned face, the crop size at which one crop pixel covers one frame pixel.

    `matrices` `[N, 2, 3]` map frame pixels to crop pixels at `crop_wh` (`AlignedFaces.matrices`/`crop_wh`);
    their scale is the crop's pixels per frame pixel. Frames without a face (NaN matrices) get `crop_wh`.
    """
    linear = torch.as_tensor(matrices, dtype=torch.float64)[:, :, :2]
    pixels_per_frame_pixel = torch.linalg.det(linear).abs().sqrt()
    sizes = []
    for scale in pixels_per_frame_pixel.tolist():
        if not (math.isfinite(scale) and scale > 0):
            sizes.append(tuple(crop_wh))
        else:
            sizes.append((max(1, round(crop_wh[0] / scale)), max(1, round(crop_wh[1] / scale))))
    return sizes


def face_fit_side(faces: AlignedFaces, minimum: int | None = None) -> int:
    """"Fit to the face box" for a clip of aligned faces (`AlignedFaces`): the square crop side at which one crop
    pixel covers about one frame pixel (median over the frames with a face), a multiple of 8, at least
    `minimum` (default: the faces' resolution)."""
    minimum = faces.resolution if minimum is None else minimum
    valid = faces.matrices[faces.valid]
    side = float(minimum)
    if len(valid):
        widths = sorted(w for w, _ in face_box_sizes(valid, faces.crop_wh))
        side = max(side, faces.resolution * widths[len(widths) // 2] / faces.crop_wh[0])
    return 8 * math.ceil(side / 8)


def align(frames: Frames, track: FaceTrack, resolution: int = 256, smooth: bool = True,
          progress: Progress | None = None) -> AlignedFaces:
    """Crop the tracked face of every frame to `resolution` px (256 for LatentSync 1.5, 512 for 1.6).

    `frames` is `[N, H, W, C]` (C = 1, 3 or 4; uint8 or float 0-1; torch or numpy).
    """
    if len(frames) != len(track):
        raise ValueError(f"{len(frames)} frames but a face track of {len(track)}")
    pixels = pixel_mask(resolution)
    _, crop_wh = crop_geometry(resolution)
    matrices = smoothed_matrices(track.points3, track.valid, resolution, smooth)
    crops = torch.full((len(frames), resolution, resolution, 3), int(FILL), dtype=torch.uint8)
    with single_threaded():  # small ops a frame: 2-13x slower on two threads when a core is busy
        for i in range(len(frames)):
            if track.valid[i]:
                crop = warp_face(frames[i], matrices[i], crop_wh)
                crops[i] = resize_lanczos4_uint8(crop, (resolution, resolution))
            if progress is not None:
                progress(i + 1, len(frames))
    return AlignedFaces(crops=crops, matrices=torch.from_numpy(matrices), valid=torch.from_numpy(track.valid.copy()),
                        resolution=resolution, crop_wh=crop_wh, frame_hw=tuple(frames.shape[1:3]), mask=pixels,
                        latent_mask=latent_mask(pixels))
