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

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from ..catalogue import CATALOGUE
from ..checkpoint import CheckpointError, describe, read_checkpoint


class UpscaleModelError(CheckpointError):
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
    """Load a super-resolution checkpoint (.pth, .pt, .ckpt, .bin or .safetensors) as a spandrel descriptor.

    The file is read as data by the pack (`read_checkpoint`: safetensors or `torch.load(weights_only=True)`;
    TorchScript archives and pickles with code are refused) and only its tensors reach spandrel, whose own
    file loader would run TorchScript. Raises `FileNotFoundError` for a missing file and `UpscaleModelError`
    for a file that is not an RGB image upscaler, saying what the file looks like (a VAE, a whisper encoder, ...).
    """
    path = Path(path)
    descriptor = load_spandrel_descriptor(
        path, device, expected="a super-resolution model such as RealESRGAN_x2plus.pth",
        hint=f"For example, {CATALOGUE['upscaler'].where_to_get()}", kind="an image super-resolution model",
        short="an upscaler")
    return check_upscale_model(descriptor, path.name)


def load_spandrel_descriptor(path: str | Path, device: str | torch.device, *, expected: str, hint: str, kind: str,
                             short: str, registry: Any = None, state_check: Callable[[dict], None] | None = None,
                             error: type[CheckpointError] = UpscaleModelError) -> Any:
    """A spandrel descriptor for the model file at `path`, read as data only (see `load_upscale_model`).

    `expected`/`hint` name the wanted file and where to get it, `kind`/`short` what a loader accepts ("an image
    super-resolution model", "an upscaler") for the messages; `registry` is a spandrel `ArchRegistry` (default:
    spandrel's own); `state_check(state)` may refuse a canonical state dict before spandrel sees it.
    """
    path = Path(path)
    payload = read_checkpoint(path, expected, hint, error=error)
    spandrel = import_spandrel()
    if not isinstance(payload, dict):
        raise error(f"{path.name} holds {describe(payload)}, not the state dict of {short}")
    state = spandrel.canonicalize_state_dict(payload)
    if state_check is not None:
        state_check(state)
    loader = spandrel.ModelLoader(device=device) if registry is None else spandrel.ModelLoader(device, registry)
    try:
        return loader.load_from_state_dict(state)
    except spandrel.UnsupportedModelError as exc:
        raise error(f"{path.name} is not {kind}: it looks like {describe(payload)}") from exc
    except Exception as exc:
        # Detection is by key names; a file whose names match but whose shapes do not fails here.
        raise error(f"{path.name} has the key names of {short} but does not load as one "
                    f"({type(exc).__name__}: {exc}); is the file truncated or edited?") from exc


def check_upscale_model(model: Any, name: str = "the model") -> UpscaleModel:
    """Return `model` if it can upscale RGB frames (a spandrel `ImageModelDescriptor` or alike), else raise."""
    kind = type(model).__name__
    if kind == "MaskedImageModelDescriptor":
        raise UpscaleModelError(f"{name} is an inpainting model ({arch_name(model)}), not an upscaler")
    if not callable(model) or not isinstance(getattr(model, "model", None), torch.nn.Module):
        raise UpscaleModelError(f"{name} is a {kind}, not an upscale model (expected a spandrel "
                                "ImageModelDescriptor, as ComfyUI's Load Upscale Model gives)")
    scale = getattr(model, "scale", None)
    if not isinstance(scale, int) or scale < 1:
        raise UpscaleModelError(f"{name} has no usable integer scale (got {scale!r})")
    for attr in ("input_channels", "output_channels"):
        channels = getattr(model, attr, 3)
        if channels != 3:
            raise UpscaleModelError(f"{name} ({arch_name(model)}) has {channels} {attr.split('_')[0]} channels; "
                                    "only RGB (3-channel) models can upscale video frames")
    return model


def model_summary(model: UpscaleModel) -> dict:
    """JSON-able facts about a model for logs and CLI output."""
    return {"architecture": arch_name(model), "scale": int(model.scale),
            "parameters": sum(p.numel() for p in model.model.parameters()),
            "tags": list(getattr(model, "tags", [])), "supports_half": bool(getattr(model, "supports_half", True))}


def arch_name(model: Any) -> str:
    """The architecture's name as spandrel gives it (\"ESRGAN\", \"GFPGAN\"), else the module's class name."""
    arch = getattr(model, "architecture", None)
    name = getattr(arch, "name", None) or getattr(arch, "id", None)
    return str(name or type(getattr(model, "model", model)).__name__)
