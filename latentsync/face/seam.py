"""The seam around the regenerated lower face: how visible it is, and a colour match that hides it.

The UNet regenerates the crop where the mouth mask is 0 and `paste.blend_mouth` keeps the original where it is
1. The VAE's round trip tints the regenerated pixels a little (a few grey levels of colour and contrast), so the
lower face shows as a patch whose colour steps at the mask border.

- `seam_difference` measures that step: in 0-255 RGB units, how far the colour step across the border of a
  blended crop is from the step the original crop has at the same place (0 = no seam added).
- `match_colour` corrects it: an affine per-channel colour transfer (gain and offset per crop) fitted on a ring
  just inside the regenerated region, where the generated and the original crop show the same positions,
  then applied to the whole regenerated region.

Both take crops in the layout `blend_mouth` takes, `[N, 3, R, R]` float in [-1, 1], and the mask `[R, R]`
(1 = keep, 0 = regenerate; `mask.pixel_mask`). Border geometry (distance bands and the tiles the border is cut
into) is computed once per mask and width with SciPy's Euclidean distance transform.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..core.options import Option

COLOUR_MATCH = Option("colour_match", False,
                      "Match the regenerated lower face's colours to the original at the mask border (hides a patch).")
GAIN_RANGE = (0.75, 4 / 3)  # per-channel contrast correction allowed: the VAE's shifts are far smaller
TILES = 16  # the border is cut into the cells of a TILES x TILES grid over the crop
_UNITS = 127.5  # [-1, 1] -> 0-255


@dataclass(frozen=True)
class Border:
    """The bands on both sides of a mask's border, as flat pixel indices into an `R x R` crop.

    `inside`: regenerated pixels (mask < 0.5) within `width` px of a kept one; `outside`: kept pixels (mask >=
    0.5) within `width` px of a regenerated one; both only in the `tiles` grid cells that hold pixels of both
    bands, numbered by `inside_tile` / `outside_tile`. `ring`: every inside-band pixel, whatever its cell.
    """
    ring: torch.Tensor
    inside: torch.Tensor
    outside: torch.Tensor
    inside_tile: torch.Tensor
    outside_tile: torch.Tensor
    tiles: int


def default_width(resolution: int) -> int:
    """The band width used when none is given: 4 px at 256, 8 px at 512 (a sixty-fourth of the crop)."""
    return max(1, resolution // 64)


def check_crops(crops: torch.Tensor, mask: torch.Tensor, name: str) -> torch.Tensor:
    """`crops` as float32 `[N, 3, R, R]` when it fits the `[R, R]` mask, else a `ValueError` naming it."""
    crops = torch.as_tensor(crops)
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        raise ValueError(f"expected a square mask [R, R], got {tuple(mask.shape)}")
    if crops.ndim != 4 or crops.shape[1] != 3 or tuple(crops.shape[2:]) != tuple(mask.shape):
        size = mask.shape[0]
        raise ValueError(f"expected {name} crops [N, 3, {size}, {size}] in [-1, 1], got {tuple(crops.shape)}")
    return crops.to(torch.float32)


def _check_pair(first: torch.Tensor, second: torch.Tensor, mask: torch.Tensor,
                names: tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mask = torch.as_tensor(mask).to(torch.float32)
    first, second = check_crops(first, mask, names[0]), check_crops(second, mask, names[1])
    if first.shape != second.shape:
        raise ValueError(f"{names[0]} crops {tuple(first.shape)} and {names[1]} crops {tuple(second.shape)} differ")
    return first, second, mask


def _check_width(width: int | None, resolution: int, name: str) -> int:
    width = default_width(resolution) if width is None else width
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or not 1 <= width <= resolution // 4:
        raise ValueError(f"{name} must be a whole number of pixels from 1 to {resolution // 4}, got {width!r}")
    return int(width)


def _indices(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))


@lru_cache(maxsize=16)
def _border(mask_bytes: bytes, resolution: int, width: int) -> Border:
    from scipy.ndimage import distance_transform_edt  # here: importing the pack stays cheap

    regenerate = np.frombuffer(mask_bytes, dtype=np.float32).reshape(resolution, resolution) < 0.5
    to_kept = distance_transform_edt(regenerate)  # 0 on kept pixels; the crop's edge is no border
    to_regenerated = distance_transform_edt(~regenerate)
    inside = np.flatnonzero(regenerate & (to_kept <= width))
    outside = np.flatnonzero(~regenerate & (to_regenerated <= width))
    cell = max(1, resolution // TILES)
    columns = -(-resolution // cell)

    def cells(flat: np.ndarray) -> np.ndarray:
        return (flat // resolution) // cell * columns + (flat % resolution) // cell

    inside_cells, outside_cells = cells(inside), cells(outside)
    both = np.intersect1d(inside_cells, outside_cells)  # sorted: searchsorted numbers the cells 0..len-1
    keep_in, keep_out = np.isin(inside_cells, both), np.isin(outside_cells, both)
    return Border(_indices(inside), _indices(inside[keep_in]), _indices(outside[keep_out]),
                  _indices(np.searchsorted(both, inside_cells[keep_in])),
                  _indices(np.searchsorted(both, outside_cells[keep_out])), len(both))


def border_of(mask: torch.Tensor, width: int) -> Border:
    """The `Border` of an `[R, R]` mask at band `width` px (cached per mask and width)."""
    array = np.ascontiguousarray(torch.as_tensor(mask).detach().cpu().to(torch.float32).numpy())
    return _border(array.tobytes(), array.shape[0], int(width))


def _tile_means(crops: torch.Tensor, pixels: torch.Tensor, tile: torch.Tensor, tiles: int) -> torch.Tensor:
    """Mean colour of the given pixels per tile: `[N, 3, R, R]` -> `[N, 3, tiles]`."""
    values = crops.flatten(2)[:, :, pixels]
    sums = torch.zeros(*values.shape[:2], tiles, dtype=values.dtype).index_add_(2, tile, values)
    counts = torch.bincount(tile, minlength=tiles).to(values.dtype)
    return sums / counts


def seam_difference(blended: torch.Tensor, original: torch.Tensor, mask: torch.Tensor,
                    width: int | None = None) -> float:
    """How much colour step the regeneration added at the mask border, in 0-255 RGB grey levels.

    The border is cut into the cells of a 16 x 16 grid over the crop. In each cell holding both bands, the
    step is the mean colour of the band just inside the regenerated region (mask < 0.5, within `width` px
    of a kept pixel) minus that of the band just outside (mask >= 0.5, within `width` px of a regenerated
    one). The result is |step of `blended` - step of `original`| averaged over cells, channels and frames:
    the original's own step (its shading, the nose's shadow) cancels, so identical crops give 0 and a colour
    shift of the regenerated region gives about its size. `width` defaults to R / 64 (4 px at 256).

    `blended` and `original`: `[N, 3, R, R]` in [-1, 1] (`blend_mouth`'s output and `pixel_values()`);
    `mask`: `[R, R]`, 1 = keep.
    """
    blended, original, mask = _check_pair(blended, original, mask, ("blended", "original"))
    border = border_of(mask, _check_width(width, mask.shape[0], "the seam band width"))
    if border.tiles == 0 or len(blended) == 0:
        return 0.0
    steps = [_tile_means(crops, border.inside, border.inside_tile, border.tiles)
             - _tile_means(crops, border.outside, border.outside_tile, border.tiles) for crops in (blended, original)]
    return float((steps[0] - steps[1]).abs().mean() * _UNITS)


def colour_transfer(generated: torch.Tensor, original: torch.Tensor,
                    ring: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per crop and channel, the gain and offset (`[N, 3, 1, 1]` each) that give the generated pixels at the
    flat indices `ring` the original's mean and standard deviation there (gain clamped to `GAIN_RANGE`)."""
    source, target = generated.flatten(2)[:, :, ring], original.flatten(2)[:, :, ring]
    source_std, source_mean = torch.std_mean(source, dim=2, correction=0)
    target_std, target_mean = torch.std_mean(target, dim=2, correction=0)
    gain = (target_std / source_std.clamp_min(1e-6)).clamp(*GAIN_RANGE)
    offset = target_mean - gain * source_mean
    return gain[..., None, None], offset[..., None, None]


def match_colour(generated: torch.Tensor, original: torch.Tensor, mask: torch.Tensor,
                 ring: int | None = None) -> torch.Tensor:
    """Generated crops with the regenerated region's colours matched to the original crop at its border.

    Per crop and channel, the gain and offset that give the generated pixels of the ring just inside the
    regenerated region (mask < 0.5, within `ring` px of a kept pixel; default R / 32, 8 px at 256) the
    original's mean and standard deviation there. The ring is the one place where both crops show the same
    positions with the same content (cheeks, chin, below the nose), while the mouth itself differs; the gain
    is clamped to 0.75-1.33 so a ring whose content did change (an opened jaw) cannot distort the colours.

    The correction is applied uniformly to every pixel with mask < 1, not faded with the distance from the
    border: the VAE's tint is a low-frequency shift of the whole decoded crop, and a fade would leave the
    mouth tinted and draw a new gradient, a seam of its own, inside the region. Pixels with mask == 1 are
    returned untouched (`blend_mouth` replaces them by the original anyway). Deterministic; identical crops
    come back unchanged up to float rounding.

    `generated` and `original`: `[N, 3, R, R]` in [-1, 1]; `mask`: `[R, R]`, 1 = keep. Returns float32
    `[N, 3, R, R]` in [-1, 1].
    """
    generated, original, mask = _check_pair(generated, original, mask, ("generated", "original"))
    resolution = mask.shape[0]
    border = border_of(mask, _check_width(ring if ring is not None else max(1, resolution // 32), resolution,
                                          "the colour-match ring width"))
    if len(border.ring) == 0 or len(generated) == 0:
        return generated.clone()
    gain, offset = colour_transfer(generated, original, border.ring)
    corrected = (generated * gain + offset).clamp(-1.0, 1.0)
    return torch.where(mask < 1, corrected, generated)
