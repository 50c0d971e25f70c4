"""The layers of LatentSync's UNet: resnets, spatial and audio attention, temporal motion modules.

Activations travel as frames folded into the batch, `[B*F, C, H, W]` with frame index `b * F + f`, because
nearly everything in this network is per frame: the 2-D convolutions, the spatial self-attention and the
audio cross-attention (frame j attends to its own whisper chunk, row j of the context). Only two things look
across frames: the temporal self-attention of the motion modules, and the resnet GroupNorms, whose statistics
the reference pools over the whole clip (it applies a plain `nn.GroupNorm` to a 5-D tensor).

Attribute names follow the reference checkpoint's state-dict keys, which is why some modules keep a list
where one layer would do (`to_out.0`, `ff.net.2`) or an extra level (`motion_modules.N.temporal_transformer`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import MotionModuleConfig, UNetConfig


class VideoGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics over every frame of a clip, not frame by frame."""

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        frames, channels, height, width = x.shape
        clip = x.view(frames // num_frames, num_frames, channels, height, width).transpose(1, 2)
        out = F.group_norm(clip, self.num_groups, self.weight, self.bias, self.eps)
        return out.transpose(1, 2).reshape(frames, channels, height, width)


class Attention(nn.Module):
    """Multi-head attention with bias-free q/k/v projections, as in the SD-1.5 transformer blocks."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"{dim} channels cannot be split into {heads} attention heads")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim or dim, dim, bias=False)
        # A list because the reference kept a dropout at index 1.
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        batch, length, dim = x.shape
        q = self.to_q(x).view(batch, length, self.heads, -1).transpose(1, 2)
        k = self.to_k(context).view(batch, context.shape[1], self.heads, -1).transpose(1, 2)
        v = self.to_v(context).view(batch, context.shape[1], self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out[0](out.transpose(1, 2).reshape(batch, length, dim))


class GEGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        # Index 1 was a dropout in the reference; the placeholder keeps `net.2` where checkpoints have it.
        self.net = nn.Sequential(GEGLU(dim, mult * dim), nn.Identity(), nn.Linear(mult * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ResnetBlock(nn.Module):
    """Two 3x3 convs per frame with the timestep added in between; norms pooled over the clip."""

    def __init__(self, in_channels: int, out_channels: int, time_dim: int, groups: int, eps: float,
                 output_scale: float = 1.0):
        super().__init__()
        self.norm1 = VideoGroupNorm(groups, in_channels, eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(time_dim, out_channels)
        self.norm2 = VideoGroupNorm(groups, out_channels, eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.output_scale = output_scale

    def forward(self, x: Tensor, time: Tensor, num_frames: int) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x, num_frames)))
        h = h + self.time_emb_proj(F.silu(time))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h, num_frames)))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return (shortcut + h) / self.output_scale


class TransformerBlock(nn.Module):
    """Self-attention over the pixels of a frame, cross-attention to its audio, then a GEGLU MLP."""

    def __init__(self, dim: int, heads: int, context_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, context_dim)
        self.ff = FeedForward(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        x = x + self.attn1(self.norm1(x))
        if context is not None:  # the reference skips the audio when none is given
            x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, context_dim: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(channels, heads, context_dim)])
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        frames, channels, height, width = x.shape
        tokens = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        return x + self.proj_out(tokens.transpose(1, 2).reshape(frames, channels, height, width))


def sinusoidal_table(length: int, dim: int) -> Tensor:
    """`[length, dim]` position codes, sin in even and cos in odd channels (the reference's layout)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table


class PositionalEncoding(nn.Module):
    def __init__(self, dim: int, max_len: int):
        super().__init__()
        # Persistent: released checkpoints carry the table, and a strict load expects it.
        self.register_buffer("pe", sinusoidal_table(max_len, dim)[None])

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] > self.pe.shape[1]:
            raise ValueError(f"the motion modules handle at most {self.pe.shape[1]} frames per clip, "
                             f"got {x.shape[1]}")
        return x + self.pe[:, : x.shape[1]].to(x.device, x.dtype)  # a buffer ComfyUI's partial load leaves behind


class TemporalAttention(Attention):
    """Self-attention across the frames of one pixel; frame positions come from a sinusoidal code."""

    def __init__(self, dim: int, heads: int, max_frames: int | None):
        super().__init__(dim, heads)
        self.pos_encoder = PositionalEncoding(dim, max_frames) if max_frames else None

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return super().forward(x if self.pos_encoder is None else self.pos_encoder(x))


class TemporalTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, num_attentions: int, max_frames: int | None):
        super().__init__()
        self.attention_blocks = nn.ModuleList(TemporalAttention(dim, heads, max_frames) for _ in range(num_attentions))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_attentions))
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = x + attention(norm(x))
        return x + self.ff(self.ff_norm(x))


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, num_blocks: int, num_attentions: int, max_frames: int | None):
        super().__init__()
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)  # 32 groups whatever the config says, as in the reference
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            TemporalTransformerBlock(channels, heads, num_attentions, max_frames) for _ in range(num_blocks))
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        frames, channels, height, width = x.shape
        clips, pixels = frames // num_frames, height * width
        # Every layer in here is per token except the attention, so the tokens are laid out once as
        # one sequence of frames per pixel: [clips * pixels, frames, channels].
        tokens = self.norm(x).view(clips, num_frames, channels, pixels).permute(0, 3, 1, 2)
        tokens = self.proj_in(tokens.reshape(clips * pixels, num_frames, channels))
        for block in self.transformer_blocks:
            tokens = block(tokens)
        tokens = self.proj_out(tokens).view(clips, pixels, num_frames, channels).permute(0, 2, 3, 1)
        return x + tokens.reshape(frames, channels, height, width)


