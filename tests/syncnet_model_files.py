"""SyncNet-metric weight files in the official layout, written by tests (random or golden weights).

`syncnet_v2.model` and `sfd_face.pth` are plain `torch.save`d state dicts with bare keys, float32 (plus
int64 `num_batches_tracked` for SyncNet), as LatentSync's evaluation code reads them.
"""
from __future__ import annotations

import lzma
from pathlib import Path

import torch

from latentsync.score.s3fd import S3FDNet
from latentsync.score.syncnet import SyncNet

GOLDEN = "reference/syncnet/syncnet_golden.safetensors.xz"


def load_golden(xz_path: Path) -> dict[str, torch.Tensor]:
    """All tensors of `syncnet_golden.safetensors.xz` (weights as `weights.<key>`, fp16-exact)."""
    from safetensors.torch import load

    with lzma.open(xz_path) as fh:
        return load(fh.read())


def golden_syncnet_state(golden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The golden weights as the official file holds them: bare keys, float32, int64 counters."""
    return {key[len("weights."):]: (value.float() if value.is_floating_point() else value)
            for key, value in golden.items() if key.startswith("weights.")}


def write_syncnet_file(path: Path, state: dict[str, torch.Tensor] | None = None, seed: int = 0) -> Path:
    """A `syncnet_v2.model`; random (PyTorch default init) weights unless `state` is given."""
    if state is None:
        torch.manual_seed(seed)
        state = SyncNet().state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state), path)
    return path


def write_s3fd_file(path: Path, seed: int = 0) -> Path:
    """An `sfd_face.pth` with random weights (PyTorch default init; 90 MB)."""
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(S3FDNet().state_dict(), path)
    return path
