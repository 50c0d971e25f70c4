"""Weights stored packed (fp8 or a GGML block format) and unpacked layer by layer as the UNet runs, on any device.

ComfyUI's users know two such storages: fp8 (core's `weight_dtype` fp8_e4m3fn / fp8_e5m2) and GGUF's block
formats (city96's ComfyUI-GGUF: Q8_0, Q6_K, Q5_K, Q4_K, Q4_0). Both are weight-only: a `PackedLayer` replaces a
Linear or Conv2d, keeps its weight packed in a uint8 buffer (fp8 as its bytes, with one float scale per output
channel) and unpacks it into the activations' dtype at each call, so only one layer's weight exists unpacked at a
time. Biases, norms and the motion modules' position tables stay in float, as GGUF converters keep small tensors.

`pack(weight, kind, name)` decides, once for files and for memory alike, how a layer's weight is stored: the
UNet's full- and half-resolution levels carry most of the output's sensitivity to weight error (`python -m
bench.quant --sensitivity`: Q4_0 on the 3 % of the weights at full resolution alone gives 0.24 relative error,
on the 40 % at the lowest resolution 0.04), so, like llama.cpp's "_M" mixes, the GGUF formats store them two and
one steps finer on `LADDER` (`layer_kind`); then Q8_0 where a size does not fit a format's 256-value blocks, else
fp16.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from . import ggml

FP8 = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
KINDS = (*FP8, *ggml.FORMATS)  # the storages a user can choose
FALLBACK = "Q8_0"  # for weights whose size is no multiple of a K format's 256-value blocks
LADDER = ("Q4_0", "Q4_K", "Q5_K", "Q6_K", "Q8_0")  # the GGUF formats, coarse to fine
FINER = {("down_blocks.0.", "up_blocks.3."): 2, ("down_blocks.1.", "up_blocks.2."): 1}  # steps up LADDER


@dataclass(frozen=True)
class Packed:
    """A weight in storage: `data` uint8 (GGML blocks `[blocks, size]`, or fp8's bytes in the weight's shape),
    `kind` (a `KINDS` name, or "F16"), the weight's `shape`, and fp8's per-output-channel `scale`."""

    kind: str
    data: Tensor
    shape: tuple[int, ...]
    scale: Tensor | None = None

    def unpack(self, dtype: torch.dtype) -> Tensor:
        if self.kind in FP8:
            weight = self.data.view(FP8[self.kind]).to(dtype)
            return weight * self.scale.to(dtype).view(-1, *[1] * (weight.ndim - 1))
        if self.kind == "F16":
            return self.data.view(torch.float16).to(dtype).view(self.shape)
        return ggml.dequantize(self.data, self.kind, dtype).view(self.shape)


def packs(name: str, tensor: Tensor) -> bool:
    """Whether a state-dict entry is a layer weight that packing stores (Linear and Conv2d weights)."""
    return name.endswith(".weight") and tensor.ndim in (2, 4)


def layer_kind(name: str, kind: str) -> str:
    """The storage the weight `name` (a state-dict key) gets when `kind` is asked for: finer at the sensitive
    levels (`FINER`), `kind` elsewhere and for fp8."""
    if kind in LADDER:
        for prefixes, steps in FINER.items():
            if name.startswith(prefixes):
                return LADDER[min(LADDER.index(kind) + steps, len(LADDER) - 1)]
    return kind


def pack(weight: Tensor, kind: str, name: str = "") -> Packed:
    """`weight` (the state-dict entry `name`) stored as `kind` (see the module docstring for the mix)."""
    if kind not in KINDS:
        raise ValueError(f"unknown weight storage {kind!r}; known: {', '.join(KINDS)}")
    shape = tuple(weight.shape)
    weight = weight.detach()
    if kind in FP8:
        top = weight.float().abs().amax(dim=tuple(range(1, weight.ndim))).clamp(min=1e-12)
        scale = top / torch.finfo(FP8[kind]).max
        stored = (weight.float() / scale.view(-1, *[1] * (weight.ndim - 1))).to(FP8[kind])
        return Packed(kind, stored.view(torch.uint8), shape, scale)
    choice = stored_kind(weight.numel(), layer_kind(name, kind))
    if choice == "F16":
        return Packed("F16", weight.to(torch.float16).reshape(-1).view(torch.uint8), shape)
    return Packed(choice, ggml.quantize(weight, choice), shape)


def stored_kind(numel: int, kind: str) -> str:
    """What a weight of `numel` values asked to be `kind` is stored as: `kind`, `FALLBACK` or F16."""
    if kind in FP8:
        return kind
    for choice in (kind, FALLBACK):
        if numel % ggml.FORMATS[choice].block == 0:
            return choice
    return "F16"


def stored_bytes(numel: int, rows: int, kind: str, name: str = "") -> int:
    """Bytes `pack` stores the weight `name` of `numel` values and `rows` output channels in, as `kind`."""
    choice = stored_kind(numel, layer_kind(name, kind))
    if choice in FP8:
        return numel + 4 * rows
    if choice == "F16":
        return 2 * numel
    return numel // ggml.FORMATS[choice].block * ggml.FORMATS[choice].size


class PackedLayer(nn.Module):
    """A Linear or Conv2d whose weight is a `Packed`, unpacked into the input's dtype at each call."""

    def __init__(self, layer: nn.Linear | nn.Conv2d, weight: Packed, device: torch.device | str | None = None):
        super().__init__()
        self.kind, self.shape = weight.kind, weight.shape
        self.register_buffer("packed", weight.data.to(device))
        self.register_buffer("scale", None if weight.scale is None else weight.scale.to(device, torch.float32))
        bias = layer.bias
        if bias is not None:  # a meta bias (a layer built for loading) stays meta until the state dict is assigned
            bias = bias.detach() if bias.is_meta else bias.detach().to(device)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.conv = None
        if isinstance(layer, nn.Conv2d):
            self.conv = (layer.stride, layer.padding, layer.dilation, layer.groups)

    @property
    def weight(self) -> Tensor:
        """The unpacked weight (float32), for code that reads a layer's weight."""
        return Packed(self.kind, self.packed, self.shape, self.scale).unpack(torch.float32)

    def forward(self, x: Tensor) -> Tensor:
        # A layer left on another device (ComfyUI loads a model partly when memory is short, and moves only
        # modules with parameters) sends its packed bytes over per call, as ComfyUI's own cast ops do.
        packed, scale = self.packed.to(x.device), None if self.scale is None else self.scale.to(x.device)
        weight = Packed(self.kind, packed, self.shape, scale).unpack(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.device, x.dtype)
        if self.conv is None:
            return F.linear(x, weight, bias)
        return F.conv2d(x, weight, bias, *self.conv)

    def extra_repr(self) -> str:
        return f"{self.kind}, shape={list(self.shape)}, {'conv' if self.conv else 'linear'}"


