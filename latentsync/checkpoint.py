"""Opening model files as data, never as code: the one place the pack reads a checkpoint.

Model files come from strangers on the internet, so every loader of the pack reads its file here and nowhere
else. Two formats are read: safetensors, and PyTorch's `torch.save` files through
`torch.load(weights_only=True)`, which unpickles tensors, containers and numbers only (plus classes a caller
allows by name). Everything else is refused before a byte of it is interpreted, with one line that says what the
file is and that nothing was loaded:

- TorchScript archives: programs (their `__setstate__` runs on load), not weights;
- pickles that name a Python callable (a `__reduce__` payload, a pickled class): code, not data;
- empty, truncated or unknown files: "an interrupted download?" and where to get the right one.

`describe` gives the one guess at what a loaded file holds ("a whisper checkpoint", "a VAE", ...) that every
loader's error message uses.
"""
from __future__ import annotations

import pickle
import re
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Iterable

import torch

# file_format's answers, as a message names them.
FORMAT_NAMES = {"empty": "an empty file", "safetensors": "a safetensors file", "torchscript": "a TorchScript archive",
                "torch-zip": "a PyTorch checkpoint", "zip": "a zip archive", "broken-zip": "a truncated zip archive",
                "pickle": "a Python pickle",
                "onnx-or-other": "an ONNX model or another format"}


class CheckpointError(ValueError):
    """A model file that cannot be used; the message (one line) says what the file is and what was expected."""


def file_format(path: str | Path) -> str:
    """What kind of file `path` is, from its first bytes and (for zips) its member names, without unpickling.

    One of "empty", "safetensors", "torchscript", "torch-zip", "zip", "broken-zip", "pickle", "onnx-or-other".
    """
    path = Path(path)
    with open(path, "rb") as file:
        head = file.read(16)
    if not head:
        return "empty"
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] > 1:
        return "safetensors"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "broken-zip"  # a zip whose directory at the end is missing: truncated
        # torch.save writes <root>/data.pkl; torch.jit.save adds <root>/constants.pkl and <root>/code/.
        if any(name.endswith("/constants.pkl") or "/code/" in name for name in names):
            return "torchscript"
        return "torch-zip" if any(name.endswith("/data.pkl") for name in names) else "zip"
    if head[:1] == b"\x80":
        return "pickle"
    return "onnx-or-other"


def read_checkpoint(path: str | Path, expected: str, hint: str = "", *, mmap: bool = False,
                    allowed: Iterable[type] = (), error: type[CheckpointError] = CheckpointError) -> object:
    """The contents of a model file, read as data only (see `read_checkpoint_and_format`)."""
    return read_checkpoint_and_format(path, expected, hint, mmap=mmap, allowed=allowed, error=error)[0]


def read_checkpoint_and_format(path: str | Path, expected: str, hint: str = "", *, mmap: bool = False,
                               allowed: Iterable[type] = (),
                               error: type[CheckpointError] = CheckpointError) -> tuple[object, str]:
    """`(contents, file_format(path))` of a model file, read as data only: a dict of tensors for safetensors,
    else what `torch.load(weights_only=True)` returns (nested dicts/lists of tensors and numbers).

    `expected` names the file a loader wants ("the LatentSync UNet (latentsync_unet.pt)"), `hint` says where to
    get it; both end up in the messages. `mmap` maps zip checkpoints instead of reading them (large UNets);
    `allowed` lists classes (plain data classes of a library) that the unpickler may build besides tensors.
    Raises `FileNotFoundError` for a missing file and `error` (a `CheckpointError`) for everything else.
    """
    path = Path(path)
    tail = f"; expected {expected}" + (f". {hint}" if hint else "")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found{tail}")
    kind = file_format(path)
    if kind == "empty":
        raise error(f"{path} is empty (an interrupted download?); nothing was loaded{tail}")
    if kind == "torchscript":
        raise error(f"{path} is a TorchScript archive: a program, not weights, and it is never run; "
                              f"nothing was loaded{tail}")
    if kind == "safetensors":
        return _read_safetensors(path, tail, error), kind
    if kind == "broken-zip":
        raise error(f"{path} cannot be read: it looks truncated or corrupt (a zip archive without its directory; "
                    f"an interrupted download?); nothing was loaded{tail}")
    if kind == "zip":
        raise error(f"{path} is a zip archive but not a PyTorch checkpoint; "
                              f"nothing was loaded{tail}")
    if kind == "onnx-or-other":
        with open(path, "rb") as file:
            head = file.read(8)
        raise error(f"{path} is neither a safetensors nor a PyTorch checkpoint (it starts with "
                              f"{head!r}); nothing was loaded{tail}")
    return _torch_load(path, tail, error, mmap=mmap and kind == "torch-zip", allowed=tuple(allowed)), kind


