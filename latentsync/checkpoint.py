"""Opening model files as data, never as code: the one place the pack reads a checkpoint.

Model files come from strangers on the internet, so every loader of the pack reads its file here and nowhere
else. Two formats are read: safetensors, and PyTorch's `torch.save` files through
`torch.load(weights_only=True)`, which unpickles tensors, containers and numbers only (plus classes a caller
allows by name). Everything else is refused before a byte of it is interpreted, with one line that says what the
file is and that nothing was loaded:

- TorchScript archives: programs (their `__setstate__` runs on load), not weights;
- pickles that name a Python callable (a `__reduce__` payload, a pickled class): code, not data;
- empty, truncated or unknown files: "an interrupted download?" and where to get the right one;
- a file whose name promises another format ("x.safetensors" holding a PyTorch checkpoint): loaders pick their
  reader by that suffix (`torch.load` reads any `.safetensors` name as safetensors, and so does ComfyUI), so the
  message says what the file really is and what to rename it to.

`file_format` tells the formats apart by their bytes alone, ONNX included (`check_onnx` refuses any other file
before onnxruntime parses it). `describe` gives the one guess at what a loaded file holds ("a whisper
checkpoint", "a VAE", ...) that every loader's error message uses.
"""
from __future__ import annotations

import io
import json
import pickle
import pickletools
import re
import struct
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

# file_format's answers, as a message names them.
FORMAT_NAMES = {"empty": "an empty file", "safetensors": "a safetensors file", "torchscript": "a TorchScript archive",
                "torch-zip": "a PyTorch zip checkpoint", "zip": "a zip archive",
                "broken-zip": "a truncated zip archive",
                "torch-legacy": "a Python pickle (PyTorch legacy checkpoint)", "pickle": "a Python pickle",
                "onnx": "an ONNX model", "gguf": "a GGUF model", "unknown": "a file of no known model format"}
# The suffix each format goes by, for the rename hint.
SUFFIXES = {"safetensors": ".safetensors", "torch-zip": ".pt", "torch-legacy": ".pt", "pickle": ".pkl",
            "onnx": ".onnx", "gguf": ".gguf"}
# Suffixes that promise one format: readers (torch.load, ComfyUI, onnxruntime) choose how to parse by them.
_PROMISED = {".safetensors": "safetensors", ".sft": "safetensors", ".onnx": "onnx", ".gguf": "gguf"}
# torch.save's legacy (non-zip) format starts with a pickle of this number.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
# Bytes of a file parsed as pickle opcodes (protocol 0/1 pickles have no header to tell them by).
_PICKLE_BYTES_CHECKED = 1 << 16
# Top-level fields of an ONNX model walked at most (a model has tens: opset imports, metadata, functions).
_ONNX_FIELDS_CHECKED = 100_000


class CheckpointError(ValueError):
    """A model file that cannot be used; the message (one line) says what the file is and what was expected."""


def file_format(path: str | Path) -> str:
    """What kind of file `path` is, from its bytes (for zips, their member names), without unpickling anything.

    One of "empty", "safetensors", "torchscript", "torch-zip", "zip", "broken-zip", "torch-legacy" (torch.save's
    pickle format), "pickle" (of any protocol), "onnx", "gguf", "unknown".
    """
    path = Path(path)
    with open(path, "rb") as file:
        head = file.read(16)
    if not head:
        return "empty"
    if head.startswith(b"GGUF"):
        return "gguf"
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
    if is_onnx(path):
        return "onnx"
    return _pickle_format(path, head) or "unknown"


