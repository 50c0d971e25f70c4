"""LatentSync's denoising UNet: an SD-1.5-shaped UNet over 16-frame clips, conditioned on audio.

Reimplements `UNet3DConditionModel` of bytedance/LatentSync (commit a229c39) with the same state-dict keys,
so the released `latentsync_unet.pt` files load unchanged. Call it as `unet(sample, timestep, audio)`:

- `sample` `[B, 13, F, H, W]`: noisy latents (4), mouth mask (1), masked-face latents (4), reference latents (4);
- `timestep`: a number, a 0-d tensor or one value per clip;
- `audio` `[B*F, 50, 384]` (or `[B, F, 50, 384]`): one whisper chunk per frame, frame-major within a clip;
- returns the predicted noise `[B, 4, F, H, W]`.

The layers are in `blocks.py`, the hyper-parameters in `config.py`, file loading in `loading.py`.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import VideoGroupNorm, DownBlock, MidBlock, UpBlock
from .config import ConfigLike, UNetConfig, resolve_unet_config

if TYPE_CHECKING:
    from .deepcache import DeepCache


def timestep_embedding(timesteps: Tensor, dim: int, flip_sin_to_cos: bool, freq_shift: float) -> Tensor:
    """Sinusoidal timestep features, computed in float32 with the operation order of diffusers' `Timesteps`
    (at t near 1000 a different but equivalent order moves the output by about 1e-4)."""
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    frequencies = torch.exp(exponent / (half - freq_shift))
    angles = timesteps[:, None].float() * frequencies[None, :]
    sin, cos = torch.sin(angles), torch.cos(angles)
    embedding = torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)
    return F.pad(embedding, (0, dim % 2))


class TimeEmbedding(nn.Module):
    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class LatentSyncUNet(nn.Module):
    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        channels, heads = config.block_out_channels, config.heads
        levels = len(channels)
        self.conv_in = nn.Conv2d(config.in_channels, channels[0], 3, padding=1)
        self.time_embedding = TimeEmbedding(channels[0], config.time_embed_dim)

        self.down_blocks = nn.ModuleList()
        skip_channels = [channels[0]]
        for index, kind in enumerate(config.down_block_types):
            last = index == levels - 1
            self.down_blocks.append(DownBlock(
                config, channels[max(index - 1, 0)], channels[index], heads[index],
                cross_attention=kind == "CrossAttnDownBlock3D", motion=config.down_block_has_motion(index),
                downsample=not last))
            skip_channels += [channels[index]] * (config.layers_per_block + (not last))

        self.up_blocks = nn.ModuleList()
        for index, kind in enumerate(config.up_block_types):
            level = levels - 1 - index
            block_skips = skip_channels[-(config.layers_per_block + 1):][::-1]
            del skip_channels[-(config.layers_per_block + 1):]
            self.up_blocks.append(UpBlock(
                config, channels[min(level + 1, levels - 1)], channels[level], block_skips, heads[level],
                cross_attention=kind == "CrossAttnUpBlock3D", motion=config.up_block_has_motion(index),
                upsample=level > 0))
        # Registered after the up blocks, as in the reference, so that state dicts list keys in its order.
        self.mid_block = MidBlock(config, channels[-1], heads[-1],
                                  motion=config.use_motion_module and config.motion_module_mid_block)

        self.conv_norm_out = VideoGroupNorm(config.norm_num_groups, channels[0], config.norm_eps)
        self.conv_out = nn.Conv2d(channels[0], config.out_channels, 3, padding=1)

    @property
    def dtype(self) -> torch.dtype:
        # the first float parameter: weight-only quantization may have replaced conv_in's weight
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    def forward(self, sample: Tensor, timestep: Tensor | float, encoder_hidden_states: Tensor | None,
                cache: DeepCache | None = None) -> Tensor:
        """`cache` (see `deepcache.py`): a full pass stores the deep features in it; with `cache.reuse` set,
        only the shallow end runs, on the stored features."""
        config = self.config
        if sample.ndim != 5 or sample.shape[1] != config.in_channels:
            raise ValueError(f"sample must be [batch, {config.in_channels}, frames, height, width], "
                             f"got {tuple(sample.shape)}")
        batch, _, num_frames, height, width = sample.shape
        context = encoder_hidden_states
        if context is not None:
            if context.ndim == 4:
                context = context.flatten(0, 1)
            expected = (batch * num_frames, config.cross_attention_dim)
            if context.ndim != 3 or (context.shape[0], context.shape[2]) != expected:
                raise ValueError(f"encoder_hidden_states must be [{batch * num_frames}, tokens, "
                                 f"{config.cross_attention_dim}] (one audio chunk per frame of each clip), "
                                 f"got {tuple(encoder_hidden_states.shape)}")
            context = context.to(self.dtype)

        timesteps = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch)
        time = timestep_embedding(timesteps, config.block_out_channels[0], config.flip_sin_to_cos, config.freq_shift)
        time = self.time_embedding(time.to(self.dtype)).repeat_interleave(num_frames, dim=0)

        if config.center_input_sample:
            sample = 2 * sample - 1.0
        x = sample.to(self.dtype).transpose(1, 2).reshape(batch * num_frames, -1, height, width)
        x = self.conv_in(x)
        if cache is not None:
            x = self._deepcache_pass(x, time, context, num_frames, cache)
            return x.view(batch, num_frames, -1, height, width).transpose(1, 2).contiguous()
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, time, context, num_frames)
            skips += block_skips
        x = self.mid_block(x, time, context, num_frames)
        for block in self.up_blocks:
            block_skips = skips[-len(block.resnets):]
            del skips[-len(block.resnets):]
            size = tuple(skips[-1].shape[-2:]) if skips else None
            x = block(x, block_skips, time, context, num_frames, size)
        x = self.conv_out(F.silu(self.conv_norm_out(x, num_frames)))
        return x.view(batch, num_frames, -1, height, width).transpose(1, 2).contiguous()

    def _deepcache_pass(self, x: Tensor, time: Tensor, context: Tensor | None, num_frames: int,
                        cache: DeepCache) -> Tensor:
        """The forward from `conv_in`'s output on, with the same operations as `forward` in the same order
        (so a cache that is never reused changes no bit), storing or reusing the deep features: the input of
        the last up block's last layer, which is all that layer takes from deeper than `conv_in`."""
        last = self.up_blocks[-1]
        first_skip = x
        if cache.reuse and cache.features is not None:
            x = cache.features
        else:
            skips = [x]
            for block in self.down_blocks:
                x, block_skips = block(x, time, context, num_frames)
                skips += block_skips
            x = self.mid_block(x, time, context, num_frames)
            for block in self.up_blocks[:-1]:
                block_skips = skips[-len(block.resnets):]
                del skips[-len(block.resnets):]
                x = block(x, block_skips, time, context, num_frames, tuple(skips[-1].shape[-2:]))
            for index in range(len(last.resnets) - 1):
                x = last._layer(index, torch.cat([x, skips.pop()], dim=1), time, context, num_frames)
            cache.features = x
        x = last._layer(len(last.resnets) - 1, torch.cat([x, first_skip], dim=1), time, context, num_frames)
        return self.conv_out(F.silu(self.conv_norm_out(x, num_frames)))


def build_unet(config: ConfigLike, device: torch.device | str = "meta",
               dtype: torch.dtype = torch.float32) -> LatentSyncUNet:
    """The architecture for `config` (see `resolve_unet_config`), in eval mode.

    On the default meta device no memory is allocated: the module is a skeleton to receive checkpoint
    tensors (`load_state_dict(..., assign=True)`). On a real device the weights get PyTorch's default
    initialisation, which is only useful for tests and benchmarks.
    """
    config = resolve_unet_config(config)
    with torch.device(device):
        unet = LatentSyncUNet(config)
    return unet.to(dtype).eval()
