"""Presets: named bundles of existing settings (`quality`, `fast`, `low-vram`), and the VRAM a run will need.

A preset only chooses values a user could also choose one by one, and whatever the user sets explicitly wins
(`resolve`). It bundles sampler settings (`SETTINGS` names) and five run options:

- **dtype** of the UNet and the VAE: `auto` (the pipeline's: fp16 on CUDA, fp32 on the CPU) or `half` (fp16 on
  CUDA and MPS, bf16 on other accelerators, fp32 on the CPU, which has no fast half precision); `dtype_name`.
- **quantization** of the UNet's weights (`unet/quantize.py`): none, int8 or int4.
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

import math
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Mapping

import torch

from .settings import SETTINGS, one_spelling

RUN_OPTIONS = ("dtype", "quantization", "vae_batch", "vae_tiling", "offload")
PRESET_DTYPES = ("auto", "half")
_DTYPE_NAMES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Preset:
    name: str
    help: str  # one line: the CLI's and the node's
    settings: Mapping[str, Any] = field(default_factory=dict)  # sampler settings by their one name
    dtype: str = "auto"  # one of PRESET_DTYPES
    quantization: str = "none"
    vae_batch: int = 8
    vae_tiling: bool = False
    offload: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))

    def run_options(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in RUN_OPTIONS}


PRESETS: dict[str, Preset] = {preset.name: preset for preset in (
    Preset("quality", "The reference: DDIM 20 steps, fp16 on CUDA, the VAE 8 images a call (the defaults)."),
    Preset("fast", "DPM-Solver++ 10 steps, DeepCache 3, half precision, the VAE 16 images a call (a window).",
           settings={"scheduler": "dpmpp_2m", "steps": 10, "deepcache_interval": 3}, dtype="half", vae_batch=16),
    Preset("low-vram", "int8 UNet weights; the VAE one image a call, tiled; whisper and the VAE off the GPU "
                       "between stages.", quantization="int8", vae_batch=1, vae_tiling=True, offload=True),
)}


# The sampler settings some preset bundles: the sampler node's preset replaces these widgets' values.
BUNDLED = tuple(sorted({name for preset in PRESETS.values() for name in preset.settings}))


def bundled_settings(preset: str) -> dict[str, Any]:
    """The `BUNDLED` settings under `preset` (those it leaves alone at the reference's defaults)."""
    chosen = resolve(preset, {})
    return {name: chosen[name] for name in BUNDLED}


def resolve(preset: str | None, explicit: Mapping[str, Any]) -> dict[str, Any]:
    """Every sampler setting and run option of a run: the defaults (None is `quality`, today's behaviour), the
    preset's values over them, and the user's `explicit` values (settings by their one name or an earlier
    spelling, or `RUN_OPTIONS`) over those. Unknown presets or names raise `ValueError`."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    chosen = PRESETS[preset or "quality"]
    explicit = one_spelling(explicit)
    known = {setting.name for setting in SETTINGS} | set(RUN_OPTIONS)
    unknown = sorted(name for name in explicit if name not in known)
    if unknown:
        raise ValueError(f"{', '.join(unknown)} is not a sampler setting or a run option ({', '.join(RUN_OPTIONS)})")
    return {**{setting.name: setting.default for setting in SETTINGS}, **chosen.settings, **chosen.run_options(),
            **explicit}


def dtype_name(dtype: str, device: torch.device | str) -> str:
    """A preset's dtype as a name the pipeline resolves (`auto`, fp32, fp16, bf16); other names pass through."""
    if dtype != "half":
        return dtype
    kind = torch.device(device).type
    if kind == "cpu":
        return "fp32"
    return "fp16" if kind in ("cuda", "mps") else "bf16"


# --- the VRAM estimate --------------------------------------------------------------------------------------
# What each GEGLU transformer layer holds at its peak, in feature maps of the level's width: the block's input
# (kept for the residual), the tokens, their norm, the 8x-wide GEGLU projection, gelu(gate) and the product.
_TRANSFORMER_PEAK = 1 + 1 + 1 + 8 + 4 + 4
# A resnet's peak in maps of its input width: the input, its GroupNorm and its SiLU (and the first conv's output).
_RESNET_PEAK = 3
# torchao's Int8Tensor: int8 weights plus, per output row, a float32 scale and an int8 zero point.
_INT8_LINEAR_ROW_BYTES = 4 + 1
_INT4_GROUP = 128  # torchao int4: two bf16 numbers (scale, zero) per group of 128 weights
_CHUNK_ROWS = 50  # whisper rows of one frame's audio chunk
WHISPER_DTYPE = torch.float32  # the pipeline keeps whisper in float32


def _itemsize(dtype: torch.dtype | str) -> int:
    if isinstance(dtype, str):
        if dtype not in _DTYPE_NAMES:
            raise ValueError(f"dtype must be a torch dtype or one of {', '.join(_DTYPE_NAMES)}, got {dtype!r}")
        dtype = _DTYPE_NAMES[dtype]
    return dtype.itemsize


def unet_weight_bytes(config, dtype: torch.dtype | str, quantization: str = "none") -> int:
    """Bytes of the UNet's weights once loaded (`unet/loading.py`), counted on a skeleton built on the meta
    device: every state-dict tensor in `dtype`; int8 stores Linear and Conv2d weights in one byte each with
    per-output-channel scales (`unet/quantize.py`); int4 packs Linear weights in half a byte."""
    from ..unet.config import resolve_unet_config

    if quantization not in ("none", "int8", "int4"):
        raise ValueError(f"unknown quantization {quantization!r}; choose none, int8 or int4")
    size = _itemsize(dtype)
    total = 0
    for numel, rows, layer, element_size in _weight_table(resolve_unet_config(config)):
        if quantization == "int8" and layer == "linear":
            total += numel + rows * _INT8_LINEAR_ROW_BYTES
        elif quantization == "int8" and layer == "conv":
            total += numel + rows * size
        elif quantization == "int4" and layer == "linear":
            total += numel // 2 + math.ceil(numel / _INT4_GROUP) * 2 * 2
        else:  # the loader casts what the file holds; a buffer made at build time keeps its own dtype
            total += numel * (element_size or size)
    return total


@lru_cache(maxsize=8)
def _weight_table(config) -> tuple[tuple[int, int, str | None, int | None], ...]:
    """(elements, output rows, "linear"/"conv"/None, own element size or None for the loaded dtype) of every
    parameter and buffer of the UNet built on the meta device (a second or so for the full size: kept)."""
    from torch import nn

    from ..unet.model import build_unet

    unet = build_unet(config, device="meta")
    layers = {}
    for module in unet.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            layers[id(module.weight)] = "linear" if isinstance(module, nn.Linear) else "conv"
    persistent = {id(tensor) for tensor in unet.state_dict(keep_vars=True).values()}
    return tuple((tensor.numel(), tensor.shape[0] if tensor.ndim else 1, layers.get(id(tensor)),
                  None if id(tensor) in persistent else tensor.element_size())
                 for tensor in [*unet.parameters(), *unet.buffers()])


def unet_activation_bytes(config, resolution: int, dtype: torch.dtype | str, window: int = 16,
                          guidance: float = 1.5) -> int:
    """The peak of the UNet's activations for one window, counted analytically (see `estimate_vram`)."""
    from ..unet.config import resolve_unet_config

    unet = resolve_unet_config(config)
    batch = (2 if guidance > 1 else 1) * window  # frames in the UNet's batch
    levels = len(unet.block_out_channels)
    sides = [math.ceil(resolution / 8 / 2 ** level) for level in range(levels + 1)]
    maps = [sides[level] ** 2 for level in range(levels + 1)]  # one channel of one frame at each level

    def working(level: int, in_channels: int) -> int:
        channels = unet.block_out_channels[level]
        up = levels - 1 - level  # the up block at this level's resolution
        attention = ("CrossAttn" in unet.down_block_types[level] + unet.up_block_types[up]
                     or unet.down_block_has_motion(level) or unet.up_block_has_motion(up))
        peak = max(_RESNET_PEAK * in_channels + channels, _TRANSFORMER_PEAK * channels if attention else 0)
        return peak * maps[level]

    held = unet.block_out_channels[0] * maps[0]  # conv_in's output, the first skip connection
    peak = 0
    for level, channels in enumerate(unet.block_out_channels):
        # The skip connections of the levels above and this one's are all held while this level runs, going
        # down and again coming up; coming up, a resnet's input is its own and a skip's width concatenated.
        own = unet.layers_per_block * channels * maps[level]
        if level < levels - 1:
            own += channels * maps[level + 1]
        up_input = channels + (unet.block_out_channels[level + 1] if level < levels - 1 else channels)
        peak = max(peak, held + own + working(level, up_input))
        held += own
    mid = unet.block_out_channels[-1]
    peak = max(peak, held + _TRANSFORMER_PEAK * mid * maps[levels - 1])
    # Held throughout: the input (13 channels), the output (4) and each frame's audio chunk (50 x 384).
    peak += (unet.in_channels + unet.out_channels) * maps[0] + _CHUNK_ROWS * unet.cross_attention_dim
    return peak * batch * _itemsize(dtype)


# sd-vae-ft-mse: encoder and decoder (83.65 M parameters, checked against diffusers' model in the tests).
VAE_PARAMETERS = 83_653_863


def vae_activation_bytes(resolution: int, dtype: torch.dtype | str, window: int = 16, vae_batch: int = 8,
                         vae_tiling: bool = False) -> int:
    """The peak of one VAE call's activations (see `estimate_vram`), with the window's pixels it encodes."""
    from .vae import vae_config

    config = vae_config()
    side = resolution
    if vae_tiling and resolution > config["sample_size"]:
        side = config["sample_size"]  # diffusers runs the whole batch one tile at a time
    # The decoder's top level holds the most: the second level's width upsampled to the full size, its
    # GroupNorm and its SiLU (3 maps of 256 channels); the encoder's top level holds less (128 channels).
    per_image = _RESNET_PEAK * config["block_out_channels"][1] * side * side
    encode = min(vae_batch, 2 * window)
    decode = min(vae_batch, window)
    pixels = 2 * window * 3 * resolution * resolution * torch.float32.itemsize  # the crops sent in float32
    return max(encode, decode) * per_image * _itemsize(dtype) + pixels


def whisper_weight_bytes() -> int:
    """whisper tiny's encoder in float32, counted on a meta-device skeleton."""
    from ..audio.whisper import TINY, WhisperEncoder

    with torch.device("meta"):
        encoder = WhisperEncoder(TINY)
    return sum(t.numel() for t in [*encoder.parameters(), *encoder.buffers()]) * WHISPER_DTYPE.itemsize


def estimate_vram(config, resolution: int, *, dtype: torch.dtype | str, quantization: str, window: int = 16,
                  guidance: float = 1.5, vae_batch: int = 8, vae_tiling: bool = False, whisper: bool = True,
                  offload: bool = False) -> dict[str, int]:
    """Bytes of device memory a run needs, by part, and `total`, the peak of what is resident together.

    Assumptions, to be checked against measured peaks (bench/gpu.sh; `torch.cuda.max_memory_allocated`, which
    like this leaves out the CUDA context and the caching allocator's spare blocks):
    - weights as loaded: the UNet by `unet_weight_bytes`, the VAE in `dtype`, whisper tiny in float32;
    - the UNet's activations for one window of `window` frames, doubled by guidance > 1, under inference mode
      (nothing kept for a backward pass): at each level the skip connections held so far plus the level's
      largest transient, a GEGLU transformer layer (19 feature maps of the level's width) or a resnet (three of
      its input), plus the window's input, output and audio chunks; attention through fused SDPA kernels, so
      no tokens x tokens matrix is counted (PyTorch's math fallback would add one per head and frame);
    - the VAE's activations for one call of `vae_batch` images (at most the window's), three maps of 256
      channels per image at the crop's size (at the tile's size with tiling), plus the window's crops;
    - whisper's activations are not counted (a few tens of MB), nor the scheduler's latents (a few MB).
    On the CPU the UNet part came within 5 % of the peak of live tensors of the tiny UNet (tests/test_presets.py).
    Without `offload` everything stays resident; with it whisper has left before the UNet runs and the VAE
    visits only between UNet calls, so the peak is the UNet with the larger of its activations and the VAE's.
    """
    parts = {
        "unet_weights": unet_weight_bytes(config, dtype, quantization),
        "unet_activations": unet_activation_bytes(config, resolution, dtype, window, guidance),
        "vae_weights": VAE_PARAMETERS * _itemsize(dtype),
        "vae_activations": vae_activation_bytes(resolution, dtype, window, vae_batch, vae_tiling),
        "whisper_weights": whisper_weight_bytes() if whisper else 0,
    }
    if offload:
        total = parts["unet_weights"] + max(parts["unet_activations"],
                                            parts["vae_weights"] + parts["vae_activations"])
    else:
        total = (parts["unet_weights"] + parts["vae_weights"] + parts["whisper_weights"]
                 + max(parts["unet_activations"], parts["vae_activations"]))
    return {**parts, "total": total}


def format_estimate(estimate: Mapping[str, int]) -> str:
    """One line for a log: 'about 4.1 GiB: UNet 2.4 GiB weights + 0.5 GiB per window, VAE ...'."""
    def gib(value: int) -> str:
        return f"{value / 2**30:.1f} GiB" if value >= 0.05 * 2**30 else f"{value / 2**20:.0f} MiB"

    whisper = f", whisper {gib(estimate['whisper_weights'])}" if estimate.get("whisper_weights") else ""
    return (f"about {gib(estimate['total'])} of device memory: UNet {gib(estimate['unet_weights'])} weights + "
            f"{gib(estimate['unet_activations'])} per window, VAE {gib(estimate['vae_weights'])} weights + "
            f"{gib(estimate['vae_activations'])} per call{whisper}")