def pack_layers(unet: nn.Module, kind: str) -> nn.Module:
    """Replace every Linear and Conv2d of a loaded `unet` by a `PackedLayer` storing its weight as `kind`."""
    for prefix, parent in list(unet.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (nn.Linear, nn.Conv2d)):
                key = f"{prefix}.{name}.weight" if prefix else f"{name}.weight"
                setattr(parent, name, PackedLayer(child, pack(child.weight, kind, key), child.weight.device))
    return unet


def place_packed(unet: nn.Module, weights: dict[str, Packed], device: torch.device | str) -> None:
    """Put `weights` (state-dict name -> `Packed`, read from a file) into `unet` (built on the meta device) as
    `PackedLayer`s; their biases stay meta, for the caller's `load_state_dict(assign=True)`."""
    for name, weight in weights.items():
        path = name.removesuffix(".weight")
        parent_name, _, child_name = path.rpartition(".")
        parent = unet.get_submodule(parent_name) if parent_name else unet
        layer = getattr(parent, child_name)
        if not isinstance(layer, (nn.Linear, nn.Conv2d)) or tuple(layer.weight.shape) != weight.shape:
            raise ValueError(f"{name} is stored packed but is not the weight of a Linear or Conv2d layer here")
        setattr(parent, child_name, PackedLayer(layer, weight, device))


def parameter_count(module: nn.Module) -> int:
    """The parameters of `module` as the float model has them: a `PackedLayer`'s weight counted by its shape."""
    packed = sum(math.prod(layer.shape) for layer in module.modules() if isinstance(layer, PackedLayer))
    return packed + sum(parameter.numel() for parameter in module.parameters())
