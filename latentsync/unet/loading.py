"""Load a LatentSync UNet checkpoint strictly, or say plainly what the file is instead.

The reference loads with `strict=False`, so a wrong or damaged file silently leaves parts of the network at
their initialisation and the lips simply come out wrong. Here every key must be present, no key may be
extra, and every shape must match; otherwise nothing is loaded and the error names what the file looks like
(a Stable Diffusion UNet, a whisper model, a truncated download, a UNet of another size) and what was
expected.

Accepted files: the official `latentsync_unet.pt` (`{"state_dict": ..., "global_step": ...}`), a bare state
dict in a `.pt`/`.pth`/`.ckpt`, or a `.safetensors` file with the same keys. The format is recognised from
the file's first bytes, not its name. The 40 `pos_encoder.pe` tables are persistent buffers, so official
checkpoints carry them and they are demanded like any other tensor.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from . import quantize as unet_quantize
from ..catalogue import CATALOGUE
from ..checkpoint import CheckpointError, read_checkpoint_and_format
from ..core.options import Option
from .model import LatentSyncUNet, build_unet
from .config import ConfigLike, UNetConfig, resolve_unet_config

log = logging.getLogger(__name__)

# How the weights are held after loading. "none" keeps every tensor in `dtype`; weight-only int8/int4 will be
# functions here that replace the Linear/Conv2d layers of the loaded UNet (after the strict load, so that
# validation always sees the checkpoint's own shapes).
_QUANTIZERS: dict[str, Callable[[LatentSyncUNet], LatentSyncUNet]] = {
    "none": lambda unet: unet,
    "int8": lambda unet: unet_quantize.quantize_int8(unet),
    "int4": lambda unet: unet_quantize.quantize_int4(unet),
}
QUANTIZATIONS = tuple(_QUANTIZERS)
QUANTIZATION = Option("quantization", "none", "UNet weights: none, int8 (CPU or CUDA) or int4 (CUDA, with "
                      "dtype bf16) to save memory.", choices=QUANTIZATIONS)


EXPECTED = "latentsync_unet.pt from ByteDance/LatentSync-1.5 or -1.6"
WHERE_TO_GET = f"For 1.5: {CATALOGUE['unet_1.5'].where_to_get()}; for 1.6: {CATALOGUE['unet_1.6'].where_to_get()}"


class UNetCheckpointError(CheckpointError):
    """The file is not a LatentSync UNet for the chosen config; the message says what it seems to be."""


def load_unet(
    checkpoint: str | Path,
    config: ConfigLike,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    quantization: str = "none",
) -> LatentSyncUNet:
    """Build the UNet for `config` ("1.5", "1.6", a reference-format dict or JSON path) and load `checkpoint`.

    The module is built on the meta device and takes the file's tensors directly (`assign=True`), each
    converted to `dtype` on `device` one at a time, so a 1.3 B-parameter model never exists twice in memory.
    Returns the module in eval mode without gradients. Raises `FileNotFoundError` for a missing file and
    `UNetCheckpointError` for any file that is not exactly this UNet.
    """
    _check_quantization(quantization)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    unet_config = resolve_unet_config(config)
    label = f"LatentSync {config}" if isinstance(config, str) and not config.endswith(".json") else "the given config"
    path = Path(checkpoint)
    state_dict, what = read_state_dict(path)
    unet = build_unet(unet_config, device="meta")
    expected = {name: tuple(tensor.shape) for name, tensor in unet.state_dict().items()}
    _check_keys_and_shapes(path, what, state_dict, expected, unet_config, label)

    tensors = {}
    for name in expected:
        tensors[name] = _owned_copy(state_dict.pop(name), device, dtype)
    del state_dict
    unet.load_state_dict(tensors, strict=True, assign=True)
    unet.eval().requires_grad_(False)
    return quantize_unet(unet, quantization)


def quantize_unet(unet: LatentSyncUNet, quantization: str) -> LatentSyncUNet:
    """Apply one of `QUANTIZATIONS` to a loaded UNet ("none" returns it unchanged)."""
    _check_quantization(quantization)
    return _QUANTIZERS[quantization](unet)


def _check_quantization(quantization: str) -> None:
    if quantization not in _QUANTIZERS:
        raise ValueError(f"unknown UNet quantization {quantization!r}; available: {', '.join(QUANTIZATIONS)}")


def _owned_copy(tensor: Tensor, device: torch.device | str, dtype: torch.dtype) -> Tensor:
    """`tensor` in `dtype` on `device`, in memory of its own.

    Read tensors may be views of a memory-mapped file: kept as weights, they would crash the process
    (SIGBUS) if the file were overwritten while loaded, and safetensors' views sit at unaligned offsets,
    which send CPU kernels down slower paths with different rounding.
    """
    converted = tensor.to(device=device, dtype=dtype).contiguous()
    if converted.data_ptr() == tensor.data_ptr():
        converted = converted.clone()
    return converted


def read_state_dict(path: str | Path) -> tuple[dict[str, Tensor], str]:
    """The tensors of a checkpoint file and a short description of its layout, unvalidated.

    `.pt` files are memory-mapped where possible, so tensors are paged in only as they are used.
    """
    path = Path(path)
    payload, kind = read_checkpoint_and_format(path, EXPECTED, WHERE_TO_GET, mmap=True, error=UNetCheckpointError)
    if kind == "safetensors":
        return payload, "a safetensors file"
    return _unwrap(path, payload)


def _unwrap(path: Path, payload: object) -> tuple[dict[str, Tensor], str]:
    if isinstance(payload, dict) and "dims" in payload and "model_state_dict" in payload:
        raise UNetCheckpointError(
            f"{path} is a whisper checkpoint ({{'dims', 'model_state_dict'}}; dims {payload['dims']}), the audio "
            "encoder; expected the LatentSync UNet (latentsync_unet.pt). Load it as the audio model instead.")
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        step = payload.get("global_step")
        log.info("%s: LatentSync training checkpoint, global_step %s", path.name, step)
        what = f"a PyTorch checkpoint {{'state_dict'{', global_step ' + str(step) if step is not None else ''}}}"
        state_dict = payload["state_dict"]
    elif isinstance(payload, dict) and payload and all(isinstance(v, Tensor) for v in payload.values()):
        what, state_dict = "a PyTorch state dict", payload
    else:
        shown = sorted(map(str, payload))[:8] if isinstance(payload, dict) else type(payload).__name__
        raise UNetCheckpointError(
            f"{path} is a PyTorch file holding {shown}, not a state dict; expected latentsync_unet.pt "
            "({'state_dict': ..., 'global_step': ...}) or a bare UNet state dict")
    odd = [name for name, value in state_dict.items() if not isinstance(value, Tensor)]
    if odd:
        raise UNetCheckpointError(
            f"{path}: state_dict entries {odd[:5]} are not tensors; the file is not a UNet checkpoint")
    return dict(state_dict), what


def _check_keys_and_shapes(path: Path, what: str, state_dict: dict[str, Tensor], expected: dict[str, tuple],
                           config: UNetConfig, label: str) -> None:
    shapes = {name: tuple(tensor.shape) for name, tensor in state_dict.items()}
    missing = [n for n in expected if n not in shapes]
    unexpected = [n for n in shapes if n not in expected]
    wrong = [n for n in expected if n in shapes and shapes[n] != expected[n]]
    not_float = [n for n in expected if n in state_dict and not state_dict[n].is_floating_point()]
    if not (missing or unexpected or wrong or not_float):
        return
    problems = []
    if wrong:
        shown = "; ".join(f"{n} is {list(shapes[n])} in the file, {list(expected[n])} expected" for n in wrong[:3])
        problems.append(f"{len(wrong)} tensors have other shapes ({shown})")
    if missing:
        problems.append(f"{len(missing)} expected tensors are missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} tensors are not part of this UNet (e.g. {', '.join(unexpected[:3])})")
    if not_float:
        dtypes = sorted({str(state_dict[n].dtype) for n in not_float})
        problems.append(f"{len(not_float)} tensors are not floating point ({', '.join(dtypes)}; a quantized file?)")
    raise UNetCheckpointError(
        f"{path} is not a LatentSync UNet for {label}. The file is {what} with {len(shapes)} tensors and looks "
        f"like {_identify(shapes)}. Expected {_summarise(config)} ({len(expected)} tensors). Differences: "
        + "; ".join(problems) + ". Nothing was loaded.")


def _widths(shapes: dict[str, tuple]) -> tuple[int, ...]:
    widths, index = [], 0
    while f"down_blocks.{index}.resnets.0.conv1.weight" in shapes:
        widths.append(shapes[f"down_blocks.{index}.resnets.0.conv1.weight"][0])
        index += 1
    return tuple(widths)


def _summarise(config: UNetConfig) -> str:
    motion = "with" if config.use_motion_module else "without"
    return (f"a UNet with block widths {config.block_out_channels}, {config.in_channels} input channels, audio "
            f"cross-attention width {config.cross_attention_dim} and {motion} motion modules")


def _identify(shapes: dict[str, tuple]) -> str:
    """A best guess at what a state dict is, from its key names and a few shapes."""
    keys = list(shapes)
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "a Stable Diffusion checkpoint in the original (LDM) layout"
    if "encoder.conv1.weight" in shapes and any(k.startswith("decoder.token_embedding") for k in keys):
        return "a whisper model (the audio encoder)"
    if "quant_conv.weight" in shapes or "encoder.conv_in.weight" in shapes:
        return "a VAE"
    if any(k.startswith(("audio_encoder.", "visual_encoder.")) for k in keys):
        return "a SyncNet"
    for prefix in ("module.", "unet.", "model."):
        if keys and all(k.startswith(prefix) for k in keys):
            return f"a state dict whose keys all start with {prefix!r} (a wrapper's prefix)"
    if "conv_in.weight" not in shapes or not _widths(shapes):
        return f"an unknown model (first keys: {', '.join(keys[:3])})"
    in_channels = shapes["conv_in.weight"][1]
    context = next((shape[1] for k, shape in shapes.items() if k.endswith("attn2.to_k.weight")), None)
    motion = any(".motion_modules." in k for k in keys)
    facts = (f"block widths {_widths(shapes)}, {in_channels} input channels, cross-attention width {context}, "
             f"{'with' if motion else 'no'} motion modules")
    if in_channels in (4, 9) and not motion:
        family = {768: "Stable Diffusion 1.x", 1024: "Stable Diffusion 2.x"}.get(context, "Stable Diffusion")
        return f"a {family} UNet in the diffusers layout ({facts})"
    if in_channels == 13 and not motion:
        return f"a LatentSync 1.0-style UNet ({facts}); use the 1.5 or 1.6 checkpoint"
    if in_channels == 13:
        return f"a LatentSync-style UNet of another size ({facts}): the config does not fit this checkpoint"
    return f"a UNet ({facts})"