class MotionModule(nn.Module):
    """AnimateDiff's "Vanilla" temporal module; the wrapper level exists only in the key names."""

    def __init__(self, channels: int, config: MotionModuleConfig):
        super().__init__()
        max_frames = config.temporal_position_encoding_max_len if config.temporal_position_encoding else None
        self.temporal_transformer = TemporalTransformer(channels, config.num_attention_heads,
                                                        config.num_transformer_block,
                                                        len(config.attention_block_types), max_frames)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        return self.temporal_transformer(x, num_frames)


class Downsample(nn.Module):
    def __init__(self, channels: int, padding: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        # Nearest-neighbour up to the skip connection's size: 2x, or less for odd latent sizes.
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class _LayerStack(nn.Module):
    """Layers of [resnet -> spatial and audio transformer -> motion module], the latter two optional."""

    def __init__(self, config: UNetConfig, in_channels: list[int], channels: int, heads: int,
                 cross_attention: bool, motion: bool):
        super().__init__()
        groups, eps = config.norm_num_groups, config.norm_eps
        # Attentions before resnets: the reference's registration order, hence its state-dict key order.
        self.attentions = nn.ModuleList(
            SpatialTransformer(channels, heads, config.cross_attention_dim, groups)
            for _ in in_channels if cross_attention)
        self.resnets = nn.ModuleList(
            ResnetBlock(c, channels, config.time_embed_dim, groups, eps) for c in in_channels)
        self.motion_modules = nn.ModuleList(
            MotionModule(channels, config.motion_module_kwargs) for _ in in_channels if motion)

    def _layer(self, index: int, x: Tensor, time: Tensor, context: Tensor | None, num_frames: int) -> Tensor:
        x = self.resnets[index](x, time, num_frames)
        if self.attentions:
            x = self.attentions[index](x, context)
        if self.motion_modules:
            x = self.motion_modules[index](x, num_frames)
        return x


class DownBlock(_LayerStack):
    def __init__(self, config: UNetConfig, in_channels: int, channels: int, heads: int, cross_attention: bool,
                 motion: bool, downsample: bool):
        layers = config.layers_per_block
        super().__init__(config, [in_channels] + [channels] * (layers - 1), channels, heads, cross_attention, motion)
        self.downsamplers = nn.ModuleList([Downsample(channels, config.downsample_padding)] if downsample else [])

    def forward(self, x: Tensor, time: Tensor, context: Tensor | None, num_frames: int
                ) -> tuple[Tensor, list[Tensor]]:
        """Returns the output and the skip connections the up blocks will consume."""
        skips = []
        for index in range(len(self.resnets)):
            x = self._layer(index, x, time, context, num_frames)
            skips.append(x)
        for downsample in self.downsamplers:
            x = downsample(x)
            skips.append(x)
        return x, skips


class UpBlock(_LayerStack):
    def __init__(self, config: UNetConfig, in_channels: int, channels: int, skip_channels: list[int], heads: int,
                 cross_attention: bool, motion: bool, upsample: bool):
        inputs = [c + skip for c, skip in zip([in_channels] + [channels] * len(skip_channels), skip_channels)]
        super().__init__(config, inputs, channels, heads, cross_attention, motion)
        self.upsamplers = nn.ModuleList([Upsample(channels)] if upsample else [])

    def forward(self, x: Tensor, skips: list[Tensor], time: Tensor, context: Tensor | None, num_frames: int,
                size: tuple[int, int] | None) -> Tensor:
        """`skips` are consumed last first; `size` is the spatial size to upsample to."""
        for index in range(len(self.resnets)):
            x = self._layer(index, torch.cat([x, skips.pop()], dim=1), time, context, num_frames)
        for upsample in self.upsamplers:
            x = upsample(x, size)
        return x


class MidBlock(nn.Module):
    """resnet -> transformer (-> motion module) -> resnet at the lowest resolution."""

    def __init__(self, config: UNetConfig, channels: int, heads: int, motion: bool):
        super().__init__()
        groups, eps, scale = config.norm_num_groups, config.norm_eps, config.mid_block_scale_factor
        self.attentions = nn.ModuleList([SpatialTransformer(channels, heads, config.cross_attention_dim, groups)])
        self.resnets = nn.ModuleList(
            ResnetBlock(channels, channels, config.time_embed_dim, groups, eps, scale) for _ in range(2))
        self.motion_modules = nn.ModuleList([MotionModule(channels, config.motion_module_kwargs)] if motion else [])

    def forward(self, x: Tensor, time: Tensor, context: Tensor | None, num_frames: int) -> Tensor:
        x = self.resnets[0](x, time, num_frames)
        x = self.attentions[0](x, context)
        for motion in self.motion_modules:
            x = motion(x, num_frames)
        return self.resnets[1](x, time, num_frames)
