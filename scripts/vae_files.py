"""An SD VAE file in the original latent-diffusion (LDM) layout, as `vae-ft-mse-840000-ema-pruned.safetensors`
and ComfyUI's Load VAE have it, with random weights.

The key layout is written out here from the architecture (not derived from the product's converter), so a
loader test checks the converter against an independent description of the file.
"""
from __future__ import annotations

from pathlib import Path

import torch

WIDTHS = (128, 256, 512, 512)
NARROW_WIDTHS = (32, 64, 64, 64)  # GroupNorm's 32 groups set the floor
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


def ldm_vae_shapes(widths: tuple[int, ...] = WIDTHS) -> dict[str, tuple]:
    """Every tensor of the SD VAE in the LDM layout: name -> shape (248 tensors). Other `widths` make the
    same architecture narrower (NARROW_WIDTHS: about 1/16 of the work)."""
    shapes = _conv("encoder.conv_in", 3, widths[0], 3)
    cin = widths[0]
    for level, width in enumerate(widths):
        for j in range(LAYERS):
            shapes.update(_resnet(f"encoder.down.{level}.block.{j}", cin, width))
            cin = width
        if level < len(widths) - 1:
            shapes.update(_conv(f"encoder.down.{level}.downsample.conv", width, width, 3))
    shapes.update(_mid("encoder.mid", widths[-1]))
    shapes.update(_norm("encoder.norm_out", widths[-1]))
    shapes.update(_conv("encoder.conv_out", widths[-1], 2 * LATENT_CHANNELS, 3))
    shapes.update(_conv("quant_conv", 2 * LATENT_CHANNELS, 2 * LATENT_CHANNELS, 1))
    shapes.update(_conv("post_quant_conv", LATENT_CHANNELS, LATENT_CHANNELS, 1))
    shapes.update(_conv("decoder.conv_in", LATENT_CHANNELS, widths[-1], 3))
    shapes.update(_mid("decoder.mid", widths[-1]))
    cin = widths[-1]
    for level in reversed(range(len(widths))):  # LDM numbers decoder levels from the lowest resolution up
        width = widths[level]
        for j in range(LAYERS + 1):
            shapes.update(_resnet(f"decoder.up.{level}.block.{j}", cin, width))
            cin = width
        if level > 0:
            shapes.update(_conv(f"decoder.up.{level}.upsample.conv", width, width, 3))
    shapes.update(_norm("decoder.norm_out", widths[0]))
    shapes.update(_conv("decoder.conv_out", widths[0], 3, 3))
    return shapes


def write_sd_vae(path: Path, seed: int = 0, dtype: torch.dtype = torch.float16,
                 widths: tuple[int, ...] = WIDTHS) -> Path:
    """A random-weight SD VAE as an LDM-layout `.safetensors` (fp16 by default: half the size of the
    official fp32 file, same keys and shapes). Weights are scaled like PyTorch's default init (fan-in),
    norms start at weight 1, bias 0, so activations stay O(1) through the network."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in ldm_vae_shapes(widths).items():
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


# TAESD (madebyollin/taesd), the tiny autoencoder of SD's latent space that ComfyUI's Load VAE offers as "taesd"
# when models/vae_approx/ holds taesd_encoder.* and taesd_decoder.*: 4 latent channels, 8x down, 64 channels
# throughout. Written out here from the published architecture: nn.Sequential indices, each Block three 3x3
# convolutions (with a 1x1 skip only where the width changes, never here), stride-2 and upsampling convolutions
# without bias.
TAESD_WIDTH = 64


def _taesd_block(index: int) -> dict[str, tuple]:
    shapes = {}
    for conv in (0, 2, 4):
        shapes.update(_conv(f"{index}.conv.{conv}", TAESD_WIDTH, TAESD_WIDTH, 3))
    return shapes


def taesd_shapes() -> tuple[dict[str, tuple], dict[str, tuple]]:
    """(encoder, decoder): name -> shape of the two files' tensors."""
    encoder = {**_conv("0", 3, TAESD_WIDTH, 3), **_taesd_block(1)}
    for stage in range(3):  # a stride-2 conv without bias, three Blocks
        first = 2 + 4 * stage
        encoder[f"{first}.weight"] = (TAESD_WIDTH, TAESD_WIDTH, 3, 3)
        for offset in (1, 2, 3):
            encoder.update(_taesd_block(first + offset))
    encoder.update(_conv("14", TAESD_WIDTH, LATENT_CHANNELS, 3))
    decoder = _conv("1", LATENT_CHANNELS, TAESD_WIDTH, 3)  # 0 is a clamp, 2 a ReLU
    for stage in range(3):  # three Blocks, an upsample (no tensors), a conv without bias
        first = 3 + 5 * stage
        for offset in (0, 1, 2):
            decoder.update(_taesd_block(first + offset))
        decoder[f"{first + 4}.weight"] = (TAESD_WIDTH, TAESD_WIDTH, 3, 3)
    decoder.update(_taesd_block(18))
    decoder.update(_conv("19", TAESD_WIDTH, 3, 3))
    return encoder, decoder


def write_taesd(folder: Path, seed: int = 0) -> Path:
    """Random-weight `taesd_encoder.safetensors` and `taesd_decoder.safetensors` in `folder` (ComfyUI's
    models/vae_approx/), fan-in scaled, zero biases."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for part, shapes in zip(("encoder", "decoder"), taesd_shapes()):
        tensors = {}
        for name, shape in shapes.items():
            if name.endswith("bias"):
                tensors[name] = torch.zeros(shape)
            else:
                fan_in = shape[1] * shape[2] * shape[3]
                tensors[name] = (torch.rand(shape, generator=generator) * 2 - 1) * (3 / fan_in) ** 0.5
        save_file(tensors, str(folder / f"taesd_{part}.safetensors"))
    return folder
