"""Image operations of the face pipeline, written in torch to match what the reference gets from OpenCV and kornia.

The reference crops faces with kornia's `warp_affine` (bilinear, pixel centres on integer coordinates, a fill
colour outside the frame), resizes crops and the mouth mask with OpenCV's 8-bit Lanczos4, and softens the
paste-back mask with OpenCV's erosion and kornia's Gaussian blur. Re-implementing them here keeps OpenCV and
kornia out of the pack's dependencies; the golden tests pin the numbers.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

Frames = torch.Tensor | np.ndarray


def frame_to_rgb_uint8(frame: Frames) -> np.ndarray:
    """One `[H, W, C]` frame (C = 1, 3 or 4; uint8 or float 0-1) as contiguous RGB uint8, for detectors."""
    array = frame.detach().cpu().numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected a frame shaped [H, W, 1|3|4], got {tuple(array.shape)}")
    if array.dtype != np.uint8:
        array = np.clip(np.asarray(array, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[..., :3])


def frame_region_255(frame: Frames, box: tuple[int, int, int, int]) -> torch.Tensor:
    """The RGB pixels of `frame[y0:y1, x0:x1]` as a `[3, h, w]` float32 tensor on the 0-255 scale."""
    x0, y0, x1, y1 = box
    region = torch.as_tensor(frame[y0:y1, x0:x1]).cpu()
    if region.ndim == 2:
        region = region[..., None]
    scale = 1.0 if region.dtype == torch.uint8 else 255.0
    region = region.to(torch.float32)
    if scale != 1.0:
        region = region * scale
    if region.shape[2] == 1:
        region = region.expand(-1, -1, 3)
    return region[..., :3].permute(2, 0, 1)


def transform_points(matrix: np.ndarray | torch.Tensor, points: np.ndarray) -> np.ndarray:
    """Apply a `[2, 3]` affine matrix to `[K, 2]` points."""
    m = np.asarray(matrix, np.float64)
    pts = np.asarray(points, np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def invert_affine(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of a `[2, 3]` affine matrix in the matrix's dtype, the closed form kornia uses."""
    a, b, c = matrix[0, 0], matrix[0, 1], matrix[0, 2]
    d, e, f = matrix[1, 0], matrix[1, 1], matrix[1, 2]
    det = a * e - b * d
    inv = torch.stack([torch.stack([e, -b]), torch.stack([-d, a])]) / det
    shift = -inv @ torch.stack([c, f])
    return torch.cat([inv, shift[:, None]], dim=1)


def footprint(matrix: torch.Tensor | np.ndarray, size_wh: tuple[int, int], frame_hw: tuple[int, int],
              margin: int) -> tuple[int, int, int, int] | None:
    """Frame box `(x0, y0, x1, y1)` covering where an output of `size_wh` samples from, through `matrix`
    (output -> frame), grown by `margin` and clipped to the frame; None when it misses the frame."""
    w, h = size_wh
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64)
    pts = transform_points(matrix, corners)
    if not np.isfinite(pts).all():
        return None
    height, width = frame_hw
    x0 = max(int(math.floor(pts[:, 0].min())) - margin, 0)
    y0 = max(int(math.floor(pts[:, 1].min())) - margin, 0)
    x1 = min(int(math.ceil(pts[:, 0].max())) + margin + 1, width)
    y1 = min(int(math.ceil(pts[:, 1].max())) + margin + 1, height)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return x0, y0, x1, y1


