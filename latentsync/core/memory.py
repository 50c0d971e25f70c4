"""Checking that an allocation sized by the user's inputs fits, before making it.

A frame count or an output size typed into a widget can ask for more memory than the machine has; allocating
first would take the process down (or swap it to a crawl) instead of saying which input to lower. Callers
estimate the bytes of their largest allocation and call `check_fits` first.
"""
from __future__ import annotations

import os

import torch

DeviceLike = torch.device | str | None


class InsufficientMemoryError(ValueError):
    """A request that cannot fit in the memory there is; the message gives the numbers and the input to lower.

    A ValueError, not a MemoryError: nothing ran out yet, an input asked for too much (ComfyUI reports it as
    the node's error, and callers that catch bad inputs catch it too)."""


def available_bytes(device: DeviceLike = None) -> int:
    """Bytes that can still be allocated on `device` (default: the CPU's RAM).

    CUDA: the driver's free memory plus the blocks torch's allocator has cached but not handed out, which
    are free for this process although the driver counts them as used. Other devices: the host's RAM.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    return available_ram()


def available_ram() -> int:
    """Host RAM available without swapping (psutil; `sysconf` where psutil is missing)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(nbytes: int, what: str, lower: str, device: DeviceLike = None, *,
               available: int | None = None, error: type[InsufficientMemoryError] = InsufficientMemoryError) -> None:
    """Raise `error` unless `nbytes` fit in `available` (default: `available_bytes(device)`).

    `what` names the allocation ("the features of 864000 frames"), `lower` the inputs to change ("frames").
    """
    free = available_bytes(device) if available is None else int(available)
    if nbytes > free:
        raise error(f"{what} needs {format_bytes(nbytes)} of {_memory_name(device)} and only {format_bytes(free)} "
                    f"is available; lower {lower}")


def format_bytes(size: int | float) -> str:
    """Human-readable size: GiB from 128 MiB up, else MiB."""
    return f"{size / 2 ** 30:.2f} GiB" if size >= 2 ** 27 else f"{size / 2 ** 20:.1f} MiB"


def _memory_name(device: DeviceLike) -> str:
    device = torch.device(device) if device is not None else torch.device("cpu")
    return "RAM" if device.type == "cpu" else f"{device} memory"
