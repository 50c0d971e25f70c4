"""Upscaling frame batches with a super-resolution model or by interpolation: whole frames, face crops fitted to
their boxes, or only the regenerated mouth.

Frames are ComfyUI IMAGE tensors, float `[N, H, W, 3]` in 0-1 (uint8 is accepted) on any device; results come
back on the CPU in float32. Sizes are `(width, height)`. Long clips go through a few frames at a time and large
frames through overlapping tiles (`tiling.py`), so device memory stays bounded however many frames come in.

A model runs once, at its own scale; another target size is then reached by interpolation (`resize_mode`):
a x4 model asked for `scale=2` gives its x4 result reduced by half, as Real-ESRGAN's `outscale` does.

`progress(done, total)` is called after every batch of tiles or frames and may raise to cancel; the model is put
back on its original device and dtype either way.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Iterator
from dataclasses import replace

import torch
import torch.nn.functional as F

from ..core.memory import check_fits, format_bytes
from .options import FEATHER, RESIZE_MODE
from .resize import INTERPOLATION_MODES, resize_nchw, scaled_size
from .models import UpscaleModel, check_upscale_model
from .tiling import (Progress, TiledRunner, Tiling, UpscaleMemoryError, check_host_memory, default_device,
                     default_dtype, memory_budget, placed, report)

Size = tuple[int, int]


def upscale_frames(frames: torch.Tensor, method: str | UpscaleModel, *, scale: float | None = None,
                   size: Size | None = None, tiling: Tiling = Tiling(), device: str | torch.device | None = None,
                   dtype: torch.dtype | None = None, resize_mode: str = RESIZE_MODE.default,
                   progress: Progress | None = None, max_output_bytes: int | None = None) -> torch.Tensor:
    """Upscale `[N, H, W, 3]` frames with a model (a spandrel descriptor) or an interpolation mode name.

    The output size is `size`, or the input size times `scale`, or, for a model, times the model's own scale.
    `tiling` (`tiling.Tiling`) gives the tile and overlap in input pixels, the frames on the device at once
    (`chunk`) and `max_memory`, the cap on the device memory planned for activations. `device` defaults to CUDA
    when present, `dtype` to fp16 there. `max_output_bytes` caps the RAM of the result (both caps default to what
    is free); requests that cannot fit raise `UpscaleMemoryError` before any work.
    """
    frames = as_frames(frames)
    count, height, width, channels = frames.shape
    target = _target_size(width, height, scale, size, method)
    result_bytes = count * target[0] * target[1] * channels * 4
    check_host_memory(result_bytes, f"{count} frames of {target[0]}x{target[1]}", max_output_bytes)
    out = torch.empty(count, target[1], target[0], channels)
    resize_mode = method if isinstance(method, str) else resize_mode
    tiling = replace(tiling, reserved=tiling.reserved + result_bytes)
    for start, upscaled in _upscaled_chunks(frames, method, target, tiling=tiling, device=device, dtype=dtype,
                                            progress=progress):
        out[start:start + upscaled.shape[0]] = resize_nchw(upscaled, target, resize_mode).permute(0, 2, 3, 1).cpu()
    return out


def upscale_mouth_region(crops: torch.Tensor, mouth_mask: torch.Tensor, model: UpscaleModel, *,
                         scale: float | None = None, size: Size | None = None, base_mode: str = "bicubic",
                         feather: float = FEATHER.default, margin: int = 16, **options) -> torch.Tensor:
    """Face-only mode: the model's upscale where the mouth was regenerated, a cheap interpolation elsewhere.

    `mouth_mask` is LatentSync's mask, 1 = kept from the video and 0 = regenerated, as `[H, W]`, `[N, H, W]` or
    `[N, H, W, 1]` at any resolution. Its edge is softened by a Gaussian of `feather` times the output's shorter
    side. The model only runs on the box around the mouth (plus `margin` input pixels of context, snapped so the
    box maps to whole output pixels), which is about half of a LatentSync crop. Outside that box the result is
    exactly `upscale_frames(crops, base_mode, ...)`. `options` are `upscale_frames`' keywords.
    """
    crops = as_frames(crops)
    count, height, width, _ = crops.shape
    model = check_upscale_model(model)
    target = _target_size(width, height, scale, size, model)
    progress = options.pop("progress", None)
    out = upscale_frames(crops, base_mode, size=target, **options)
    weight = mouth_weight(mouth_mask, count, target, feather)
    multiple = int(getattr(getattr(model, "size_requirements", None), "multiple_of", 1) or 1)
    box = _mouth_box(weight, (width, height), target, margin, multiple)
    if box is None:
        report(progress, 1, 1)
        return out
    (x0, y0, x1, y1), (tx0, ty0, tx1, ty1) = box
    region = upscale_frames(crops[:, y0:y1, x0:x1], model, size=(tx1 - tx0, ty1 - ty0), progress=progress,
                            **options)
    # Weights under the box threshold (1/512) outside the box are dropped: a step far below one 8-bit level.
    blend = weight[:, ty0:ty1, tx0:tx1, None]
    out[:, ty0:ty1, tx0:tx1] = torch.lerp(out[:, ty0:ty1, tx0:tx1], region, blend)
    return out


def _upscaled_chunks(frames: torch.Tensor, method: str | UpscaleModel, target: Size, *, tiling: Tiling = Tiling(),
                     device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                     progress: Progress | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield `(first frame, [n, C, h, w] float32 on the device)`: the model's output at its own scale, or the
    input chunk itself when interpolating (so interpolation reads the source pixels once). `tiling.reserved`
    holds the host memory of the result, which a CPU run must leave free."""
    for name, value, least in (("tile", tiling.tile, 1), ("overlap", tiling.overlap, 0), ("chunk", tiling.chunk, 1)):
        try:
            whole = not isinstance(value, bool) and operator.index(value) >= least
        except TypeError:
            whole = False
        if not whole:
            raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")
    device = torch.device(device) if device is not None else default_device()
    count = frames.shape[0]
    if isinstance(method, str):
        if method not in INTERPOLATION_MODES:
            raise ValueError(f"unknown method {method!r}: give an upscale model or one of "
                             f"{', '.join(INTERPOLATION_MODES)}")
        # The input as float32, the resized frame and its clamped or copied-out twin.
        per_frame = 4 * frames.shape[3] * (frames.shape[1] * frames.shape[2] + 2 * target[0] * target[1])
        budget = memory_budget(device, tiling.max_memory, tiling.reserved)
        if per_frame > budget:
            raise UpscaleMemoryError(f"resizing one frame to {target[0]}x{target[1]} needs about {format_bytes(per_frame)} "
                                     f"on {device} besides the result, and only {format_bytes(budget)} is available; lower "
                                     "the scale or the output size")
        step = max(1, min(tiling.chunk, budget // per_frame))
        for start in range(0, count, step):
            yield start, frames[start:start + step].to(device).permute(0, 3, 1, 2).float()
            report(progress, min(start + step, count), count)
        return
    model = check_upscale_model(method)
    if frames.shape[3] != 3:
        raise ValueError(f"upscale models take RGB frames; these have {frames.shape[3]} channels")
    dtype = dtype or default_dtype(model, device)
    with placed(model, device, dtype):
        runner = TiledRunner(model, frames, device, dtype, tiling=tiling, progress=progress)
        yield from runner.chunks()


def mouth_weight(mask: torch.Tensor, count: int, target: Size, feather: float) -> torch.Tensor:
    """`[N or 1, h, w]` on the CPU: 1 where the model's result is used, 0 where the interpolation is kept.

    `mask` is LatentSync's (1 = kept, 0 = regenerated) as `[H, W]`, `[N, H, W]` or `[N, H, W, 1]`, resized to
    `target` and softened by a Gaussian of `feather` times its shorter side. Shared by the mouth-only upscale and
    the mouth restoration (`restore.py`), so both blend over the same region."""
    mask = torch.as_tensor(mask).float().cpu()
    if mask.ndim == 4 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or mask.shape[0] not in (1, count):
        raise ValueError(f"the mouth mask must be [H, W] or [N, H, W] with N = 1 or {count}, got {tuple(mask.shape)}")
    # The resized mask, its padded copy and two blurred passes, all float32 at the output size.
    check_fits(4 * mask.shape[0] * target[0] * target[1] * 4, f"the mouth blend of {mask.shape[0]} crops at "
               f"{target[0]}x{target[1]}", "the scale or the output size", "cpu", error=UpscaleMemoryError)
    mouth = 1 - resize_nchw(mask[:, None].clamp(0, 1), target, "bilinear")
    sigma = feather * min(target)
    if sigma > 0.3:
        radius = math.ceil(3 * sigma)
        kernel = torch.exp(-0.5 * (torch.arange(-radius, radius + 1) / sigma) ** 2)
        kernel = kernel / kernel.sum()
        # Replicate padding keeps a mouth that touches the crop edge at full weight there.
        mouth = F.conv2d(F.pad(mouth, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
        mouth = F.conv2d(F.pad(mouth, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return mouth[:, 0].clamp(0, 1)


def _mouth_box(weight: torch.Tensor, source: Size, target: Size, margin: int,
               multiple: int = 1) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]] | None:
    """The input box `(x0, y0, x1, y1)` to run the model on and the output box it maps to exactly, or None."""
    used = weight > 1 / 512
    if not used.any():
        return None
    rows = used.any(dim=(0, 2)).nonzero()[:, 0]
    cols = used.any(dim=(0, 1)).nonzero()[:, 0]
    spans = []
    for lo, hi, n_in, n_out in ((cols[0], cols[-1] + 1, source[0], target[0]),
                                (rows[0], rows[-1] + 1, source[1], target[1])):
        # Input edges on multiples of `step` land on whole output pixels, so the region needs no resampling shift,
        # and on the model's own grid (pixel-unshuffle), so the model sees the same pixels as on the whole crop.
        step = math.lcm(n_in // math.gcd(n_in, n_out), multiple)
        first = max(0, math.floor(int(lo) * n_in / n_out) - margin) // step * step
        last = min(n_in, -(-(math.ceil(int(hi) * n_in / n_out) + margin) // step) * step)
        spans.append((first, last, first * n_out // n_in, last * n_out // n_in))
    (x0, x1, tx0, tx1), (y0, y1, ty0, ty1) = spans
    return (x0, y0, x1, y1), (tx0, ty0, tx1, ty1)


def as_frames(frames: torch.Tensor) -> torch.Tensor:
    """`[N, H, W, C]` frames as float in 0-1 (uint8 read as 0-255); refuses other shapes and empty batches."""
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4:
        raise ValueError(f"expected frames [N, H, W, C], got {getattr(frames, 'shape', type(frames).__name__)}")
    if 0 in frames.shape:
        raise ValueError(f"no pixels to upscale: frames have shape {tuple(frames.shape)}")
    return frames.float() / 255 if frames.dtype == torch.uint8 else frames


def _is_size(value) -> bool:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        return False
    try:
        return all(operator.index(v) == v for v in value)
    except TypeError:
        return False


def _target_size(width: int, height: int, scale: float | None, size: Size | None,
                 method: str | UpscaleModel) -> Size:
    if size is not None and scale is not None:
        raise ValueError("give either a scale or a size, not both")
    if size is not None:
        if not _is_size(size) or min(size) < 1:
            raise ValueError(f"a size is (width, height) in whole pixels >= 1, got {size!r}")
        return operator.index(size[0]), operator.index(size[1])
    if scale is None:
        if isinstance(method, str):
            raise ValueError(f"interpolation ({method}) needs a scale or a size")
        scale = check_upscale_model(method).scale
    return scaled_size(width, height, float(scale))
