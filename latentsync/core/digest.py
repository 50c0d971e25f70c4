"""Names for data by its content: a file's, a tensor's and a model's weights' SHA-256."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch


def file_sha256(path: str | Path, block: int = 1 << 22) -> str:
    """The SHA-256 of the whole file, read in blocks (memory does not grow with its size)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def tensor_digest(*tensors: torch.Tensor, rows: int = 64) -> str:
    """A SHA-256 of the tensors' float32 values (32 hex digits; not of their shapes), read `rows` of the first
    dimension at a time (no float32 copy of a whole uint8 clip)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        tensor = torch.as_tensor(tensor).detach()
        for part in (tensor.split(rows) if tensor.ndim else [tensor]):
            digest.update(np.ascontiguousarray(part.to("cpu", torch.float32).numpy()).tobytes())
    return digest.hexdigest()[:32]


def weights_digest(module: torch.nn.Module) -> str:
    """Names the weights a module holds: a hash of its first and last parameters (cheap, and any two different
    checkpoints differ there)."""
    parameters = list(module.parameters())
    return tensor_digest(parameters[0], parameters[-1]) if parameters else "none"
