"""Running an upscale model over frames in bounded memory: chunks of frames, overlapping tiles, memory planning.

Planning estimates the activations of one batch of tiles (`estimate_activation_bytes`) against the free memory
of the device and shrinks first the frames per batch, then the tile, until it fits; if the device still runs out
of memory, the same shrinking happens and the chunk is retried. Seams between tiles are cross-faded over the
overlap, and tiles are placed so that none extends past the image.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..core.memory import InsufficientMemoryError, available_bytes, check_fits, format_bytes
from .models import UpscaleModel
from .options import CHUNK, OVERLAP, TILE

Progress = Callable[[int, int], None]

MIN_TILE = 32
# Fraction of the free memory that planning lets one batch of tiles use; the rest absorbs the estimate's error.
MEMORY_HEADROOM = 0.7


class UpscaleMemoryError(InsufficientMemoryError):
    """A request that cannot fit in memory even with the smallest tiles; the message gives the numbers."""


@dataclass(frozen=True)
class Tiling:
    """How a model goes over the frames: `tile`-pixel tiles overlapping by `overlap` (input pixels), `chunk`
    frames on the device at once, tiles never shrunk below `min_tile` when memory runs out. `max_memory` caps the
    device memory planned for one batch (default: a share of what is free) and `reserved` is host memory already
    promised elsewhere, which a CPU run leaves free. The defaults are the Upscale node's (`options.py`)."""
    tile: int = TILE.default
    overlap: int = OVERLAP.default
    chunk: int = CHUNK.default
    max_memory: int | None = None
    reserved: int = 0
    min_tile: int = MIN_TILE


def estimate_activation_bytes(model: UpscaleModel, tile_height: int, tile_width: int, batch: int = 1,
                              dtype: torch.dtype = torch.float16) -> int:
    """A rough peak of device memory for one model call on `batch` tiles (weights not included).

    Convolutional upscalers keep a few feature maps of their widest layer at the input size and, after the
    upsampling layers, at `scale**2` times that; the factors below cover RRDBNet and SRVGGNetCompact. A model
    that knows better (a face restorer, whose widest layers run at a fraction of its input size) gives its own
    `estimate_activation_bytes(height, width, batch, dtype)`.
    """
    own = getattr(model, "estimate_activation_bytes", None)
    if callable(own):
        return int(own(tile_height, tile_width, batch, dtype))
    widths = [m.out_channels for m in model.model.modules() if isinstance(m, torch.nn.Conv2d)]
    features = max(widths, default=64)
    element = torch.empty((), dtype=dtype).element_size()
    per_pixel = element * features * (6 + 3 * model.scale ** 2) + 4 * 3 * (1 + model.scale ** 2)
    return batch * tile_height * tile_width * per_pixel


def model_device_bytes(model: UpscaleModel, dtype: torch.dtype = torch.float16) -> int:
    """Memory of the weights in `dtype`, for callers that free room first (ComfyUI's `free_memory`)."""
    element = torch.empty((), dtype=dtype).element_size()
    return sum(p.numel() for p in model.model.parameters()) * element


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def default_dtype(model: UpscaleModel | None, device: torch.device) -> torch.dtype:
    """fp16 on CUDA when the model allows it (Real-ESRGAN does); fp32 elsewhere, where fp16 convs are slow."""
    if device.type == "cuda" and (model is None or getattr(model, "supports_half", True)):
        return torch.float16
    return torch.float32


