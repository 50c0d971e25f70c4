"""Super-resolution model files: loading through spandrel and checking that a model can upscale frames.

The Real-ESRGAN family is the target (RRDBNet `RealESRGAN_x4plus`/`x2plus`, SRVGGNetCompact
`realesr-animevideov3`/`realesr-general-x4v3`, official `.pth` files with `params_ema` or `params`), but any
RGB image model that spandrel recognises works. spandrel is used instead of realesrgan/basicsr, which no longer
import on current torchvision, and because ComfyUI's own `Load Upscale Model` returns a spandrel
`ImageModelDescriptor`: every function here also accepts one of those.

What the rest of the library needs from a model is small (`UpscaleModel`): `model(x)` maps `[B, 3, H, W]`
in 0-1 to `[B, 3, H*scale, W*scale]`, `.scale` is an int, and `.model` is the `nn.Module` to move and cast.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Protocol

import torch


class UpscaleModelError(ValueError):
    """A file or object that cannot be used as an image upscaler; the message says what it is instead."""


class UpscaleModel(Protocol):
    """The part of spandrel's `ImageModelDescriptor` that upscaling relies on."""

    scale: int
    model: torch.nn.Module

    def __call__(self, image: torch.Tensor) -> torch.Tensor: ...


def import_spandrel():
    try:
        import spandrel
    except ImportError as exc:
        raise ImportError("spandrel is not installed; run `pip install spandrel` (ComfyUI already ships it)") from exc
    return spandrel


def load_upscale_model(path: str | Path, device: str | torch.device = "cpu") -> UpscaleModel:
    """Load a super-resolution checkpoint (.pth, .pt, .ckpt or .safetensors) as a spandrel descriptor.

    Raises `FileNotFoundError` for a missing file and `UpscaleModelError` for a file that is not an RGB image
    upscaler, saying what the file looks like (a VAE, a whisper encoder, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no upscale model at {path}")
    spandrel = import_spandrel()
    loader = spandrel.ModelLoader(device=device)
    try:
        with warnings.catch_warnings():
            # spandrel tries TorchScript first for .pt files; torch's deprecation notice for that is not actionable.
            warnings.simplefilter("ignore", FutureWarning)
            state = loader.load_state_dict_from_file(path)
    except ValueError as exc:  # spandrel's "unsupported extension"
        raise UpscaleModelError(f"{path.name}: {exc}") from exc
    except Exception as exc:
        # torch.load raises several types for files that are not checkpoints (pickle, zip, EOF, restricted class).
        raise UpscaleModelError(f"{path.name} is not a checkpoint that can be read safely: "
                                f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise UpscaleModelError(f"{path.name} holds a {type(state).__name__}, not a state dict of an upscaler")
    try:
        descriptor = loader.load_from_state_dict(state)
    except spandrel.UnsupportedModelError as exc:
        raise UpscaleModelError(f"{path.name} is not an image super-resolution model: it looks like "
                                f"{describe_state_dict(state)}") from exc
    except Exception as exc:
        # Detection is by key names; a file whose names match but whose shapes do not fails here.
        raise UpscaleModelError(f"{path.name} has the key names of an upscaler but does not load as one "
                                f"({type(exc).__name__}: {exc}); is the file truncated or edited?") from exc
    return check_upscale_model(descriptor, path.name)


def check_upscale_model(model: Any, name: str = "the model") -> UpscaleModel:
    """Return `model` if it can upscale RGB frames (a spandrel `ImageModelDescriptor` or alike), else raise."""
    kind = type(model).__name__
    if kind == "MaskedImageModelDescriptor":
        raise UpscaleModelError(f"{name} is an inpainting model ({_arch_name(model)}), not an upscaler")
    if not callable(model) or not isinstance(getattr(model, "model", None), torch.nn.Module):
        raise UpscaleModelError(f"{name} is a {kind}, not an upscale model (expected a spandrel "
                                "ImageModelDescriptor, as ComfyUI's Load Upscale Model gives)")
    scale = getattr(model, "scale", None)
    if not isinstance(scale, int) or scale < 1:
        raise UpscaleModelError(f"{name} has no usable integer scale (got {scale!r})")
    for attr in ("input_channels", "output_channels"):
        channels = getattr(model, attr, 3)
        if channels != 3:
            raise UpscaleModelError(f"{name} ({_arch_name(model)}) has {channels} {attr.split('_')[0]} channels; "
                                    "only RGB (3-channel) models can upscale video frames")
    return model


def model_summary(model: UpscaleModel) -> dict:
    """JSON-able facts about a model for logs and CLI output."""
    return {"architecture": _arch_name(model), "scale": int(model.scale),
            "parameters": sum(p.numel() for p in model.model.parameters()),
            "tags": list(getattr(model, "tags", [])), "supports_half": bool(getattr(model, "supports_half", True))}


def describe_state_dict(state: dict) -> str:
    """A short guess at what a non-upscaler checkpoint is, for error messages."""
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        nested = [k for k, v in state.items() if isinstance(v, dict)]
        return f"a dict without tensors (keys: {_preview(list(state))}" + (
            f"; nested dicts under {_preview(nested)})" if nested else ")")
    keys = list(tensors)

    def has(*parts: str) -> bool:
        return all(any(part in k for k in keys) for part in parts)

    if has("motion_modules"):
        guess = "a LatentSync / AnimateDiff 3D UNet"
    elif has("down_blocks", "up_blocks", "time_embedding"):
        guess = "a diffusion UNet"
    elif has("quant_conv", "decoder.") or has("encoder.down_blocks", "decoder.up_blocks"):
        guess = "a VAE (autoencoder)"
    elif has("encoder.blocks.", "encoder.conv1.") or has("encoder.positional_embedding"):
        guess = "an openai-whisper audio encoder"
    elif has("audio_encoder", "visual_encoder") or has("face_encoder", "audio_encoder"):
        guess = "a SyncNet lip-sync scorer"
    elif has("conv_first.") or has("body.0."):
        guess = "a super-resolution network, but one spandrel cannot identify (missing or renamed layers)"
    else:
        guess = "an unknown network"
    values = sum(v.numel() for v in tensors.values())
    return f"{guess} ({len(tensors)} tensors, {_count(values)} values; keys like {_preview(keys)})"


def _arch_name(model: Any) -> str:
    arch = getattr(model, "architecture", None)
    name = getattr(arch, "name", None) or getattr(arch, "id", None)
    return str(name or type(getattr(model, "model", model)).__name__)


def _preview(keys: list[str], count: int = 3) -> str:
    shown = ", ".join(keys[:count])
    return shown + (", ..." if len(keys) > count else "")


def _count(values: int) -> str:
    if values < 1000:
        return str(values)
    exponent = min(int(math.log10(values)) // 3, 3)
    return f"{values / 1000 ** exponent:.1f}{' kMG'[exponent]}"
