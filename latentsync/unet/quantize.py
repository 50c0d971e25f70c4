"""Weight-only quantization of a loaded UNet: int8 everywhere, int4 where a real kernel exists (CUDA).

Linear layers go through torchao (`Int8WeightOnlyConfig`, `Int4WeightOnlyConfig`), which keeps working
under `torch.inference_mode` (ComfyUI runs nodes in it). torchao leaves convolutions alone, yet they hold
about half of this UNet's weights, so 3x3/1x1 convs get our own int8 storage: per-output-channel
symmetric scales, dequantized to the activation dtype on the fly.
"""
from __future__ import annotations

import sys

import torch
from torch import nn

from ..core.process_state import contained, hushed

INSTALL_HINT = "weight quantization needs torchao; run `pip install torchao` in ComfyUI's Python environment"


class Int8Conv2d(nn.Module):
    """A Conv2d whose weight is stored as int8 with one float scale per output channel."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        weight = conv.weight.detach()
        scale = weight.abs().amax(dim=(1, 2, 3), keepdim=True).float().clamp(min=1e-12) / 127
        self.register_buffer("weight_int8", torch.round(weight.float() / scale).to(torch.int8))
        self.register_buffer("weight_scale", scale.to(weight.dtype))
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach(), requires_grad=False)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_int8.to(x.dtype) * self.weight_scale.to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return nn.functional.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


def _torchao():
    if "torchao.quantization" in sys.modules:
        return sys.modules["torchao.quantization"]
    try:
        # torchao adds warning filters (and torch sets TORCHINDUCTOR_CACHE_DIR) as it loads: keep those to the import,
        # and its notes to torch as it registers its types to --debug.
        with contained(), hushed():
            import torchao.quantization as quantization
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return quantization


def quantize_int8(unet: nn.Module) -> nn.Module:
    """int8 weight-only: torchao for every Linear, `Int8Conv2d` for every Conv2d."""
    _torchao().quantize_(unet, _torchao().Int8WeightOnlyConfig())
    for parent in list(unet.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d):
                setattr(parent, name, Int8Conv2d(child))
    return unet


def quantize_int4(unet: nn.Module) -> nn.Module:
    """int4 weight-only (group size 128) for Linear layers, on CUDA, where torchao has real kernels."""
    device = next(unet.parameters()).device
    if device.type != "cuda":
        raise ValueError(f"int4 needs a CUDA GPU (torchao's int4 kernels run only there); this model is on "
                         f"{device.type}. Use int8 on this device.")
    if next(unet.parameters()).dtype != torch.bfloat16:
        raise ValueError("int4 needs the model in bf16; load it with dtype bf16")
    quantization = _torchao()
    try:
        quantization.quantize_(unet, quantization.Int4WeightOnlyConfig(group_size=128))
    except (ImportError, RuntimeError, NotImplementedError) as exc:
        raise ValueError(f"torchao could not quantize to int4 here ({type(exc).__name__}: {exc}); int4 needs "
                         "torchao's CUDA kernels (see torchao's install notes); use int8 instead") from exc
    return unet


def weight_bytes(module: nn.Module) -> int:
    """Bytes held by parameters and buffers, counting quantized tensors by their real storage."""
    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        inner = [getattr(tensor, name) for name in getattr(tensor, "__tensor_flatten__", lambda: ([], None))()[0]]
        parts = [t for t in _leaves(inner)] or [tensor]
        total += sum(t.numel() * t.element_size() for t in parts)
    return total


def _leaves(tensors):
    for tensor in tensors:
        names = getattr(tensor, "__tensor_flatten__", None)
        if names is None:
            yield tensor
        else:
            yield from _leaves(getattr(tensor, name) for name in names()[0])
