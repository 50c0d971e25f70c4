"""Real-ESRGAN model files in the official layouts, with random weights, for tests and benchmarks.

The modules below are written from the published architectures (xinntao/Real-ESRGAN, BasicSR): the parameter
names, shapes and forward passes are the ones the official `.pth` files use. Small widths keep tests fast;
`REALESRGAN_FULL` holds the released sizes. The files are loaded through the product's real path
(`latentsync.upscale.models.load_upscale_model`, i.e. spandrel), and `module.forward` is an independent
reference to check spandrel's reading of the layout against.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# The growth channels of RRDBNet are 32 in every released file, and spandrel assumes it.
GROWTH = 32

# kind -> (architecture, keyword arguments) at the released sizes.
REALESRGAN_FULL = {
    "x4plus": ("rrdb", {"scale": 4, "num_feat": 64, "num_block": 23}),
    "x2plus": ("rrdb", {"scale": 2, "num_feat": 64, "num_block": 23}),
    "animevideov3": ("srvgg", {"scale": 4, "num_feat": 64, "num_conv": 16}),
    "general-x4v3": ("srvgg", {"scale": 4, "num_feat": 64, "num_conv": 32}),
}
# The same layouts, small enough for unit tests on CPU.
REALESRGAN_TINY = {
    "x4plus": ("rrdb", {"scale": 4, "num_feat": 8, "num_block": 1}),
    "x2plus": ("rrdb", {"scale": 2, "num_feat": 8, "num_block": 1}),
    "animevideov3": ("srvgg", {"scale": 4, "num_feat": 8, "num_conv": 2}),
    "compact-x2": ("srvgg", {"scale": 2, "num_feat": 8, "num_conv": 2}),
}


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1)


class ResidualDenseBlock(nn.Module):
    def __init__(self, num_feat: int, growth: int = GROWTH):
        super().__init__()
        for i in range(1, 5):
            setattr(self, f"conv{i}", _conv(num_feat + (i - 1) * growth, growth))
        self.conv5 = _conv(num_feat + 4 * growth, num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for i in range(1, 5):
            features.append(F.leaky_relu(getattr(self, f"conv{i}")(torch.cat(features, 1)), 0.2))
        return self.conv5(torch.cat(features, 1)) * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, num_feat: int):
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (ResidualDenseBlock(num_feat) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """RealESRGAN_x4plus / x2plus: x2 unshuffles the input by 2 (12 channels) and always upsamples by 4."""

    def __init__(self, scale: int = 4, num_feat: int = 64, num_block: int = 23):
        super().__init__()
        self.unshuffle = {4: 1, 2: 2, 1: 4}[scale]
        self.conv_first = _conv(3 * self.unshuffle ** 2, num_feat)
        self.body = nn.Sequential(*(RRDB(num_feat) for _ in range(num_block)))
        self.conv_body = _conv(num_feat, num_feat)
        self.conv_up1 = _conv(num_feat, num_feat)
        self.conv_up2 = _conv(num_feat, num_feat)
        self.conv_hr = _conv(num_feat, num_feat)
        self.conv_last = _conv(num_feat, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in (self.conv_up1, self.conv_up2):
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


class SRVGGNetCompact(nn.Module):
    """realesr-animevideov3 / general-x4v3: a plain conv stack, pixel shuffle, plus the nearest-upscaled input."""

    def __init__(self, scale: int = 4, num_feat: int = 64, num_conv: int = 16):
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [_conv(3, num_feat), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [_conv(num_feat, num_feat), nn.PReLU(num_feat)]
        layers.append(_conv(num_feat, 3 * scale * scale))
        self.body = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        return F.pixel_shuffle(out, self.scale) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


def build_realesrgan(kind: str, seed: int = 0, full_size: bool = False) -> nn.Module:
    """A random-weight network of one released kind (`x4plus`, `x2plus`, `animevideov3`, ...), in eval mode."""
    arch, kwargs = (REALESRGAN_FULL if full_size else REALESRGAN_TINY)[kind]
    torch.manual_seed(seed)
    net = RRDBNet(**kwargs) if arch == "rrdb" else SRVGGNetCompact(**kwargs)
    with torch.no_grad():
        # Residual branches scaled down as BasicSR initialises them, so outputs stay image-like.
        for name, param in net.named_parameters():
            if ".rdb" in name or (arch == "srvgg" and name.endswith("weight") and param.ndim == 4):
                param.mul_(0.1)
    return net.eval()


def write_realesrgan(path: Path, kind: str = "x4plus", key: str = "params_ema", seed: int = 0,
                     full_size: bool = False) -> Path:
    """Write `{key: state_dict}` as the official releases do (`params_ema` or `params`); returns `path`."""
    net = build_realesrgan(kind, seed, full_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({key: net.state_dict()}, path)
    return path


def write_not_an_upscaler(path: Path) -> Path:
    """A small checkpoint with VAE-like key names (what a user might pick from the wrong folder)."""
    torch.manual_seed(0)
    state = {"encoder.conv_in.weight": torch.randn(8, 3, 3, 3), "encoder.down_blocks.0.resnets.0.conv1.weight":
             torch.randn(8, 8, 3, 3), "quant_conv.weight": torch.randn(8, 8, 1, 1),
             "decoder.up_blocks.0.resnets.0.conv1.weight": torch.randn(8, 8, 3, 3),
             "decoder.conv_out.weight": torch.randn(3, 8, 3, 3)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state}, path)
    return path


# --- face restorers ------------------------------------------------------------------------------------------
# Built from the architectures spandrel (and spandrel-extra-arches) vendor from the official repositories, so the
# key names are the released files'; the weights are random. The released files wrap the state dict as below.

def write_gfpgan(path: Path, seed: int = 0) -> Path:
    """GFPGANv1.4.pth / GFPGANv1.3.pth: GFPGANv1Clean at its one released size (~86 M parameters, ~350 MB),
    as `{"params_ema": state_dict}` (TencentARC/GFPGAN releases). Build it once per session."""
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(seed)
    net = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
                 num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    return _save({"params_ema": net.state_dict()}, path)


def write_codeformer(path: Path, seed: int = 0) -> Path:
    """codeformer.pth as `{"params_ema": state_dict}` (sczhou/CodeFormer releases). The VQGAN around the
    transformer has fixed widths in spandrel-extra-arches (~74 M parameters); the transformer, whose size is read
    from the file, is made small (1 layer of 64, a 16-entry codebook). Needs spandrel-extra-arches."""
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    torch.manual_seed(seed)
    net = CodeFormer(dim_embd=64, n_head=8, n_layers=1, codebook_size=16, latent_size=256,
                     connect_list=["32", "64", "128", "256"], fix_modules=["quantize", "generator"])
    return _save({"params_ema": net.state_dict()}, path)


def write_restoreformer(path: Path, seed: int = 0) -> Path:
    """RestoreFormer.pth as the GFPGAN v1.3.4 release stores it (`{"params_ema": state_dict}`, no `vqvae.`
    prefix), tiny: 32 channels (GroupNorm's 32 groups are the floor), one block a level, a 16-entry codebook.
    spandrel reads every one of these sizes from the file."""
    from spandrel.architectures.RestoreFormer import RestoreFormer

    torch.manual_seed(seed)
    net = RestoreFormer(n_embed=16, embed_dim=32, ch=32, out_ch=3, ch_mult=(1, 1, 1, 1, 1, 1), num_res_blocks=1,
                        attn_resolutions=(16,), dropout=0.0, in_channels=3, resolution=512, z_channels=32,
                        double_z=False, enable_mid=True, head_size=8)
    return _save({"params_ema": net.state_dict()}, path)


def _save(payload: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path
