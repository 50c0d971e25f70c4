"""Presets: named bundles of existing settings (`quality`, `fast`, `low-vram`); `sample/vram.py` estimates the
device memory a run with them needs.

A preset only chooses values a user could also choose one by one, and whatever the user sets explicitly wins
(`resolve`). It bundles sampler settings (`SETTINGS` names) and five run options:

- **dtype** of the UNet and the VAE: `auto` (the pipeline's: fp16 on CUDA, fp32 on the CPU) or `half` (fp16 on
  CUDA and MPS, bf16 on other accelerators, fp32 on the CPU, which has no fast half precision); `dtype_name`.
- **quantization** of the UNet's weights (`unet/quantize.py`, `unet/packed.py`): none, int8, int4, fp8 or a GGUF
  format. A preset may also name a GGUF format (`gguf`; low-vram: Q5_K): a `.gguf` of it beside the checkpoint
  (`*q5_k*.gguf`, as `python -m latentsync convert --to gguf-q5_k` writes) is then loaded instead of quantizing
  the checkpoint at load (`preset_unet_file`), unless the user chose the quantization.
- **vae_batch**: images per VAE call. The sampler encodes `2 x window` crops per window (masked and
  reference) and decodes `window`; 8 is the pipeline's default; 16 is what the reference sends per call
  (it encodes the 16 masked and the 16 reference crops in two calls and decodes 16 at once); 1 is diffusers'
  "slicing" (one image at a time: the least memory).
- **vae_tiling**: diffusers' `AutoencoderKL.enable_tiling()`, which works on crops larger than the VAE
  config's `sample_size` (256 px for sd-vae-ft-mse) in 256 px tiles blended over 64 px: it changes nothing for
  1.5's 256 px crops and bounds the VAE's activations for 1.6's 512 px crops (with faint tile blending).
- **offload**: whisper goes back to the CPU once the features are made, and the VAE's weights stay on the CPU
  and visit the device only for each encode and decode (`sample/vae.py`). In ComfyUI this is the job of
  ComfyUI's own model management, so the sampler node ignores vae_batch, vae_tiling and offload.

Attention: the UNet already calls `F.scaled_dot_product_attention` everywhere (`unet/blocks.py`), so every
preset gets PyTorch's fused (flash / memory-efficient) kernels where the device has them; there is no switch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import torch

from ..core.options import Option
from ..core.precision import DTYPE
from ..unet.loading import QUANTIZATION
from .settings import SETTINGS, one_spelling
from .vae import OFFLOAD, VAE_BATCH, VAE_TILING

# The run's options a preset bundles, declared where they belong; a preset's dtype may also be "half".
RUN_OPTION = {option.name: option for option in (DTYPE, QUANTIZATION, VAE_BATCH, VAE_TILING, OFFLOAD)}
RUN_OPTIONS = tuple(RUN_OPTION)
PRESET_DTYPES = ("auto", "half")


@dataclass(frozen=True)
class Preset:
    name: str
    help: str  # one line: the CLI's and the node's
    settings: Mapping[str, Any] = field(default_factory=dict)  # sampler settings by their one name
    dtype: str = DTYPE.default  # one of PRESET_DTYPES
    quantization: str = QUANTIZATION.default
    vae_batch: int = VAE_BATCH.default
    vae_tiling: bool = VAE_TILING.default
    offload: bool = OFFLOAD.default
    gguf: str | None = None  # a GGUF format whose file beside the checkpoint this preset prefers

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))

    def run_options(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in RUN_OPTIONS}


PRESETS: dict[str, Preset] = {preset.name: preset for preset in (
    Preset("quality", "The reference: DDIM 20 steps, fp16 on CUDA, the VAE 8 images a call (the defaults)."),
    Preset("fast", "DPM-Solver++ 10 steps, DeepCache 3, half precision, the VAE 16 images a call (a window).",
           settings={"scheduler": "dpmpp_2m", "steps": 10, "deepcache_interval": 3}, dtype="half", vae_batch=16),
    Preset("low-vram", "int8 UNet (or a *q5_k*.gguf beside it); the VAE one image a call, tiled; whisper and "
                       "the VAE off the GPU between stages.", quantization="int8", vae_batch=1, vae_tiling=True,
           offload=True, gguf="Q5_K"),
)}


PRESET = Option("preset", "custom", "A bundle of settings (see the help page); custom: each value as set.",
                choices=("custom", *PRESETS))

# The sampler settings some preset bundles: the sampler node's preset replaces these widgets' values.
BUNDLED = tuple(sorted({name for preset in PRESETS.values() for name in preset.settings}))


def bundled_settings(preset: str) -> dict[str, Any]:
    """The `BUNDLED` settings under `preset` (those it leaves alone at the reference's defaults)."""
    chosen = resolve(preset, {})
    return {name: chosen[name] for name in BUNDLED}


def resolve(preset: str | None, explicit: Mapping[str, Any]) -> dict[str, Any]:
    """Every sampler setting and run option of a run: the defaults (None or custom is `quality`), the
    preset's values over them, and the user's `explicit` values (settings by their one name or an earlier
    spelling, or `RUN_OPTIONS`) over those. Unknown presets or names raise `ValueError`."""
    name = PRESET.check(preset or PRESET.default)
    chosen = PRESETS["quality" if name == "custom" else name]
    explicit = one_spelling(explicit)
    known = {setting.name for setting in SETTINGS} | set(RUN_OPTIONS)
    unknown = sorted(name for name in explicit if name not in known)
    if unknown:
        raise ValueError(f"{', '.join(unknown)} is not a sampler setting or a run option ({', '.join(RUN_OPTIONS)})")
    return {**{setting.name: setting.default for setting in SETTINGS}, **chosen.settings, **chosen.run_options(),
            **explicit}


def preset_unet_file(checkpoint: Path, preset: str | None, quantization: str) -> tuple[Path, str]:
    """The UNet file and quantization a run uses: under a preset that names a GGUF format, with its own
    quantization (not one the user chose), a `*<format>*.gguf` beside `checkpoint` (already packed: loaded with
    quantization none); otherwise `checkpoint` and `quantization` as they are."""
    chosen = PRESETS.get(preset or "")
    if chosen is None or chosen.gguf is None or quantization != chosen.quantization or checkpoint.suffix == ".gguf":
        return checkpoint, quantization
    tag = chosen.gguf.lower()
    found = sorted(path for path in checkpoint.parent.glob("*.gguf") if tag in path.name.lower())
    return (found[0], "none") if found else (checkpoint, quantization)


def dtype_name(dtype: str, device: torch.device | str) -> str:
    """A preset's dtype as a name the pipeline resolves (`auto`, fp32, fp16, bf16); other names pass through."""
    if dtype != "half":
        return dtype
    kind = torch.device(device).type
    if kind == "cpu":
        return "fp32"
    return "fp16" if kind in ("cuda", "mps") else "bf16"
