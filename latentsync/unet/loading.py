"""Load a LatentSync UNet checkpoint strictly, or say plainly what the file is instead.

The reference loads with `strict=False`, so a wrong or damaged file silently leaves parts of the network at
their initialisation and the lips simply come out wrong. Here every key must be present, no key may be
extra, and every shape must match; otherwise nothing is loaded and the error names what the file looks like
(a Stable Diffusion UNet, a whisper model, a truncated download, a UNet of another size) and what was
expected.

Accepted files: the official `latentsync_unet.pt` (`{"state_dict": ..., "global_step": ...}`), a bare state
dict in a `.pt`/`.pth`/`.ckpt`, a `.safetensors` file with the same keys (its layer weights may be fp8, each
with an optional `<layer>.scale_weight` per output channel, as `convert --to fp8_e4m3fn` writes), or a LatentSync
`.gguf` (`gguf_files.py`). The format is recognised from the file's first bytes, not its name. The 40
`pos_encoder.pe` tables are persistent buffers, so official checkpoints carry them and they are demanded like any
other tensor. Packed weights (fp8, GGUF) stay packed in memory (`packed.py`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from . import quantize as unet_quantize
from ..catalogue import CATALOGUE
from ..checkpoint import CheckpointError, file_format, read_checkpoint_and_format
from ..core.options import Option
from .gguf_files import read_unet_gguf
from .model import LatentSyncUNet, build_unet
from .config import NAMED_CONFIGS, ConfigLike, UNetConfig, resolve_unet_config
from .packed import FP8, KINDS, Packed, pack_layers, place_packed

log = logging.getLogger(__name__)

# How the weights are held after loading. "none" keeps every tensor in `dtype` (or as a packed file stores them);
# the others replace the Linear/Conv2d layers of the loaded UNet (after the strict load, so that validation always
# sees the checkpoint's own shapes): torchao's int8/int4, or fp8 and GGUF's block formats (`packed.py`).
_QUANTIZERS: dict[str, Callable[[LatentSyncUNet], LatentSyncUNet]] = {
    "none": lambda unet: unet,
    "int8": lambda unet: unet_quantize.quantize_int8(unet),
    "int4": lambda unet: unet_quantize.quantize_int4(unet),
    **{kind: lambda unet, kind=kind: pack_layers(unet, kind) for kind in KINDS},
}
QUANTIZATIONS = tuple(_QUANTIZERS)
QUANTIZATION = Option("quantization", "none", "UNet weights: int8, int4 (CUDA, bf16), fp8 or GGUF Q8_0...Q4_0 (any "
                      "device); none: as the file holds them.", choices=QUANTIZATIONS)


EXPECTED = "latentsync_unet.pt from ByteDance/LatentSync-1.5 or -1.6"
WHERE_TO_GET = f"For 1.5: {CATALOGUE['unet_1.5'].where_to_get()}; for 1.6: {CATALOGUE['unet_1.6'].where_to_get()}"


class UNetCheckpointError(CheckpointError):
    """The file is not a LatentSync UNet for the chosen config; the message says what it seems to be."""


def load_unet(
    checkpoint: str | Path,
    config: ConfigLike,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    quantization: str = "none",
) -> LatentSyncUNet:
    """Build the UNet for `config` ("1.5", "1.6", a reference-format dict or JSON path) and load `checkpoint`.

    The module is built on the meta device and takes the file's tensors directly (`assign=True`), each
    converted to `dtype` (default: the file's own float precision; float32 for GGUF) on `device` one at a time,
    so a 1.3 B-parameter model never exists twice in memory. Packed weights (fp8, GGUF) stay packed and are
    unpacked into the activations' dtype layer by layer. Returns the module in eval mode without gradients.
    Raises `FileNotFoundError` for a missing file and `UNetCheckpointError` for any file that is not exactly
    this UNet.
    """
    _check_quantization(quantization)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    unet_config = resolve_unet_config(config)
    label = f"LatentSync {config}" if isinstance(config, str) and not config.endswith(".json") else "the given config"
    path = Path(checkpoint)
    state_dict, what = read_unet_file(path, config)
    unet = build_unet(unet_config, device="meta")
    expected = {name: tuple(tensor.shape) for name, tensor in unet.state_dict().items()}
    check_keys_and_shapes(path, what, state_dict, expected, unet_config, label)
    packed = {name: value for name, value in state_dict.items() if isinstance(value, Packed)}
    if packed and quantization != "none":
        kinds = sorted({value.kind for value in packed.values()})
        raise UNetCheckpointError(f"{path} already holds packed weights ({', '.join(kinds)}); load it with "
                                  f"quantization none, or quantize the original checkpoint to {quantization}")
    if dtype is None:
        floats = [value.dtype for value in state_dict.values() if isinstance(value, Tensor)]
        dtype = max(set(floats), key=floats.count) if floats else torch.float32
    place_packed(unet, {name: state_dict.pop(name) for name in packed}, device)

    tensors = {name: _owned_copy(state_dict.pop(name), device, dtype) for name in expected if name not in packed}
    del state_dict
    missing, unexpected = unet.load_state_dict(tensors, strict=False, assign=True)
    left = [name for name in missing if name.rpartition(".")[0] + ".weight" not in packed]
    if left or unexpected:  # cannot happen after the check above; say so loudly if it ever does
        raise UNetCheckpointError(f"{path}: internal error placing the weights ({left[:3]}, {unexpected[:3]})")
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
    """The tensors of a float checkpoint file and a short description of its layout, unvalidated.

    `.pt` files are memory-mapped where possible, so tensors are paged in only as they are used.
    """
    path = Path(path)
    payload, kind = read_checkpoint_and_format(path, EXPECTED, WHERE_TO_GET, mmap=True, error=UNetCheckpointError)
    if kind == "safetensors":
        return payload, "a safetensors file"
    return _unwrap(path, payload)


def read_unet_file(path: str | Path, config: ConfigLike | None = None) -> tuple[dict[str, Tensor | Packed], str]:
    """As `read_state_dict`, for every file `load_unet` takes: packed weights (a GGUF file's, or fp8 with their
    scales) come as `Packed`. A GGUF file made for the other named version than `config` is refused."""
    path = Path(path)
    if path.is_file() and file_format(path) == "gguf":
        state, info = read_unet_gguf(path, EXPECTED, WHERE_TO_GET, UNetCheckpointError)
        version = info["version"]
        if isinstance(config, str) and config in NAMED_CONFIGS and version in NAMED_CONFIGS and version != config:
            raise UNetCheckpointError(f"{path} is the LatentSync {version} UNet (its metadata says so) but was loaded "
                                      f"as {config}; choose version {version} (or auto)")
        return state, f"a GGUF file ({info['format']}, LatentSync {version})"
    state, what = read_state_dict(path)
    scales = {name for name in state if name.endswith(".scale_weight")}
    fp8 = {name: tensor for name, tensor in state.items() if tensor.dtype in FP8.values()}
    for name, tensor in fp8.items():
        scale = state.pop(name.removesuffix("weight") + "scale_weight", None)
        kind = next(kind for kind, dtype in FP8.items() if dtype == tensor.dtype)
        scale = torch.ones(tensor.shape[0]) if scale is None else scale.float().reshape(-1).expand(tensor.shape[0])
        state[name] = Packed(kind, tensor.contiguous().view(torch.uint8), tuple(tensor.shape), scale.contiguous())
    stray = sorted(name for name in scales if name in state)
    if stray:
        raise UNetCheckpointError(f"{path}: {len(stray)} scales (e.g. {stray[0]}) belong to no fp8 weight; "
                                  "the file is damaged or not a LatentSync UNet; nothing was loaded")
    return state, what + (f" with {len(fp8)} fp8 weights" if fp8 else "")


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


def check_keys_and_shapes(path: Path, what: str, state_dict: dict[str, Tensor | Packed], expected: dict[str, tuple],
                           config: UNetConfig, label: str) -> None:
    shapes = {name: tuple(tensor.shape) for name, tensor in state_dict.items()}
    missing = [n for n in expected if n not in shapes]
    unexpected = [n for n in shapes if n not in expected]
    wrong = [n for n in expected if n in shapes and shapes[n] != expected[n]]
    not_float = [n for n in expected if isinstance(state_dict.get(n), Tensor) and not state_dict[n].is_floating_point()]
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
