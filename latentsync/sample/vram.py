"""The device memory a run will need, by part (`estimate_vram`), counted from the UNet's config and the run's
options (a preset's, `sample/presets.py`) before any weight is loaded; `format_estimate` makes it one log line."""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Mapping

import torch
from torch import nn

from ..audio.whisper import TINY, WhisperEncoder
from ..core.precision import DTYPES
from ..unet.config import resolve_unet_config
from ..unet.loading import QUANTIZATION
from ..unet.model import build_unet
from ..unet.packed import KINDS as PACKED_KINDS, stored_bytes
from .vae import OFFLOAD, VAE_BATCH, VAE_TILING, vae_config


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
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be a torch dtype or one of {', '.join(DTYPES)}, got {dtype!r}")
        dtype = DTYPES[dtype]
    return dtype.itemsize


def unet_weight_bytes(config, dtype: torch.dtype | str, quantization: str = QUANTIZATION.default) -> int:
    """Bytes of the UNet's weights once loaded (`unet/loading.py`), counted on a skeleton built on the meta
    device: every state-dict tensor in `dtype`; int8 stores Linear and Conv2d weights in one byte each with
    per-output-channel scales (`unet/quantize.py`); int4 packs Linear weights in half a byte; fp8 and the GGUF
    formats store Linear and Conv2d weights as `unet/packed.py` does."""
    QUANTIZATION.check(quantization)
    size = _itemsize(dtype)
    total = 0
    for numel, rows, layer, element_size, name in _weight_table(resolve_unet_config(config)):
        if quantization == "int8" and layer == "linear":
            total += numel + rows * _INT8_LINEAR_ROW_BYTES
        elif quantization == "int8" and layer == "conv":
            total += numel + rows * size
        elif quantization == "int4" and layer == "linear":
            total += numel // 2 + math.ceil(numel / _INT4_GROUP) * 2 * 2
        elif quantization in PACKED_KINDS and layer is not None:
            total += stored_bytes(numel, rows, quantization, name)
        else:  # the loader casts what the file holds; a buffer made at build time keeps its own dtype
            total += numel * (element_size or size)
    return total


@lru_cache(maxsize=8)
def _weight_table(config) -> tuple[tuple[int, int, str | None, int | None, str], ...]:
    """(elements, output rows, "linear"/"conv"/None, own element size or None for the loaded dtype, name) of every
    parameter and buffer of the UNet built on the meta device (a second or so for the full size: kept)."""
    unet = build_unet(config, device="meta")
    layers = {}
    for module in unet.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            layers[id(module.weight)] = "linear" if isinstance(module, nn.Linear) else "conv"
    persistent = {id(tensor) for tensor in unet.state_dict(keep_vars=True).values()}
    return tuple((tensor.numel(), tensor.shape[0] if tensor.ndim else 1, layers.get(id(tensor)),
                  None if id(tensor) in persistent else tensor.element_size(), name)
                 for name, tensor in [*unet.named_parameters(), *unet.named_buffers()])


def unet_activation_bytes(config, resolution: int, dtype: torch.dtype | str, window: int = 16,
                          guidance: float = 1.5) -> int:
    """The peak of the UNet's activations for one window, counted analytically (see `estimate_vram`)."""
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


def vae_activation_bytes(resolution: int, dtype: torch.dtype | str, window: int = 16,
                         vae_batch: int = VAE_BATCH.default, vae_tiling: bool = VAE_TILING.default) -> int:
    """The peak of one VAE call's activations (see `estimate_vram`), with the window's pixels it encodes."""
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
    with torch.device("meta"):
        encoder = WhisperEncoder(TINY)
    return sum(t.numel() for t in [*encoder.parameters(), *encoder.buffers()]) * WHISPER_DTYPE.itemsize


def estimate_vram(config, resolution: int, *, dtype: torch.dtype | str, quantization: str, window: int = 16,
                  guidance: float = 1.5, vae_batch: int = VAE_BATCH.default,
                  vae_tiling: bool = VAE_TILING.default, whisper: bool = True,
                  offload: bool = OFFLOAD.default) -> dict[str, int]:
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