def warp_affine(image: torch.Tensor, matrix: torch.Tensor, size_hw: tuple[int, int], fill: float | None,
                origin: tuple[int, int] = (0, 0), out_origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """kornia's `warp_affine(mode="bilinear", align_corners=True)` for `image` `[C, h, w]` float.

    `matrix` maps source pixels to output pixels. `origin` is where `image` sits in the full source and
    `out_origin` where the `size_hw` output sits in the full output, so cut-out regions warp exactly as whole
    frames would, as long as the source region holds every sample's neighbours.
    `fill` is the colour outside the source (None: zeros, kornia's "zeros" padding).
    """
    out_h, out_w = size_hw
    inverse = invert_affine(matrix.to(torch.float64))
    xs = (torch.arange(out_w, dtype=torch.float64) + out_origin[0])[None, :]
    ys = (torch.arange(out_h, dtype=torch.float64) + out_origin[1])[:, None]
    src_x = (inverse[0, 0] * xs + inverse[0, 2] - origin[0]) + inverse[0, 1] * ys
    src_y = (inverse[1, 0] * xs + inverse[1, 2] - origin[1]) + inverse[1, 1] * ys
    _, h, w = image.shape
    # align_corners=True puts -1/+1 on the first/last pixel centre; a 1-pixel source needs a 2-pixel pad.
    if h < 2 or w < 2:
        pad_w, pad_h = int(w < 2), int(h < 2)
        image = F.pad(image[None], (0, pad_w, 0, pad_h))[0]
        if fill is not None:
            image = image.clone()
            image[:, h:, :] = fill
            image[:, :, w:] = fill
        h, w = image.shape[1:]
    grid = torch.stack([src_x * (2.0 / (w - 1)) - 1.0, src_y * (2.0 / (h - 1)) - 1.0], dim=-1)
    grid = grid.to(torch.float32)[None]
    if fill is None:
        return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    # Sampling (image - fill) with zero padding and adding fill back equals kornia's separate warp of a
    # ones-mask (inside weight w, outside 1 - w), with one grid_sample instead of two.
    warped = F.grid_sample(image[None] - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return warped[0] + fill


@lru_cache(maxsize=32)
def _lanczos4_matrix(src: int, dst: int) -> torch.Tensor:
    """`[dst, src]` float64 matrix of cv2.resize's Lanczos4 taps as 11-bit integers (2048 = 1).

    OpenCV computes each output's 8 weights in float32 (normalised to sum 1), rounds them to 11-bit fixed
    point and replicates edge pixels; folding that into a matrix keeps every product an exact integer.
    """
    scale = 1.0 / (dst / src)
    fx = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    sx = np.floor(fx).astype(np.int64)
    fx = (fx - sx.astype(np.float32)).astype(np.float32)
    s45 = 0.70710678118654752440084436210485
    cs = np.array([[1, 0], [-s45, -s45], [0, 1], [s45, -s45], [-1, 0], [s45, s45], [0, -1], [-s45, s45]])
    weights = np.zeros((dst, 8), np.float32)
    for i, x in enumerate(fx.astype(np.float64)):
        if x < np.finfo(np.float32).eps:
            weights[i, 3] = 1.0
            continue
        y0 = -(x + 3) * math.pi * 0.25
        s0, c0 = math.sin(y0), math.cos(y0)
        y = -(x + 3 - np.arange(8)) * math.pi * 0.25
        coeffs = ((cs[:, 0] * s0 + cs[:, 1] * c0) / (y * y)).astype(np.float32)
        total = np.float32(0)
        for value in coeffs:  # OpenCV sums in float, left to right
            total = np.float32(total + value)
        weights[i] = coeffs * np.float32(np.float32(1) / total)
    fixed = np.rint(weights * np.float32(2048)).astype(np.float64)
    index = np.clip(sx[:, None] - 3 + np.arange(8), 0, src - 1)
    matrix = np.zeros((dst, src), np.float64)
    np.add.at(matrix, (np.repeat(np.arange(dst), 8), index.reshape(-1)), fixed.reshape(-1))
    return torch.from_numpy(matrix)


def resize_lanczos4_uint8(image: torch.Tensor | np.ndarray, size_hw: tuple[int, int]) -> torch.Tensor:
    """cv2.resize(INTER_LANCZOS4) for uint8 `[H, W]` or `[H, W, C]`: the same 11-bit fixed-point taps and
    rounding, so the reference's mask upscale and crop resize come out bit for bit."""
    src = torch.as_tensor(image)
    if src.dtype != torch.uint8:
        raise ValueError(f"expected uint8 pixels, got {src.dtype}")
    squeeze = src.ndim == 2
    if squeeze:
        src = src[..., None]
    out_h, out_w = size_hw
    in_h, in_w = src.shape[:2]
    # float64 holds these integer sums exactly (< 2^53), and BLAS does them fast.
    pixels = src.permute(2, 0, 1).to(torch.float64)  # [C, H, W]
    rows = pixels @ _lanczos4_matrix(in_w, out_w).T  # [C, H, out_w]
    total = _lanczos4_matrix(in_h, out_h) @ rows  # [C, out_h, out_w]
    out = torch.floor((total + (1 << 21)) / (1 << 22)).clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
    return out[..., 0].contiguous() if squeeze else out.contiguous()


def erode(mask: torch.Tensor, size: int) -> torch.Tensor:
    """cv2.erode of a `[h, w]` mask with a `size`x`size` box (anchor at size // 2, border never erodes);
    size 0 means OpenCV's default 3x3 box, as with the reference's `np.ones((0, 0))` kernel."""
    if size <= 0:
        size = 3
    before, after = size // 2, size - 1 - size // 2
    x = F.pad(mask[None, None], (before, after, 0, 0), value=float("inf"))
    x = -F.max_pool2d(-x, (1, size), stride=1)
    x = F.pad(x, (0, 0, before, after), value=float("inf"))
    x = -F.max_pool2d(-x, (size, 1), stride=1)
    return x[0, 0]


def gaussian_blur(mask: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """kornia.filters.gaussian_blur2d of a `[h, w]` mask: separable, reflect borders (OpenCV's REFLECT_101)."""
    if size <= 1:
        return mask
    x = torch.arange(size, dtype=mask.dtype) - size // 2
    kernel = torch.exp(-(x ** 2) / (2.0 * sigma ** 2))
    kernel = kernel / kernel.sum()
    pad = size // 2
    h, w = mask.shape
    image = mask[None, None]
    if w > pad:
        image = F.pad(image, (pad, pad, 0, 0), mode="reflect")
    else:
        image = F.pad(image, (pad, pad, 0, 0), mode="replicate")
    image = F.conv2d(image, kernel.view(1, 1, 1, size))
    if h > pad:
        image = F.pad(image, (0, 0, pad, pad), mode="reflect")
    else:
        image = F.pad(image, (0, 0, pad, pad), mode="replicate")
    image = F.conv2d(image, kernel.view(1, 1, size, 1))
    return image[0, 0]
