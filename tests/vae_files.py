"""An SD VAE file in the original latent-diffusion (LDM) layout, as `vae-ft-mse-840000-ema-pruned.safetensors`
and ComfyUI's Load VAE have it, with random weights.

The key layout is written out here from the architecture (not derived from the product's converter), so a
loader test checks the converter against an independent description of the file.
"""
from __future__ import annotations

from pathlib import Path

import torch

WIDTHS = (128, 256, 512, 512)
LATENT_CHANNELS = 4
LAYERS = 2  # resnets per encoder level; the decoder has one more


def _norm(prefix: str, channels: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,)}


def _conv(prefix: str, cin: int, cout: int, kernel: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (cout, cin, kernel, kernel), f"{prefix}.bias": (cout,)}


def _resnet(prefix: str, cin: int, cout: int) -> dict[str, tuple]:
    shapes = {**_norm(f"{prefix}.norm1", cin), **_conv(f"{prefix}.conv1", cin, cout, 3),
              **_norm(f"{prefix}.norm2", cout), **_conv(f"{prefix}.conv2", cout, cout, 3)}
    if cin != cout:
        shapes.update(_conv(f"{prefix}.nin_shortcut", cin, cout, 1))
    return shapes


def _mid(prefix: str, channels: int) -> dict[str, tuple]:
    shapes = {**_resnet(f"{prefix}.block_1", channels, channels), **_resnet(f"{prefix}.block_2", channels, channels),
              **_norm(f"{prefix}.attn_1.norm", channels)}
    for name in ("q", "k", "v", "proj_out"):
        shapes.update(_conv(f"{prefix}.attn_1.{name}", channels, channels, 1))
    return shapes


def ldm_vae_shapes() -> dict[str, tuple]:
    """Every tensor of the SD VAE in the LDM layout: name -> shape (248 tensors)."""
    shapes = _conv("encoder.conv_in", 3, WIDTHS[0], 3)
    cin = WIDTHS[0]
    for level, width in enumerate(WIDTHS):
        for j in range(LAYERS):
            shapes.update(_resnet(f"encoder.down.{level}.block.{j}", cin, width))
            cin = width
        if level < len(WIDTHS) - 1:
            shapes.update(_conv(f"encoder.down.{level}.downsample.conv", width, width, 3))
    shapes.update(_mid("encoder.mid", WIDTHS[-1]))
    shapes.update(_norm("encoder.norm_out", WIDTHS[-1]))
    shapes.update(_conv("encoder.conv_out", WIDTHS[-1], 2 * LATENT_CHANNELS, 3))
    shapes.update(_conv("quant_conv", 2 * LATENT_CHANNELS, 2 * LATENT_CHANNELS, 1))
    shapes.update(_conv("post_quant_conv", LATENT_CHANNELS, LATENT_CHANNELS, 1))
    shapes.update(_conv("decoder.conv_in", LATENT_CHANNELS, WIDTHS[-1], 3))
    shapes.update(_mid("decoder.mid", WIDTHS[-1]))
    cin = WIDTHS[-1]
    for level in reversed(range(len(WIDTHS))):  # LDM numbers decoder levels from the lowest resolution up
        width = WIDTHS[level]
        for j in range(LAYERS + 1):
            shapes.update(_resnet(f"decoder.up.{level}.block.{j}", cin, width))
            cin = width
        if level > 0:
            shapes.update(_conv(f"decoder.up.{level}.upsample.conv", width, width, 3))
    shapes.update(_norm("decoder.norm_out", WIDTHS[0]))
    shapes.update(_conv("decoder.conv_out", WIDTHS[0], 3, 3))
    return shapes


def write_sd_vae(path: Path, seed: int = 0, dtype: torch.dtype = torch.float16) -> Path:
    """A random-weight SD VAE as an LDM-layout `.safetensors` (fp16 by default: half the size of the
    official fp32 file, same keys and shapes). Weights are scaled like PyTorch's default init (fan-in),
    norms start at weight 1, bias 0, so activations stay O(1) through the network."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in ldm_vae_shapes().items():
        if ".norm" in name or "norm_out" in name:
            value = torch.ones(shape) if name.endswith("weight") else torch.zeros(shape)
        elif name.endswith("bias"):
            value = torch.zeros(shape)
        else:
            fan_in = shape[1] * shape[2] * shape[3]
            value = (torch.rand(shape, generator=generator) * 2 - 1) / fan_in ** 0.5
        tensors[name] = value.to(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def session_sd_vae(tmp_path_factory) -> Path:
    """One random SD VAE file per test session (it is 167 MB), shared by the modules that need it."""
    path = tmp_path_factory.getbasetemp() / "sd_vae" / "vae-ft-mse-840000-ema-pruned.safetensors"
    return path if path.is_file() else write_sd_vae(path)
