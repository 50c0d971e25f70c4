"""LatentSync UNets as GGUF files: written by `convert`, read by `load_unet`.

A file holds the UNet's state dict under the official key names. Layer weights are stored as `packed.pack`
decides (the chosen block format, finer at the sensitive levels, Q8_0 or F16 where a size does not fit), everything else as F32. Metadata:

    general.architecture     "latentsync" (any other architecture is refused by name)
    latentsync.version       "1.5", "1.6" or "custom"
    latentsync.config        the reference-format UNet config, as JSON
    latentsync.resolution    the face crop size in pixels
    latentsync.format        the block format asked for ("Q4_K")
    latentsync.shape.<name>  the torch shape of a weight stored flat: GGML's blocks run along a tensor's last
                             dimension, which a 3x3 convolution's holds only 3 values of

The file is read by `checkpoint.read_gguf` (data only: a GGUF file has no way to hold code).
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ..checkpoint import CheckpointError, read_gguf
from . import ggml
from .config import UNetConfig
from .packed import Packed, pack, packs

ARCHITECTURE = "latentsync"
FLOAT_KINDS = {"F32": np.float32, "F16": np.float16}


def write_unet_gguf(tensors: dict[str, Tensor], path: str | Path, kind: str, *, config: UNetConfig,
                    version: str, resolution: int, progress: Callable[[int, int], None] | None = None) -> dict:
    """Write `tensors` (a float state dict) to `path` with layer weights in `kind` (a `ggml.FORMATS` name).
    Returns how many tensors went into each storage ({"Q4_K": 250, "Q8_0": 2, "F32": 600})."""
    import gguf

    writer = gguf.GGUFWriter(str(path), ARCHITECTURE)
    writer.add_name(f"LatentSync {version} UNet {kind}")
    writer.add_string(f"{ARCHITECTURE}.version", version)
    writer.add_string(f"{ARCHITECTURE}.config", json.dumps(asdict(config)))
    writer.add_uint32(f"{ARCHITECTURE}.resolution", int(resolution))
    writer.add_string(f"{ARCHITECTURE}.format", kind)
    counts: dict[str, int] = {}
    for number, (name, tensor) in enumerate(tensors.items()):
        if packs(name, tensor):
            stored = pack(tensor, kind, name)
            data = stored.data.cpu().numpy()
            if stored.kind == "F16":
                writer.add_tensor(name, data.view(np.float16))
            else:
                writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=gguf.GGMLQuantizationType[stored.kind])
            writer.add_array(f"{ARCHITECTURE}.shape.{name}", list(stored.shape))
            counts[stored.kind] = counts.get(stored.kind, 0) + 1
        else:
            writer.add_tensor(name, tensor.detach().float().cpu().numpy())
            counts["F32"] = counts.get("F32", 0) + 1
        if progress is not None:
            progress(number + 1, 2 * len(tensors))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return counts


def read_unet_gguf(path: str | Path, expected: str, hint: str,
                   error: type[CheckpointError]) -> tuple[dict[str, Tensor | Packed], dict]:
    """The state dict of a LatentSync GGUF file (layer weights as `Packed`, in memory of their own) and its
    metadata ({"version", "config", "resolution", "format"}). Another model's GGUF, or a tensor type this
    reader has no code for, is `error` naming what the file holds."""
    metadata, tensors = read_gguf(path, expected, hint, error=error)
    architecture = metadata.get("general.architecture")
    if architecture != ARCHITECTURE:
        name = metadata.get("general.name")
        raise error(f"{path} is a GGUF file of a {architecture or 'unnamed'} model"
                    + (f" ({name})" if name else "") + f" with {len(tensors)} tensors, not a LatentSync UNet; "
                    f"nothing was loaded; expected {expected}. {hint}")
    state: dict[str, Tensor | Packed] = {}
    for tensor in tensors:
        shape = tuple(int(n) for n in metadata.get(f"{ARCHITECTURE}.shape.{tensor.name}", tensor.shape))
        if tensor.kind in FLOAT_KINDS:
            values = torch.from_numpy(np.array(tensor.data, dtype=FLOAT_KINDS[tensor.kind]))
            state[tensor.name] = values.float().reshape(shape)
        elif tensor.kind in ggml.FORMATS:
            blocks = torch.from_numpy(np.array(tensor.data, dtype=np.uint8)).reshape(-1, ggml.FORMATS[tensor.kind].size)
            state[tensor.name] = Packed(tensor.kind, blocks, shape)
        else:
            raise error(f"{path}: tensor {tensor.name} is of GGUF type {tensor.kind}, which this loader does not "
                        f"read (it reads F32, F16, {', '.join(ggml.FORMATS)}); convert the UNet again with "
                        f"`python -m latentsync convert`; nothing was loaded")
    config = metadata.get(f"{ARCHITECTURE}.config")
    info = {"version": metadata.get(f"{ARCHITECTURE}.version"), "config": json.loads(config) if config else None,
            "resolution": metadata.get(f"{ARCHITECTURE}.resolution"), "format": metadata.get(f"{ARCHITECTURE}.format")}
    return state, info
