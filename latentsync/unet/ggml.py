"""GGML's block formats (the tensor types of GGUF files), quantized and dequantized with torch on any device.

Each format cuts a tensor, flattened, into blocks of `block` values and stores each block in `size` bytes: a
scale (and for some a minimum) in fp16, then the values' small integers packed into bits. The byte layouts are
llama.cpp's (`ggml-quants.c`), so files written here are GGUF files like any other; the quantizers follow its
reference ("_ref") functions: the K formats search each 32- or 16-value sub-block's scale for the least
weighted squared error and store the sub-block scales in 6 or 8 bits under one fp16 scale per 256 values.

    Q8_0  32 values, 34 bytes: d, 32 int8                          x = d q
    Q4_0  32 values, 18 bytes: d, 16 bytes of nibbles              x = d (q - 8)
    Q4_K 256 values, 144 bytes: d, dmin, 12 bytes of 6-bit sub-block scales and mins, 128 bytes of nibbles
    Q5_K 256 values, 176 bytes: as Q4_K plus 32 bytes of fifth bits
    Q6_K 256 values, 210 bytes: 128 bytes of low nibbles, 64 of high 2-bit pairs, 16 int8 scales, d

`quantize(x, kind)` returns `[blocks, size]` uint8; `dequantize(raw, kind, dtype)` the flat values.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class BlockFormat:
    name: str
    block: int  # values per block
    size: int  # bytes per block
    code: int  # GGMLQuantizationType's number in GGUF files


FORMATS = {f.name: f for f in (BlockFormat("Q8_0", 32, 34, 8), BlockFormat("Q6_K", 256, 210, 14),
                               BlockFormat("Q5_K", 256, 176, 13), BlockFormat("Q4_K", 256, 144, 12),
                               BlockFormat("Q4_0", 32, 18, 2))}


CHUNK_BLOCKS = 4096  # K-format blocks searched at a time: their temporaries stay in the CPU's cache


def _f16(raw: Tensor, start: int) -> Tensor:
    """The fp16 at byte `start` of every block, as float32 `[blocks, 1]`."""
    return raw[:, start:start + 2].contiguous().view(torch.float16).float()


def _to_bytes(values: Tensor) -> Tensor:
    """fp16 `[blocks]` as `[blocks, 2]` bytes."""
    return values.to(torch.float16).reshape(-1, 1).view(torch.uint8)


def dequantize(raw: Tensor, kind: str, dtype: torch.dtype = torch.float32) -> Tensor:
    """The flat values of `raw` (`[blocks, size]` uint8 in format `kind`), in `dtype`, on `raw`'s device.

    Computed in float32 (exactly llama.cpp's values) with few passes and in place, as it runs once per layer and
    call; only the result is cast."""
    blocks = raw.shape[0]
    if kind == "Q8_0":
        values = raw[:, 2:].contiguous().view(torch.int8).float().mul_(_f16(raw, 0))
    elif kind == "Q4_0":
        nibbles = raw[:, 2:18]
        values = torch.cat([nibbles & 0xF, nibbles >> 4], 1).float().sub_(8).mul_(_f16(raw, 0))
    elif kind in ("Q4_K", "Q5_K"):
        scale, low = _k_scales(raw[:, 4:16]), raw[:, -128:].reshape(blocks, 4, 1, 32)
        q = torch.cat([low & 0xF, low >> 4], 2).reshape(blocks, 8, 32)
        if kind == "Q5_K":
            shifts = torch.arange(8, device=raw.device, dtype=torch.uint8).view(1, 8, 1)
            q = q | (((raw[:, 16:48].reshape(blocks, 1, 32) >> shifts) & 1) << 4)
        values = q.float().mul_(_f16(raw, 0)[:, :, None] * scale[0]).sub_(_f16(raw, 2)[:, :, None] * scale[1])
    elif kind == "Q6_K":
        low, high = raw[:, :128].reshape(blocks, 2, 1, 64), raw[:, 128:192].reshape(blocks, 2, 1, 32)
        nibbles = torch.cat([low[..., :32] & 0xF, low[..., 32:] & 0xF, low[..., :32] >> 4, low[..., 32:] >> 4], 2)
        shifts = torch.tensor([0, 2, 4, 6], device=raw.device, dtype=torch.uint8).view(1, 1, 4, 1)
        q = nibbles | (((high >> shifts) & 3) << 4)  # [blocks, 2 halves, 4 groups, 32], 0..63
        scales = raw[:, 192:208].contiguous().view(torch.int8).float().view(blocks, 2, 4, 2, 1)
        step = (_f16(raw, 208).view(blocks, 1, 1, 1, 1) * scales).expand(-1, -1, -1, -1, 16).reshape(blocks, 2, 4, 32)
        values = q.float().sub_(32).mul_(step)
    else:
        raise ValueError(f"unknown GGML block format {kind!r}; known: {', '.join(FORMATS)}")
    values = values.reshape(-1)
    return values if dtype == torch.float32 else values.to(dtype)


def _k_scales(packed: Tensor) -> tuple[Tensor, Tensor]:
    """The 8 sub-block scales and mins of Q4_K/Q5_K blocks from their 12 packed bytes, `[blocks, 8, 1]` each."""
    s = packed.int()
    scale = torch.cat([s[:, 0:4] & 63, (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)], 1)
    low = torch.cat([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], 1)
    return scale[:, :, None].float(), low[:, :, None].float()


def quantize(x: Tensor, kind: str) -> Tensor:
    """`x` (any shape, `numel` a multiple of the format's block) as `[blocks, size]` uint8 in format `kind`."""
    fmt = FORMATS.get(kind)
    if fmt is None:
        raise ValueError(f"unknown GGML block format {kind!r}; known: {', '.join(FORMATS)}")
    if x.numel() % fmt.block:
        raise ValueError(f"{kind} needs a multiple of {fmt.block} values, got {x.numel()}")
    x = x.detach().float().reshape(-1, fmt.block)
    if kind == "Q8_0":
        d = x.abs().amax(1) / 127
        q = torch.round(x / torch.where(d > 0, d, 1)[:, None]).to(torch.int8)
        return torch.cat([_to_bytes(d), q.view(torch.uint8)], 1)
    if kind == "Q4_0":
        signed_max = x.gather(1, x.abs().argmax(1, keepdim=True))[:, 0]
        d = signed_max / -8
        q = torch.floor(x / torch.where(d != 0, d, 1)[:, None] + 8.5).clamp(0, 15).to(torch.uint8)
        q = torch.where((d != 0)[:, None], q, 8)
        return torch.cat([_to_bytes(d), q[:, :16] | (q[:, 16:] << 4)], 1)
    if kind == "Q6_K":
        return torch.cat([_quantize_q6_k(part) for part in x.split(CHUNK_BLOCKS)])
    return torch.cat([_quantize_q45_k(part, 15 if kind == "Q4_K" else 31) for part in x.split(CHUNK_BLOCKS)])


def _round_clamped(values: Tensor, low: float, high: float) -> Tensor:
    return torch.round(values).clamp(low, high)


def _scale_and_min(x: Tensor, weights: Tensor, nmax: int, rmin: float, steps: int) -> tuple[Tensor, Tensor]:
    """llama.cpp's `make_qkx2_quants` for every row of `x`: the scale and (non-positive) minimum with the least
    `weights`-weighted squared error of `x ~ scale * L + min`, L in 0..nmax, searched over `steps + 1` grids.
    The error of each candidate comes from the weighted sums alone (expanded square), not from new passes."""
    low, high = x.amin(1).clamp(max=0), x.amax(1)
    span = torch.where(high > low, high - low, 1)
    shifted, weighted_x = x - low[:, None], weights * x
    sum_w, sum_x, sum_x2 = weights.sum(1), weighted_x.sum(1), (weighted_x * x).sum(1)
    best, best_scale, best_min = None, span / nmax, low
    for step in range(-1, steps + 1):  # -1: the plain min-max grid, then the search around it
        levels = torch.round(shifted * ((nmax + rmin + 0.1 * step if step >= 0 else nmax) / span)[:, None])
        levels.clamp_(0, nmax)
        weighted = weights * levels
        sum_l, sum_l2, sum_xl = weighted.sum(1), (weighted * levels).sum(1), (weighted * x).sum(1)
        if step < 0:
            scale, minimum, fits = best_scale, best_min, torch.ones_like(sum_l, dtype=torch.bool)
        else:
            det = sum_w * sum_l2 - sum_l ** 2
            fits, safe = det > 0, torch.where(det > 0, det, 1)
            scale, minimum = (sum_w * sum_xl - sum_x * sum_l) / safe, (sum_l2 * sum_x - sum_l * sum_xl) / safe
            positive = minimum > 0
            scale = torch.where(positive, sum_xl / torch.where(sum_l2 > 0, sum_l2, 1), scale)
            minimum = torch.where(positive, 0, minimum)
        error = (scale ** 2 * sum_l2 + 2 * scale * minimum * sum_l - 2 * scale * sum_xl + minimum ** 2 * sum_w
                 - 2 * minimum * sum_x + sum_x2)
        better = fits if best is None else fits & (error < best)
        best = error if best is None else torch.where(better, error, best)
        best_scale, best_min = torch.where(better, scale, best_scale), torch.where(better, minimum, best_min)
    flat = high <= low
    return torch.where(flat, 0, best_scale), torch.where(flat, -low, -best_min)


def _quantize_q45_k(x: Tensor, nmax: int) -> Tensor:
    blocks = x.numel() // 256
    sub = x.reshape(-1, 32)
    weights = (sub ** 2).mean(1, keepdim=True).sqrt() + sub.abs()
    scale, minimum = _scale_and_min(sub, weights, nmax, -1.0 if nmax == 15 else -0.5, 20 if nmax == 15 else 15)
    scale, minimum = scale.view(blocks, 8), minimum.view(blocks, 8)
    top_scale, top_min = scale.amax(1), minimum.amax(1)
    ls = _round_clamped(scale * torch.where(top_scale > 0, 63 / top_scale, 0)[:, None], 0, 63).int()
    lm = _round_clamped(minimum * torch.where(top_min > 0, 63 / top_min, 0)[:, None], 0, 63).int()
    d, dmin = (top_scale / 63).half().float(), (top_min / 63).half().float()
    packed = torch.cat([ls[:, :4] | ((ls[:, 4:] >> 4) << 6), lm[:, :4] | ((lm[:, 4:] >> 4) << 6),
                        (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)], 1).to(torch.uint8)
    step, offset = d[:, None] * ls, dmin[:, None] * lm
    levels = _round_clamped((sub.view(blocks, 8, 32) + offset[..., None]) / torch.where(step > 0, step, 1)[..., None],
                            0, nmax).int()
    levels = torch.where((step > 0)[..., None], levels, 0)
    low = (levels & 0xF).view(blocks, 4, 2, 32)
    nibbles = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(blocks, 128).to(torch.uint8)
    parts = [_to_bytes(d), _to_bytes(dmin), packed]
    if nmax == 31:
        shifts = torch.arange(8, dtype=torch.int32, device=x.device).view(1, 8, 1)
        parts.append((((levels >> 4) & 1) << shifts).sum(1).to(torch.uint8))
    return torch.cat([*parts, nibbles], 1)


def _symmetric_scale(x: Tensor, nmax: int) -> Tensor:
    """llama.cpp's `make_qx_quants` (rmse_type 1) for every row: the scale of `x ~ scale * L`, L in
    -nmax..nmax-1, with the least x²-weighted squared error over 19 grids around the largest value's."""
    signed_max = x.gather(1, x.abs().argmax(1, keepdim=True))
    safe_max = torch.where(signed_max != 0, signed_max, 1)
    weights = x ** 2
    best_scale, best = torch.zeros(len(x), device=x.device), torch.full((len(x),), -1.0, device=x.device)
    for step in (0, *(step for step in range(-9, 10) if step)):
        levels = _round_clamped(-(nmax + 0.1 * step) / safe_max * x, -nmax, nmax - 1)
        sum_lx, sum_l2 = (weights * x * levels).sum(1), (weights * levels ** 2).sum(1)
        scale = sum_lx / torch.where(sum_l2 > 0, sum_l2, 1)
        better = (sum_l2 > 0) & (scale * sum_lx > best)
        best, best_scale = torch.where(better, scale * sum_lx, best), torch.where(better, scale, best_scale)
    return torch.where(signed_max[:, 0] != 0, best_scale, 0)


def _quantize_q6_k(x: Tensor) -> Tensor:
    blocks = x.numel() // 256
    sub = x.reshape(-1, 16)
    scale = _symmetric_scale(sub, 32).view(blocks, 16)
    top = scale.gather(1, scale.abs().argmax(1, keepdim=True))[:, 0]
    inverse = torch.where(top != 0, -128 / torch.where(top != 0, top, 1), 0)
    ls = _round_clamped(inverse[:, None] * scale, -128, 127)
    d = torch.where(inverse != 0, 1 / torch.where(inverse != 0, inverse, 1), 0).half().float()
    step = d[:, None] * ls
    levels = _round_clamped(sub.view(blocks, 16, 16) / torch.where(step != 0, step, 1)[..., None], -32, 31) + 32
    levels = torch.where((step != 0)[..., None], levels, 32).int().view(blocks, 2, 4, 32)
    low = levels & 0xF
    nibbles = torch.cat([low[:, :, 0] | (low[:, :, 2] << 4), low[:, :, 1] | (low[:, :, 3] << 4)], 2)
    high = levels >> 4
    pairs = high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)
    scales = ls.to(torch.int8).view(torch.uint8)
    return torch.cat([nibbles.reshape(blocks, 128).to(torch.uint8), pairs.reshape(blocks, 64).to(torch.uint8),
                      scales, _to_bytes(d)], 1)