def _pickle_format(path: Path, head: bytes) -> str | None:
    """"torch-legacy", "pickle" or None: the file's first pickle, parsed opcode by opcode (never run).

    Protocols 2 to 5 announce themselves (0x80 and the protocol); protocol 0 and 1 pickles have no header, so their
    opcodes must parse up to the pickle's STOP, or to the end of the bytes looked at."""
    with open(path, "rb") as file:
        start = file.read(_PICKLE_BYTES_CHECKED)
    buffer, values, parsed = io.BytesIO(start), [], False
    try:
        for opcode, arg, _ in pickletools.genops(buffer):
            if opcode.name == "STOP":
                parsed = True
                break
            if opcode.name not in ("PROTO", "FRAME"):
                values.append(arg)
    except Exception:  # pickletools' ValueError for bytes that are no opcode, or a pickle longer than `start`
        parsed = len(start) == _PICKLE_BYTES_CHECKED == buffer.tell() and len(values) > 1
    announced = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
    if not (announced or parsed):
        return None
    return "torch-legacy" if parsed and values == [_TORCH_LEGACY_MAGIC] else "pickle"


def is_onnx(path: str | Path) -> bool:
    """Whether `path` has the structure of an ONNX model (protobuf `ModelProto`), without the onnx package.

    The top-level fields are walked by their tags: every wire type must be one protobuf writes (varint, 64-bit,
    length-delimited, 32-bit), every length must fit, and the last field must end where the file ends; the model's
    `ir_version` (field 1, a varint) and `graph` (field 7, length-delimited) must be there. A pickle, a zip, a
    truncated download or any other file fails within a few fields."""
    size = Path(path).stat().st_size
    seen = set()
    with open(path, "rb") as file:
        for _ in range(_ONNX_FIELDS_CHECKED):
            if file.tell() >= size:
                break
            tag = _varint(file)
            if tag is None or tag >> 3 == 0:
                return False
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                value = _varint(file)
                if value is None:
                    return False
                if field == 1 and not 1 <= value <= 1000:  # ir_version: 3 to 11 in the wild
                    return False
            elif wire in (1, 5):
                file.seek(8 if wire == 1 else 4, io.SEEK_CUR)
            elif wire == 2:
                length = _varint(file)
                if length is None:
                    return False
                file.seek(length, io.SEEK_CUR)
            else:  # 3 and 4 (groups) are not in ONNX's schema; 6 and 7 do not exist
                return False
            seen.add((field, wire))
            if len(seen) > 64:  # ModelProto has about a dozen fields
                return False
        return file.tell() == size and {(1, 0), (7, 2)} <= seen


def _varint(file) -> int | None:
    """A protobuf varint read from `file`, or None at the end of the file or after 10 bytes without an end."""
    value = 0
    for shift in range(0, 70, 7):
        byte = file.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
    return None


def what_it_is(path: str | Path, kind: str | None = None) -> str:
    """"PATH is WHAT", and where the name promises another format, "named SUFFIX: rename it to RIGHT"."""
    path = Path(path)
    kind = kind or file_format(path)
    text = f"{path} is {FORMAT_NAMES[kind]}"
    if misnamed(path, kind):
        text += f" named {path.suffix}" + (f": rename it to {SUFFIXES[kind]}" if kind in SUFFIXES else "")
    return text


def misnamed(path: str | Path, kind: str | None = None) -> bool:
    """Whether the name of `path` promises a format (.safetensors, .onnx, .gguf) and its bytes are another known
    one (an empty, truncated or unknown file is not misnamed, only damaged)."""
    path = Path(path)
    kind = kind or file_format(path)
    return _PROMISED.get(path.suffix.lower()) not in (None, kind) and kind not in ("empty", "broken-zip", "unknown")


