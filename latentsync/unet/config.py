"""The LatentSync UNet's hyper-parameters, read from the reference's config format.

The field names and their spelling are those of the `model:` section of the reference's
`configs/unet/stage2.yaml`, so that its configs (as dicts or JSON) can be given unchanged. Options this
implementation does not have are refused by name rather than silently ignored: a config that asks for them
describes a different network than the one that would be built.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DOWN_BLOCKS = ("CrossAttnDownBlock3D", "DownBlock3D")
UP_BLOCKS = ("CrossAttnUpBlock3D", "UpBlock3D")

# Options of the reference's constructor that a LatentSync config may spell out; only these values exist here.
_FIXED_OPTIONS: dict[str, Any] = {
    "use_inflated_groupnorm": False,
    "use_linear_projection": False,
    "only_cross_attention": False,
    "dual_cross_attention": False,
    "upcast_attention": False,
    "class_embed_type": None,
    "num_class_embeds": None,
    "audio_condition_method": "cross_attn",
    "custom_audio_layer": False,
    "unet_use_cross_frame_attention": None,
    "unet_use_temporal_attention": None,
}
# Bookkeeping keys that do not change the network.
_IGNORED = {"_class_name", "_diffusers_version", "sample_size"}


@dataclass(frozen=True)
class MotionModuleConfig:
    num_attention_heads: int = 8
    num_transformer_block: int = 1
    attention_block_types: tuple[str, ...] = ("Temporal_Self", "Temporal_Self")
    temporal_position_encoding: bool = True
    temporal_position_encoding_max_len: int = 24
    temporal_attention_dim_div: int = 1
    zero_initialize: bool = True  # how training started; no effect on a loaded model

    def __post_init__(self) -> None:
        object.__setattr__(self, "attention_block_types", tuple(self.attention_block_types))
        if any(kind != "Temporal_Self" for kind in self.attention_block_types):
            raise ValueError(f"only 'Temporal_Self' motion attention is supported, got {self.attention_block_types}")
        if self.temporal_attention_dim_div != 1:
            raise ValueError("temporal_attention_dim_div other than 1 is not supported")


@dataclass(frozen=True)
class UNetConfig:
    """Defaults are LatentSync 1.5/1.6 (`stage2.yaml` and `stage2_512.yaml`, whose model sections are equal)."""

    in_channels: int = 13  # 4 noisy latents, 1 mask, 4 masked-face latents, 4 reference latents
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",)
    mid_block_type: str = "UNetMidBlock3DCrossAttn"
    up_block_types: tuple[str, ...] = ("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3
    layers_per_block: int = 2
    # Despite the name, the reference uses this as the NUMBER of heads of the spatial transformers.
    attention_head_dim: int | tuple[int, ...] = 8
    cross_attention_dim: int = 384  # whisper-tiny features
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    act_fn: str = "silu"
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1
    center_input_sample: bool = False
    resnet_time_scale_shift: str = "default"
    add_audio_layer: bool = True
    sample_size: int = 64
    use_motion_module: bool = True
    motion_module_resolutions: tuple[int, ...] = (1, 2, 4, 8)
    motion_module_mid_block: bool = False
    motion_module_decoder_only: bool = False
    motion_module_type: str = "Vanilla"
    motion_module_kwargs: MotionModuleConfig = field(default_factory=MotionModuleConfig)

    def __post_init__(self) -> None:
        for name in ("block_out_channels", "down_block_types", "up_block_types", "motion_module_resolutions"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not isinstance(self.attention_head_dim, int):
            object.__setattr__(self, "attention_head_dim", tuple(self.attention_head_dim))
        if isinstance(self.motion_module_kwargs, dict):
            object.__setattr__(self, "motion_module_kwargs", MotionModuleConfig(**self.motion_module_kwargs))
        self._check()

    def _check(self) -> None:
        levels = len(self.block_out_channels)
        if not (len(self.down_block_types) == len(self.up_block_types) == levels):
            raise ValueError("block_out_channels, down_block_types and up_block_types must have equal lengths")
        if isinstance(self.attention_head_dim, tuple) and len(self.attention_head_dim) != levels:
            raise ValueError("attention_head_dim must be one number or one per block")
        unknown = [t for t in self.down_block_types if t not in DOWN_BLOCKS]
        unknown += [t for t in self.up_block_types if t not in UP_BLOCKS]
        if self.mid_block_type != "UNetMidBlock3DCrossAttn":
            unknown.append(self.mid_block_type)
        if unknown:
            raise ValueError(f"unsupported UNet block types {unknown}")
        for name, only in (("act_fn", "silu"), ("resnet_time_scale_shift", "default"),
                           ("motion_module_type", "Vanilla"), ("add_audio_layer", True)):
            if getattr(self, name) != only:
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported (LatentSync uses {only!r})")
        if self.downsample_padding < 1:
            raise ValueError("downsample_padding must be at least 1")
        motion_groups = 32 if self.use_motion_module else 1  # the motion modules' GroupNorm is fixed at 32
        for channels, heads in zip(self.block_out_channels, self.heads):
            if channels % self.norm_num_groups or channels % motion_groups or channels % heads:
                raise ValueError(f"{channels} channels do not divide into {self.norm_num_groups} norm groups, "
                                 f"{motion_groups} motion-module groups and {heads} heads")

    @property
    def heads(self) -> tuple[int, ...]:
        """Spatial attention heads of each down block (up blocks use them in reverse)."""
        if isinstance(self.attention_head_dim, int):
            return (self.attention_head_dim,) * len(self.block_out_channels)
        return self.attention_head_dim

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_out_channels[0]

    def down_block_has_motion(self, index: int) -> bool:
        return (self.use_motion_module and not self.motion_module_decoder_only
                and 2 ** index in self.motion_module_resolutions)

    def up_block_has_motion(self, index: int) -> bool:
        return self.use_motion_module and 2 ** (len(self.up_block_types) - 1 - index) in self.motion_module_resolutions

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> UNetConfig:
        """Read a reference-format config; unknown options and unsupported values raise `ValueError`."""
        known = {f.name for f in fields(cls)}
        kwargs, unsupported, unknown = {}, [], []
        for key, value in config.items():
            if key in known:
                kwargs[key] = value
            elif key in _FIXED_OPTIONS:
                if value != _FIXED_OPTIONS[key]:
                    unsupported.append(f"{key}={value!r}")
            elif key not in _IGNORED:
                unknown.append(key)
        if unknown:
            raise ValueError(f"unknown UNet config options {sorted(unknown)}")
        if unsupported:
            raise ValueError(f"unsupported UNet config values {unsupported}")
        motion = dict(kwargs.get("motion_module_kwargs") or {})
        motion_known = {f.name for f in fields(MotionModuleConfig)}
        if set(motion) - motion_known:
            raise ValueError(f"unknown motion_module_kwargs {sorted(set(motion) - motion_known)}")
        kwargs["motion_module_kwargs"] = MotionModuleConfig(**motion)
        return cls(**kwargs)


LATENTSYNC_1_5 = UNetConfig()
LATENTSYNC_1_6 = UNetConfig()  # same network as 1.5, trained on 512 px faces (64x64 latents)
NAMED_CONFIGS = {"1.5": LATENTSYNC_1_5, "1.6": LATENTSYNC_1_6}

ConfigLike = str | Path | dict | UNetConfig
NO_WINDOW_LIMIT = 1 << 30


def max_window(config: UNetConfig | None) -> int:
    """The most frames a UNet of `config` denoises together: its motion modules' position table
    (`temporal_position_encoding_max_len`); no limit for a network without one (or no config at all)."""
    motion = getattr(config, "motion_module_kwargs", None)
    if getattr(config, "use_motion_module", False) and getattr(motion, "temporal_position_encoding", False):
        return int(motion.temporal_position_encoding_max_len)
    return NO_WINDOW_LIMIT


def resolve_unet_config(config: ConfigLike) -> UNetConfig:
    """`"1.5"`, `"1.6"`, a `UNetConfig`, a reference-format dict, or a JSON file holding one.

    A dict or file may also wrap the config as `{"unet_config": ...}` or `{"model_config": ...}`, the layouts
    of the shared reference data.
    """
    if isinstance(config, UNetConfig):
        return config
    if isinstance(config, str) and config in NAMED_CONFIGS:
        return NAMED_CONFIGS[config]
    if isinstance(config, (str, Path)):
        path = Path(config)
        if path.suffix.lower() != ".json":
            raise ValueError(f"UNet config must be one of {sorted(NAMED_CONFIGS)} or a .json file, got {config!r}")
        if not path.is_file():
            raise FileNotFoundError(f"UNet config file not found: {path}")
        config = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise TypeError(f"UNet config must be a version string, dict, JSON path or UNetConfig, got {type(config)}")
    for wrapper in ("unet_config", "model_config", "model"):
        if isinstance(config.get(wrapper), dict):
            config = config[wrapper]
            break
    return UNetConfig.from_dict(config)
