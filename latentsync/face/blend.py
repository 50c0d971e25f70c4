"""Which pixels of a frame take the generated face when it is pasted back: the blend mask.

What the UNet sees is always the reference's (its fixed mouth mask, `mask.py`); what is pasted back is a choice:

- "reference": the whole aligned crop through its soft footprint, as the reference's `restore_img` (inside it the
  sampler has already put the original upper face back, so only the lower face changes, up to resampling);
- "landmarks": the lips, jaw and chin, from dlib's 68-point landmarks found on each frame's aligned crop: the
  region under the nose base, inside the jaw line, grown or shrunk by `grow` and feathered by `feather` (both in
  % of the face's width), so it follows the head's turn and roll. The 68-point model ships in the
  `face-recognition-models` wheel; its training data (iBUG 300-W) is for non-commercial use, so it is loaded
  only when this choice is made;
- "custom": any mask the user gives (ComfyUI `MASK`, 1 = take the generated face), one per frame or one for
  all frames, at the frames' size; `feather` softens its edge.

The chosen region is multiplied with the crop's soft footprint: pixels where the product is 0 keep their input
values bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..core.options import Option
from .dlib_models import _face_recognition_model
from .seam import COLOUR_MATCH
from .warp import gaussian_blur

BLEND_MASKS = ("reference", "landmarks", "custom")
BLEND_MASK = Option("blend_mask", "reference", "What is pasted back: reference: the whole crop; landmarks: lips, "
                    "jaw, chin; custom: your MASK.", choices=BLEND_MASKS)
GROW = Option("mask_grow", 0.0, "landmarks: grow (+) or shrink (-) the mouth region, in % of the face width.",
              -20.0, 50.0, step=1.0)
FEATHER = Option("mask_feather", 4.0, "landmarks and custom: the blend's soft edge, in % of the face width.", 0.0,
                 30.0, step=0.5)
LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"
# The face box the 68-point model expects, in the reference's 75 x 100 template units (the crop at 256 px is
# these times 2.8): HOG's box around the template's brows and nose, measured on the shared clips.
FACE_BOX_CENTRE, FACE_BOX_SIDE = (37.5, 44.5), 77.0
JAW = list(range(2, 15))  # the jaw line from below one cheekbone round the chin to the other
NOSE_BASE = [35, 34, 33, 32, 31]  # the nose's lower edge, right to left: the region's top


@dataclass(frozen=True)
class Blend:
    """The blend mask a paste-back uses (see the module's text). `custom` is `[N or 1, H, W]`, 0-1.
    `colour_match`: the samplers match the regenerated lower face's colours to the original first
    (`seam.match_colour`); `paste_back` itself does not use it."""

    mask: str = BLEND_MASK.default
    grow: float = GROW.default
    feather: float = FEATHER.default
    custom: torch.Tensor | None = None
    colour_match: bool = COLOUR_MATCH.default

    def check(self, frames: int, frame_hw: tuple[int, int]) -> "Blend":
        """The blend with its values checked against the clip it is for: `frames` frames of `frame_hw`."""
        BLEND_MASK.check(self.mask, "the blend mask")
        GROW.check(self.grow, "the mask's growth")
        FEATHER.check(self.feather, "the mask's feather")
        COLOUR_MATCH.check(self.colour_match, "the colour match")
        if self.mask != "custom":
            return self
        if self.custom is None:
            raise ValueError("blend_mask is custom but no mask was given: connect a MASK (or choose reference or "
                             "landmarks)")
        custom = torch.as_tensor(self.custom, dtype=torch.float32)
        custom = custom[None] if custom.ndim == 2 else custom
        if custom.ndim != 3 or tuple(custom.shape[1:]) != tuple(frame_hw):
            raise ValueError(f"the blend mask is {custom.shape[-1]}x{custom.shape[-2]} but the frames are "
                             f"{frame_hw[1]}x{frame_hw[0]} (width x height): give a mask of the frames' size")
        if custom.shape[0] not in (1, frames):
            raise ValueError(f"the blend mask has {custom.shape[0]} frames for {frames} frames: give one mask, "
                             "or one per frame")
        if not bool(torch.isfinite(custom).all()):
            raise ValueError("the blend mask holds NaN or infinite values")
        return replace(self, custom=custom.clamp(0, 1))

    def frame_weight(self, index: int, box: tuple[int, int, int, int], face_width: float) -> torch.Tensor | None:
        """The custom mask of frame `index` in `box` (`[h, w]`, feathered), or None for the other choices."""
        if self.mask != "custom":
            return None
        x0, y0, x1, y1 = box
        mask = self.custom[index if self.custom.shape[0] > 1 else 0]
        radius = self.feather * face_width / 100
        pad = 2 * math.ceil(radius) + 1  # the blur reaches this far: only the box and its margin are blurred
        top, left = max(y0 - pad, 0), max(x0 - pad, 0)
        part = feathered(mask[top:y1 + pad, left:x1 + pad], radius)
        return part[y0 - top:y0 - top + (y1 - y0), x0 - left:x0 - left + (x1 - x0)]


def feathered(mask: torch.Tensor, radius: float) -> torch.Tensor:
    """`mask` `[h, w]` with a soft edge about `radius` px wide (a Gaussian blur; 0: as it is)."""
    if radius < 0.5:
        return mask
    size = 2 * math.ceil(radius) + 1
    return gaussian_blur(mask.to(torch.float32), size, radius / 2).clamp(0, 1)


class MouthLandmarks:
    """dlib's 68-point landmarks of a face in its aligned crop (the frame warped by the alignment's similarity
    transform at the crop size, so the face is upright and of a known size), and the lips-jaw-chin region."""

    def __init__(self) -> None:
        import dlib

        self._dlib = dlib
        self._model = dlib.shape_predictor(str(_face_recognition_model(LANDMARKS_68)))

    def points(self, crop: np.ndarray) -> np.ndarray:
        """The 68 points `[68, 2]` of the face in `crop` (`[h, w, 3]` uint8 at the crop size, e.g. 210x280)."""
        scale = crop.shape[1] / 75.0
        cx, cy, half = FACE_BOX_CENTRE[0] * scale, FACE_BOX_CENTRE[1] * scale, FACE_BOX_SIDE * scale / 2
        rect = self._dlib.rectangle(int(round(cx - half)), int(round(cy - half)), int(round(cx + half)),
                                    int(round(cy + half)))
        shape = self._model(np.ascontiguousarray(crop), rect)
        return np.array([(p.x, p.y) for p in shape.parts()], np.float64)

    def region(self, crop: np.ndarray, grow: float, feather: float) -> torch.Tensor:
        """The lips-jaw-chin region of the face in `crop` as a `[h, w]` weight in [0, 1]: the polygon of the jaw
        line and the nose base, grown by `grow` and feathered by `feather` (% of the face's width)."""
        from scipy.ndimage import distance_transform_edt  # here: importing the pack stays cheap

        points = self.points(crop)
        width = float(np.linalg.norm(points[16] - points[0]))
        h, w = crop.shape[:2]
        picture = Image.new("L", (w, h), 0)
        ImageDraw.Draw(picture).polygon([tuple(p) for p in points[JAW + NOSE_BASE]], fill=255)
        inside = np.asarray(picture) > 127
        grow_px = grow * width / 100
        if grow_px > 0:
            inside = distance_transform_edt(~inside) <= grow_px
        elif grow_px < 0:
            inside = distance_transform_edt(inside) > -grow_px
        return feathered(torch.from_numpy(inside.astype(np.float32)), feather * width / 100)
