"""The fixed mouth mask: which part of the aligned face crop the UNet regenerates.

Semantics are the reference's: 1 = keep (eyes, nose, upper face), 0 = regenerate (the lower face from below
the nose to the chin). `latentsync/assets/mask.png` is the reference's 256 px `mask.png` (its channel 0; the three
channels are equal); other resolutions come from OpenCV's 8-bit Lanczos4 upscale exactly as the reference does,
which gives the 512 px mask its grey edge values.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..core.options import Option
from .warp import resize_lanczos4_uint8

MASK_PATH = Path(__file__).resolve().parents[1] / "assets" / "mask.png"
RESOLUTIONS = (256, 512)
RESOLUTION = Option("resolution", 256, "Face crop size: 256 for LatentSync 1.5, 512 for 1.6 (match the UNet).",
                    choices=RESOLUTIONS, kind=int)
LATENT_SCALE = 8  # the SD VAE's downsampling factor


def load_mask_image(path: str | Path = MASK_PATH) -> np.ndarray:
    """A mask image as `[H, W]` uint8 (channel 0 of a colour image), 255 = keep."""
    with Image.open(path) as image:
        array = np.array(image)
    if array.ndim == 3:
        array = array[..., 0]
    if array.ndim != 2 or array.dtype != np.uint8:
        raise ValueError(f"{path}: expected an 8-bit grey or colour image, got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array)


@lru_cache(maxsize=8)
def _pixel_mask_uint8(resolution: int, path: str) -> torch.Tensor:
    image = torch.from_numpy(load_mask_image(path))
    if tuple(image.shape) != (resolution, resolution):
        image = resize_lanczos4_uint8(image, (resolution, resolution))
    return image


def pixel_mask(resolution: int, path: str | Path = MASK_PATH) -> torch.Tensor:
    """The mask at crop resolution, `[R, R]` float32 in [0, 1] (the reference's value, /255)."""
    if resolution <= 0 or resolution % LATENT_SCALE:
        raise ValueError(f"the crop resolution must be a positive multiple of {LATENT_SCALE}, got {resolution}")
    return _pixel_mask_uint8(int(resolution), str(path)).to(torch.float32) / 255.0


def latent_mask(mask: torch.Tensor) -> torch.Tensor:
    """The UNet's mask channel: `[R, R]` (or `[..., R, R]`) mask to `[1, R/8, R/8]` by nearest interpolation."""
    size = mask.shape[-1] // LATENT_SCALE
    flat = mask.reshape(-1, 1, *mask.shape[-2:]).to(torch.float32)[:1]
    return F.interpolate(flat, size=(size, size), mode="nearest")[0]

