"""Paste generated face crops back into their frames, as the reference's `restore_img` does.

Per frame: resize the `R x R` crop to the crop size (bicubic, antialiased), warp it back with the inverse
matrix, and blend it in through a soft mask (the crop's footprint, eroded by 2 px, eroded again by `2 * w_edge`
and Gaussian-blurred, `w_edge = int(sqrt(footprint area)) // 20`). Everything outside the footprint is left
bit for bit as it was, so the work happens in the face's region only. Frames without a face pass through.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .align import FILL, AlignedFaces, warp_face
from .blend import Blend, MouthLandmarks
from .warp import (Frames, erode, footprint, frame_region_255, gaussian_blur, invert_affine,
                        warp_affine)
from ..core.memory import check_fits
from ..core.threads import single_threaded

Progress = Callable[[int, int], None]
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def generated_to_pixels(generated: Frames, resolution: int, any_size: bool = False) -> torch.Tensor:
    """Generated crops as `[N, 3, S, S]` float32 in [-1, 1].

    Accepts the VAE's layout `[N, 3, R, R]` in [-1, 1], or an image layout `[N, R, R, 3]` (float 0-1, as a
    ComfyUI IMAGE, or uint8). With `any_size`, square crops of another size S are accepted too (upscaled
    crops, pasted at their own detail).
    """
    crops = torch.as_tensor(generated)
    channels_first = crops.ndim == 4 and crops.shape[1] == 3 and crops.shape[2] == crops.shape[3]
    channels_last = crops.ndim == 4 and crops.shape[3] == 3 and crops.shape[1] == crops.shape[2]
    size = crops.shape[-1] if channels_first else crops.shape[1] if channels_last else None
    if size is None or (size != resolution and not any_size):
        shown = "S" if any_size else resolution
        raise ValueError(f"expected generated crops [N, 3, {shown}, {shown}] in [-1, 1] or "
                         f"[N, {shown}, {shown}, 3] images, got {tuple(crops.shape)}")
    if channels_first:
        return crops.to(torch.float32)
    scale = 255.0 if crops.dtype == torch.uint8 else 1.0
    return (crops.permute(0, 3, 1, 2).to(torch.float32) / scale - 0.5) / 0.5


def blend_mouth(generated: Frames, faces: AlignedFaces) -> torch.Tensor:
    """The reference's `paste_surrounding_pixels_back`: generated pixels where the mask is 0 (mouth), the
    original crop where it is 1. Returns `[N, 3, R, R]` in [-1, 1]."""
    pixels = generated_to_pixels(generated, faces.resolution)
    mask = faces.mask.to(pixels.dtype)
    return pixels * (1 - mask) + faces.pixel_values() * mask


def restore_region(frame: Frames, face: torch.Tensor, matrix: torch.Tensor, crop_wh: tuple[int, int],
                   resolution: int | None = None, region: torch.Tensor | None = None,
                   frame_weight: Callable | None = None,
                   ) -> tuple[tuple[int, int, int, int], torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Blend one face (`[3, S, S]` in [-1, 1]) into `frame`; returns the box it touches, the blended RGB
    pixels there (`[h, w, 3]` float32, 0-255, before any rounding), where the blend weight is not 0
    (`[h, w]` bool) and the weight (`[h, w]`), or None if the face lies outside the frame.

    A face larger than the model's `resolution` R (an upscaled crop) is warped from its own pixels: the
    crop size and the matrix are scaled by S / R, so its detail reaches the frame instead of being
    shrunk back to the crop size first.

    A blend mask narrows the blend (`blend.py`): `region` `[h, w]` in [0, 1] on the crop at `crop_wh` (the
    landmark mouth), or `frame_weight(box)`, the weight `[box h, box w]` in the frame (a user's mask); the soft
    footprint is multiplied by it, and pixels where the product is 0 are not touched."""
    scale_up = face.shape[-1] / resolution if resolution else 1.0
    w, h = round(crop_wh[0] * scale_up), round(crop_wh[1] * scale_up)
    face = F.interpolate(face[None].to(torch.float32), size=(h, w), mode="bicubic", antialias=True,
                         align_corners=False)[0]
    matrix = torch.as_tensor(matrix, dtype=torch.float32)
    if scale_up != 1.0:
        # Pixel centres sit on whole coordinates and resizes are centre-aligned, so x -> k x + (k - 1) / 2.
        k = torch.tensor([[w / crop_wh[0]], [h / crop_wh[1]]])
        matrix = matrix * k
        matrix[:, 2] += (k[:, 0] - 1) / 2
    inverse = invert_affine(matrix)
    scale = math.sqrt(abs(float(torch.det(inverse[:, :2].double()))) * w * h)
    box = footprint(inverse, (w, h), tuple(frame.shape[:2]), margin=3 * (int(scale) // 20) + 4)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    size = (y1 - y0, x1 - x0)
    warped = warp_affine(face, inverse, size, fill=FILL, out_origin=(x0, y0))
    warped = (warped / 2 + 0.5).clamp(0, 1) * 255
    inside = warp_affine(torch.ones(1, h, w), inverse, size, fill=None, out_origin=(x0, y0))[0]
    inside = erode(inside, 2)
    pasted = inside * warped
    w_edge = int(float(inside.sum()) ** 0.5) // 20
    centre = erode(inside, 2 * w_edge)
    blur = 2 * w_edge + 1
    soft = gaussian_blur(centre, blur, 0.3 * ((blur - 1) * 0.5 - 1) + 0.8)
    if region is not None:
        region = F.interpolate(region[None, None].to(torch.float32), size=(h, w), mode="bilinear",
                               align_corners=False)[0]
        soft = soft * warp_affine(region, inverse, size, fill=None, out_origin=(x0, y0))[0].clamp(0, 1)
    if frame_weight is not None:
        soft = soft * frame_weight(box).to(soft.dtype)
    original = frame_region_255(frame, box)
    blended = soft * pasted + (1 - soft) * original
    return box, blended.permute(1, 2, 0), soft > 0, soft


def paste_back(frames: Frames, faces: AlignedFaces, generated: Frames, inplace: bool = False,
               progress: Progress | None = None, blend: Blend | None = None,
               weights_out: torch.Tensor | None = None) -> Frames:
    """Put generated crops back into `[N, H, W, C]` frames (C = 1, 3 or 4; uint8 or float 0-1; torch or
    numpy) and return frames of the same type, shape and dtype.

    `generated` is `[N, 3, R, R]` in [-1, 1] or `[N, R, R, 3]` images, one per frame; crops of frames without
    a face are ignored. uint8 frames are truncated to whole grey levels as the reference does; float frames
    keep the exact blend. Alpha is left alone; grey frames get the blend's luma.

    `blend` chooses which pixels take the generated face (`blend.Blend`: the reference's whole crop by default,
    the landmark mouth, or a user's mask); `weights_out` (`[N, H, W]` float, optional) receives each frame's
    blend weight, 0 where the frame keeps its pixels.
    """
    if len(frames) != len(faces):
        raise ValueError(f"{len(frames)} frames but {len(faces)} aligned faces")
    if tuple(frames.shape[1:3]) != tuple(faces.frame_hw):
        raise ValueError(f"frames are {tuple(frames.shape[1:3])} but the faces were aligned on {faces.frame_hw}")
    pixels = generated_to_pixels(generated, faces.resolution, any_size=True)
    if len(pixels) != len(faces):
        raise ValueError(f"{len(pixels)} generated crops for {len(faces)} frames")
    is_numpy = isinstance(frames, np.ndarray)
    if not inplace:  # the copy is as large as the whole clip
        check_fits(frames.nbytes, f"pasting faces into a copy of {len(frames)} frames", "the number of frames "
                   "(paste a shorter clip at a time)", "cpu" if is_numpy else frames.device)
    out = frames if inplace else (frames.copy() if is_numpy else frames.clone())
    view = torch.from_numpy(out) if is_numpy else out
    channels = view.shape[-1] if view.ndim == 4 else 1
    blend = (blend or Blend()).check(len(frames), tuple(frames.shape[1:3]))
    with single_threaded():  # small ops a frame: 2-5x slower on two threads when a core is busy
        for i in range(len(faces)):
            if bool(faces.valid[i]):
                region, weight = _blend_region(view[i], faces, i, blend), None
                if blend.mask == "custom":
                    width = faces.crop_wh[0] / float(torch.linalg.det(faces.matrices[i][:, :2].double()).abs().sqrt())
                    weight = lambda box, i=i, width=width: blend.frame_weight(i, box, width)  # noqa: E731
                result = restore_region(view[i], pixels[i], faces.matrices[i], faces.crop_wh, faces.resolution,
                                        region, weight)
                if result is not None:
                    if weights_out is not None:
                        _record(weights_out[i], result[0], result[3])
                    _write(view[i], *result[:3], channels)
            if progress is not None:
                progress(i + 1, len(faces))
    return out


def _blend_region(frame: torch.Tensor, faces: AlignedFaces, index: int, blend: Blend) -> torch.Tensor | None:
    """The landmark mouth of face `index` on its aligned crop (before anything is pasted), or None."""
    if blend.mask != "landmarks":
        return None
    crop = warp_face(frame, faces.matrices[index], faces.crop_wh).numpy()
    return mouth_landmarks().region(crop, blend.grow, blend.feather)


@lru_cache(maxsize=1)
def mouth_landmarks() -> MouthLandmarks:
    """dlib's 68-point model, loaded once (100 MB) when a landmark blend is first asked for."""
    return MouthLandmarks()


def _record(weights: torch.Tensor, box: tuple[int, int, int, int], soft: torch.Tensor) -> None:
    x0, y0, x1, y1 = box
    weights.zero_()
    weights[y0:y1, x0:x1] = soft.to(weights.dtype)


def _write(frame: torch.Tensor, box: tuple[int, int, int, int], rgb: torch.Tensor, touched: torch.Tensor,
           channels: int) -> None:
    x0, y0, x1, y1 = box
    values = (rgb @ _LUMA)[..., None] if channels == 1 else rgb
    if frame.dtype == torch.uint8:
        values = values.clamp(0, 255).to(torch.uint8)  # truncation, as the reference's cast
    else:
        values = (values / 255.0).to(frame.dtype)
    # Pixels the blend does not reach keep their exact values (a float frame would lose an ulp via 0-255).
    target = frame[y0:y1, x0:x1, None] if frame.ndim == 2 else frame[y0:y1, x0:x1, :values.shape[-1]]
    target.copy_(torch.where(touched[..., None].to(target.device), values.to(target.device), target))