class TiledRunner:
    """Runs a model over frames chunk by chunk and tile by tile, shrinking batches and tiles when memory runs out.

    `frames` is `[N, H, W, C]`, or any object with that `.shape` whose slices `frames[a:b]` are such tensors (frames
    prepared a chunk at a time). `tiling` says how (`Tiling`); a face restorer sets its tile and `min_tile` to its
    whole image, so tiles never shrink below it.
    """

    def __init__(self, model: UpscaleModel, frames: torch.Tensor, device: torch.device, dtype: torch.dtype, *,
                 tiling: Tiling = Tiling(), progress: Progress | None = None):
        self.model, self.frames, self.device, self.dtype = model, frames, device, dtype
        self.overlap, self.progress = tiling.overlap, progress
        count, self.height, self.width, _ = frames.shape
        self.scale = int(model.scale)
        self.min_tile = min(max(tiling.min_tile, 1), max(self.height, self.width))
        internal = str(getattr(getattr(model, "tiling", None), "name", "")) == "INTERNAL"
        # A model that tiles itself, or an image already smaller than a tile, is processed whole.
        self.tile = max(self.height, self.width) if internal else min(max(tiling.tile, self.min_tile),
                                                                      max(self.height, self.width))
        self.batch = max(1, min(tiling.chunk, count))
        # Models that pixel-unshuffle their input (RealESRGAN_x2plus) see a different grid if a tile starts off it.
        self.multiple = int(getattr(getattr(model, "size_requirements", None), "multiple_of", 1) or 1)
        self.done = 0
        self._plan(memory_budget(device, tiling.max_memory, tiling.reserved))

    def _activation_bytes(self, batch: int, tile: int) -> int:
        return estimate_activation_bytes(self.model, min(tile, self.height), min(tile, self.width), batch, self.dtype)

    def _plan(self, budget: int) -> None:
        # The float32 accumulator of a chunk lives on the device too.
        out_frame = 4 * 3 * self.height * self.width * self.scale ** 2 * 2
        while self.batch > 1 and self._activation_bytes(self.batch, self.tile) + self.batch * out_frame > budget:
            self.batch = (self.batch + 1) // 2
        while self._activation_bytes(1, self.tile) + out_frame > budget and self.tile > self.min_tile:
            self.tile = max(self.min_tile, self.tile // 2)
        needed = self._activation_bytes(1, self.tile) + out_frame
        if needed > budget:
            raise UpscaleMemoryError(
                f"running the model on one {self.width}x{self.height} frame (x{self.scale}) needs about "
                f"{format_bytes(needed)} on "
                f"{self.device} even with {self.tile} px tiles, and only {format_bytes(budget)} is available; lower the "
                "input's size or free memory")

    def _tiles_per_frame(self) -> int:
        return len(self._spans(self.height)) * len(self._spans(self.width))

    def _spans(self, size: int) -> list[tuple[int, int]]:
        return tile_spans(size, self.tile, self._overlap(), self.multiple)

    def _overlap(self) -> int:
        return min(self.overlap, self.tile // 4)

    def chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        count = self.frames.shape[0]
        start = 0
        while start < count:
            stop = min(start + self.batch, count)
            done_before = self.done
            try:
                upscaled = self._run_chunk(self.frames[start:stop], count - start)
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not _is_out_of_memory(exc):
                    raise
                self.done = done_before
                self._shrink_after_oom(exc)
                continue
            yield start, upscaled
            start = stop

    def _shrink_after_oom(self, exc: BaseException) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.batch > 1:
            self.batch = (self.batch + 1) // 2
        elif self.tile > self.min_tile:
            self.tile = max(self.min_tile, self.tile // 2)
        else:
            raise UpscaleMemoryError(f"out of memory on {self.device} with one frame per batch and {self.tile} px "
                                     f"tiles ({self.width}x{self.height} x{self.scale}): {exc}") from exc

    @torch.no_grad()
    def _run_chunk(self, chunk: torch.Tensor, frames_left: int) -> torch.Tensor:
        n = chunk.shape[0]
        x = chunk.to(self.device).permute(0, 3, 1, 2).to(self.dtype)
        # Progress counts frame-tiles; the total is recomputed because an out-of-memory retry changes the tiling.
        total = self.done + frames_left * self._tiles_per_frame()
        overlap = self._overlap()
        rows, cols = self._spans(self.height), self._spans(self.width)
        if len(rows) == len(cols) == 1:
            out = self._call(x).float()
            self.done += n
            report(self.progress, self.done, total)
            return out
        s = self.scale
        out = torch.zeros(n, 3, self.height * s, self.width * s, device=self.device)
        weight = torch.zeros(1, 1, self.height * s, self.width * s, device=self.device)
        for top, th in rows:
            ramp_y = _ramp(th * s, overlap * s, top > 0, top + th < self.height, self.device)
            for left, tw in cols:
                ramp_x = _ramp(tw * s, overlap * s, left > 0, left + tw < self.width, self.device)
                tile = self._call(x[:, :, top:top + th, left:left + tw]).float()
                blend = ramp_y[:, None] * ramp_x[None, :]
                region = (slice(None), slice(None), slice(top * s, (top + th) * s), slice(left * s, (left + tw) * s))
                out[region] += tile * blend
                weight[region] += blend
                self.done += n
                report(self.progress, self.done, total)
        return out.div_(weight)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        expected = (x.shape[2] * self.scale, x.shape[3] * self.scale)
        if tuple(y.shape[2:]) != expected:
            raise ValueError(f"the model's scale is {self.scale}, but it turned {tuple(x.shape[2:])} into "
                             f"{tuple(y.shape[2:])}")
        return y


def tile_spans(size: int, tile: int, overlap: int, multiple: int = 1) -> list[tuple[int, int]]:
    """`(start, length)` of the tiles along one axis: the fewest tiles that overlap by at least `overlap`, spread
    evenly, starting on multiples of `multiple`; the last ends at the edge (up to `multiple - 1` longer than `tile`)."""
    tile = max(tile, multiple)
    if size <= tile:
        return [(0, size)]
    count = math.ceil((size - tile) / max(1, tile - overlap)) + 1
    starts = sorted({int(i * (size - tile) / (count - 1)) // multiple * multiple for i in range(count)})
    return [(start, tile) for start in starts[:-1]] + [(starts[-1], size - starts[-1])]


def _ramp(length: int, fade: int, fade_in: bool, fade_out: bool, device: torch.device) -> torch.Tensor:
    """Tile weights along one axis: a linear fade over `fade` pixels on each side that meets another tile.

    Fading to near zero at a shared edge also hides the zero-padding artefacts that every tile has at its border.
    """
    weight = torch.ones(length, device=device)
    fade = min(fade, length // 2)
    if fade > 0:
        ramp = (torch.arange(fade, device=device) + 0.5) / fade
        if fade_in:
            weight[:fade] = ramp
        if fade_out:
            weight[length - fade:] = ramp.flip(0)
    return weight


@contextmanager
def placed(model: UpscaleModel, device: torch.device, dtype: torch.dtype):
    """Move and cast the model for the run, then put it back: ComfyUI shares one descriptor between nodes."""
    first = next(model.model.parameters(), None)
    original = (first.device, first.dtype) if first is not None else None
    model.model.to(device=device, dtype=dtype)
    try:
        yield
    finally:
        if original is not None:
            model.model.to(device=original[0], dtype=original[1])


def memory_budget(device: torch.device, limit: int | None, reserved: int = 0) -> int:
    """Bytes one batch may use on `device`: `limit` if given, else a share of what is free there. `reserved` is
    host memory already promised (the result being filled), subtracted when the device is the CPU."""
    if limit is not None:
        return int(limit)
    if device.type == "cuda":
        return int(available_bytes(device) * MEMORY_HEADROOM)
    return int(max(0, available_bytes(device) - reserved) * MEMORY_HEADROOM)


def check_host_memory(needed: int, what: str, limit: int | None) -> None:
    """Refuse a result that cannot fit in RAM (`limit` overrides what is available) before allocating it."""
    check_fits(needed, f"the result ({what}, float32)", "the scale or the output size, or upscale fewer frames "
               "at a time", "cpu", available=limit, error=UpscaleMemoryError)


def _is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)

