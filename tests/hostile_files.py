"""Model files that run code when opened the unsafe way: what a stranger could put on a model site.

- `write_torchscript`: a TorchScript archive whose `__setstate__` (run by `torch.jit.load`, and by loaders that
  hand `.pt` files to it) overwrites the first bytes of `target` through `torch.from_file(shared=True)`.
- `write_reduce_pickle`: a pickle whose `__reduce__` truncates `target` when unpickled, as a plain pickle
  (`zip=False`) or inside a `torch.save` zip.
Either leaves `target` changed if any loader ever runs it; `tests/test_hostile_files.py` proves both do harm when
opened unsafely, then that no loader of the pack opens them so.
"""
from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import torch

KINDS = ("torchscript", "pickle", "pickle-in-zip")
EXTENSIONS = (".pt", ".pth", ".ckpt", ".bin", ".model")


class _Hostile(torch.nn.Module):
    def __init__(self, target: str):
        super().__init__()
        self.target = target

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.target = state[0]
        written = torch.from_file(state[0], True, 8, dtype=torch.uint8).fill_(88)
        self.training = bool(written.sum() > 0)  # uses the result, so the write is not optimised away

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _Truncate:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.truncate, (self.target, 0))


def write_torchscript(path: Path, target: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's deprecation notice
        torch.jit.save(torch.jit.script(_Hostile(str(target))), str(path))
    return path


def write_reduce_pickle(path: Path, target: Path, zip: bool = False) -> Path:
    payload = {"state_dict": {"conv.weight": torch.zeros(1)}, "hook": _Truncate(str(target))}
    if zip:
        torch.save(payload, path)
    else:
        with open(path, "wb") as file:
            pickle.dump(payload, file)
    return path


def write_hostile(path: Path, kind: str, target: Path) -> Path:
    if kind == "torchscript":
        return write_torchscript(path, target)
    return write_reduce_pickle(path, target, zip=kind == "pickle-in-zip")


def make_target(path: Path) -> Path:
    path.write_bytes(b"precious bytes")
    return path


def intact(target: Path) -> bool:
    return target.read_bytes() == b"precious bytes"