def check_onnx(path: str | Path, hint: str = "", *, error: type[Exception] = CheckpointError) -> Path:
    """`path` if it is an ONNX model; else `error` with one line naming the file and what it is, so that
    onnxruntime never parses another file (a pickle renamed .onnx, an interrupted download)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found" + (f". {hint}" if hint else ""))
    kind = file_format(path)
    if kind == "onnx":
        return path
    if kind == "unknown":
        with open(path, "rb") as file:
            head = file.read(8)
        found = f"is not an ONNX model: its bytes (starting {head!r}) lack ONNX's structure (truncated or damaged?)"
    else:
        found = f"is {FORMAT_NAMES[kind]}, not an ONNX model"
    raise error(f"{path} {found}; nothing was loaded" + (f". {hint}" if hint else ""))


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
    if kind == "broken-zip":
        raise error(f"{path} cannot be read: it looks truncated or corrupt (a zip archive without its directory; "
                    f"an interrupted download?); nothing was loaded{tail}")
    if misnamed(path, kind):  # torch.load itself would read "x.safetensors" as safetensors, whatever it holds
        raise error(f"{what_it_is(path, kind)}; nothing was loaded{tail}")
    if kind == "safetensors":
        return _read_safetensors(path, tail, error), kind
    if kind == "zip":
        raise error(f"{path} is a zip archive but not a PyTorch checkpoint; "
                              f"nothing was loaded{tail}")
    if kind in ("onnx", "gguf"):
        raise error(f"{path} is {FORMAT_NAMES[kind]}, not a safetensors or PyTorch checkpoint; "
                    f"nothing was loaded{tail}")
    if kind == "unknown":
        with open(path, "rb") as file:
            head = file.read(8)
        raise error(f"{path} is neither a safetensors nor a PyTorch checkpoint (it starts with "
                              f"{head!r}); nothing was loaded{tail}")
    return _torch_load(path, tail, error, mmap=mmap and kind == "torch-zip", allowed=tuple(allowed)), kind


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of a GGUF file: its name, GGML type ("F32", "Q4_K", ...), shape in torch's order as stored, and
    its values (floats) or blocks (`[rows, bytes]` uint8), memory-mapped from the file."""

    name: str
    kind: str
    shape: tuple[int, ...]
    data: np.ndarray


def read_gguf(path: str | Path, expected: str, hint: str = "", *,
              error: type[CheckpointError] = CheckpointError) -> tuple[dict, list[GGUFTensor]]:
    """`(metadata, tensors)` of a GGUF file, parsed by the `gguf` package's reader: a header, key-value metadata
    (numbers, strings, arrays) and raw tensor bytes, nothing that runs. Any other file, or a truncated one, is
    `error` with one line naming what it is."""
    path = Path(path)
    tail = f"; expected {expected}" + (f". {hint}" if hint else "")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found{tail}")
    kind = file_format(path)
    if kind != "gguf":
        raise error(f"{what_it_is(path, kind)}, not a GGUF file; nothing was loaded{tail}")
    try:
        from gguf import GGUFReader

        reader = GGUFReader(path, "r")
        metadata = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
        tensors = [GGUFTensor(t.name, t.tensor_type.name, tuple(int(n) for n in reversed(t.shape)), t.data)
                   for t in reader.tensors]
    except ImportError as exc:
        raise ImportError("reading .gguf files needs the gguf package: run `pip install gguf` in ComfyUI's Python "
                          "environment") from exc
    except Exception as exc:  # the reader's ValueError/IndexError/struct.error for every kind of damage
        raise error(f"{path} cannot be read as GGUF; it looks truncated or corrupt (an interrupted download?): "
                    f"{_first_line(exc)}; nothing was loaded{tail}") from None
    return metadata, tensors


def file_metadata(path: str | Path) -> dict:
    """The metadata a safetensors header (`__metadata__`, strings) or a GGUF file (its key-value pairs) carries;
    {} for other formats or a file whose header cannot be read (its loader then says what is wrong)."""
    path = Path(path)
    kind = file_format(path) if path.is_file() else "missing"
    try:
        if kind == "safetensors":
            with open(path, "rb") as file:
                length = struct.unpack("<Q", file.read(8))[0]
                header = json.loads(file.read(min(length, 100 << 20)))
            return dict(header.get("__metadata__") or {})
        if kind == "gguf":
            return read_gguf(path, "a GGUF file")[0]
    except (CheckpointError, ValueError, OSError, struct.error):
        return {}
    return {}


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
        if "Invalid magic number" in str(exc):  # a pickle of tensors, but not through torch.save
            raise error(f"{path} is a Python pickle but not a PyTorch checkpoint (it lacks torch.save's header); "
                        f"nothing was loaded{tail}") from None
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
