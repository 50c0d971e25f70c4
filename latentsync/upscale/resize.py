"""Classical resizing of frame batches: nearest, bilinear, bicubic, lanczos and area, in torch.

Frames follow ComfyUI's IMAGE layout, float `[N, H, W, C]` in 0-1; sizes are `(width, height)` like PIL.
The modes are chosen to agree with PIL, the reference most users compare against:

- nearest: torch's `nearest-exact` (samples the source pixel under each output pixel's centre, like PIL);
  torch's plain `nearest` shifts the image by up to one source pixel.
- bilinear, bicubic: `F.interpolate(antialias=True)`. Torch's antialiased kernels are PIL's: the filter
  widens by the reduction factor when shrinking, and bicubic uses a = -0.5 (PIL) instead of -0.75.
- lanczos: torch has none; this is PIL's separable Lanczos-3 (same support, centres and normalisation) in
  floating point, width first and clamped between the passes like PIL. On photo-like images it is within one
  level of 255 of PIL's uint8 result; on saturated noise, where PIL (which sometimes resamples the height
  first) clips a different intermediate, they can differ more.
- area: `F.interpolate(mode="area")`, an adaptive average pool: exact box averaging for integer reductions
  (equal to PIL's BOX there); when enlarging it repeats pixels like nearest.

Results are clamped to 0-1: bicubic and lanczos overshoot at edges, and the frames are images.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

INTERPOLATION_MODES = ("nearest", "bilinear", "bicubic", "lanczos", "area")

_LANCZOS_LOBES = 3


def resize_nchw(images: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize channel-first `[N, C, H, W]` images (the layout models and tiles use) to `size = (width, height)`;
    returns float32 on the images' device."""
    width, height = _check_size(size)
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"unknown interpolation mode {mode!r}; choose one of {', '.join(INTERPOLATION_MODES)}")
    # Half-precision interpolation is not implemented for every mode on CPU, and it costs little next to a model.
    images = images.float()
    if images.shape[-2:] == (height, width):
        return images.clone()
    if mode == "lanczos":
        out = _lanczos(images, width, height)
    elif mode == "nearest":
        out = F.interpolate(images, size=(height, width), mode="nearest-exact")
    elif mode == "area":
        out = F.interpolate(images, size=(height, width), mode="area")
    else:
        out = F.interpolate(images, size=(height, width), mode=mode, align_corners=False, antialias=True)
    return out.clamp_(0, 1) if mode in ("bicubic", "lanczos") else out


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The `(width, height)` a `scale` gives, rounded, never below one pixel."""
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"the scale must be a positive number, got {scale}")
    return max(1, round(width * scale)), max(1, round(height * scale))


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a size is (width, height), got {size!r}") from exc
    if width < 1 or height < 1:
        raise ValueError(f"a size must be at least 1x1 pixels, got {width}x{height}")
    return width, height


def _lanczos_kernel(x: torch.Tensor) -> torch.Tensor:
    inside = (x >= -_LANCZOS_LOBES) & (x < _LANCZOS_LOBES)
    return torch.where(inside, torch.sinc(x) * torch.sinc(x / _LANCZOS_LOBES), torch.zeros_like(x))


def _lanczos_taps(in_size: int, out_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Source indices and weights `[out_size, taps]` of one axis, placed and normalised as PIL does."""
    scale = in_size / out_size
    # Shrinking widens the kernel by the reduction factor so that every source pixel contributes (antialiasing).
    stretch = max(scale, 1.0)
    support = _LANCZOS_LOBES * stretch
    taps = math.ceil(support) * 2 + 1
    centre = (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale
    first = torch.clamp((centre - support + 0.5).floor(), min=0).long()
    last = torch.clamp((centre + support + 0.5).floor(), max=in_size).long()
    index = first[:, None] + torch.arange(taps)[None, :]
    valid = index < last[:, None]
    weight = _lanczos_kernel((index.double() - centre[:, None] + 0.5) / stretch) * valid
    weight = weight / weight.sum(dim=1, keepdim=True)
    return index.clamp(max=in_size - 1).to(device), weight.float().to(device)


def _resample_axis(images: torch.Tensor, axis: int, out_size: int) -> torch.Tensor:
    index, weight = _lanczos_taps(images.shape[axis], out_size, images.device)
    view = [1] * images.ndim
    view[axis] = out_size
    out = None
    # One tap at a time keeps the peak memory at a few output-sized tensors instead of `taps` of them.
    for tap in range(index.shape[1]):
        term = images.index_select(axis, index[:, tap]) * weight[:, tap].view(view)
        out = term if out is None else out.add_(term)
    return out


def _lanczos(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    # Width first and clamped before the height pass, as PIL does (it stores the intermediate as uint8); this
    # also stops the two passes' overshoots from compounding.
    if images.shape[-1] != width:
        images = _resample_axis(images, images.ndim - 1, width).clamp_(0, 1)
    if images.shape[-2] != height:
        images = _resample_axis(images, images.ndim - 2, height)
    return images