def _read_safetensors(path: Path, tail: str, error: type[CheckpointError]) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            return {name: file.get_tensor(name) for name in file.keys()}
    except Exception as exc:  # safetensors raises its own exception type for every kind of damage
        raise error(f"{path} cannot be read as safetensors; it looks truncated or corrupt (an "
                              f"interrupted download?): {_first_line(exc)}; nothing was loaded{tail}") from exc


def _torch_load(path: Path, tail: str, error: type[CheckpointError], mmap: bool, allowed: tuple[type, ...]) -> object:
    try:
        with torch.serialization.safe_globals(list(allowed)), warnings.catch_warnings():
            # torch warns about pickles of other protocols before refusing or reading them; the outcome says it all.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found:
            raise error(
                f"{path} is a pickle that names Python code ({found.group(1)}) besides tensors; such files can "
                f"run code when opened, so it was not unpickled and nothing was loaded{tail}") from None
        if "Unsupported operand" in str(exc) or "weights only" in str(exc).lower():
            raise error(
                f"{path} is a pickle that is not a plain PyTorch checkpoint (it uses pickle operations that "
                f"build Python objects); it was not unpickled and nothing was loaded{tail}") from None
        raise error(f"{path} cannot be read; it looks truncated or corrupt: {_first_line(exc)}; "
                              f"nothing was loaded{tail}") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise error(f"{path} cannot be read as a PyTorch checkpoint; it looks truncated or corrupt (an "
                              f"interrupted download?): {_first_line(exc)}; nothing was loaded{tail}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


# What a state dict is, by the names of its tensors: (every needle must occur in some key, description).
_FAMILIES = (
    (("motion_modules",), "a 3D UNet with motion modules (AnimateDiff-style), not LatentSync's 13-channel one"),
    (("model.diffusion_model.",), "a whole Stable Diffusion checkpoint (UNet, VAE and text encoder)"),
    (("conv_in.weight", "down_blocks.", "up_blocks.", "time_embedding"), "a Stable Diffusion-style UNet"),
    (("quant_conv",), "a VAE (autoencoder)"),
    (("encoder.blocks.", "encoder.conv1.", "decoder.token_embedding"), "an openai-whisper model"),
    (("model.encoder.layers.",), "a Hugging Face transformers whisper/speech model"),
    (("netcnnaud", "netcnnlip"), "the SyncNet evaluation network (syncnet_v2.model)"),
    (("audio_encoder", "visual_encoder"), "LatentSync's StableSyncNet (stable_syncnet.pt)"),
    (("vgg.", "L2Norm3_3", "loc.", "conf."), "the S3FD face detector (sfd_face.pth)"),
    (("sincnet.",), "a pyannote segmentation model"),
    (("conv_first.",), "an ESRGAN-family super-resolution network"),
    (("body.0.",), "a super-resolution network (SRVGGNet / Real-ESRGAN family)"),
)


def describe(payload: object) -> str:
    """A short guess at what a loaded checkpoint holds, for error messages ("a VAE (autoencoder) with 248
    tensors"). Looks through the usual wrappers: `{"state_dict": ...}`, whisper's `{"dims", "model_state_dict"}`,
    `params_ema`/`params` of Real-ESRGAN files."""
    if not isinstance(payload, dict):
        return f"a {type(payload).__name__}, not a mapping of names to tensors"
    if "dims" in payload and isinstance(payload.get("model_state_dict"), dict):
        return "an openai-whisper checkpoint ({'dims', 'model_state_dict'})"
    for wrapper in ("state_dict", "params_ema", "params", "model"):
        inner = payload.get(wrapper)
        if isinstance(inner, dict) and inner:
            return f"{describe(inner)} under '{wrapper}'"
    keys = [str(key) for key, value in payload.items() if isinstance(value, torch.Tensor)]
    if not keys:
        shown = ", ".join(sorted(map(str, payload))[:6])
        return f"a mapping without tensors (keys: {shown})"
    conv_in = payload.get("conv_in.weight")
    if isinstance(conv_in, torch.Tensor) and conv_in.ndim >= 2 and conv_in.shape[1] == 13:
        return f"a LatentSync UNet (13 input channels) with {len(keys)} tensors"
    for needles, what in _FAMILIES:
        if all(any(needle in key for key in keys) for needle in needles):
            return f"{what} with {len(keys)} tensors"
    shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
    return f"an unknown network with {len(keys)} tensors (keys like {shown})"
