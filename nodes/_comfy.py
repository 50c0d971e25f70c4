"""Every ComfyUI import of the pack lives here, so the rest of nodes/ reads as plain Python.

The V3 API comes from a pinned version, `comfy_api.v0_0_2` (the newest that 0.3.75 offers besides `latest`, which
is documented to change without warning). In 0.3.75 it re-exports `latest`'s `io` and `ui`, so the pin buys a
name that later releases keep serving, not yet frozen behaviour; the tests run against 0.3.75 itself."""
from __future__ import annotations

import comfy.model_management as model_management
import folder_paths
import torch
from comfy.model_patcher import ModelPatcher
from comfy.utils import ProgressBar
from comfy_api.v0_0_2 import ComfyExtension, InputImpl, io, ui
from typing_extensions import override  # as core V3 nodes import it (torch depends on typing_extensions)

from ..latentsync.core.precision import DTYPE, DTYPES

__all__ = ["ComfyExtension", "io", "ui", "override", "folder_paths", "model_management", "progress_reporter",
           "window_reporter", "video_from_file", "managed", "load_for_compute", "compute_dtype"]



def progress_reporter():
    """A `progress(done, total)` callback driving ComfyUI's progress bar; each call is also a cancel point."""
    bar: list[ProgressBar] = []

    def report(done: int, total: int) -> None:
        if not bar:
            bar.append(ProgressBar(total))
        bar[0].update_absolute(done, total)
        model_management.throw_exception_if_processing_interrupted()

    return report


def window_reporter(total: int):
    """A `report(done, preview=None)` callback: the progress bar at `done` of `total` with an optional preview
    (a PIL image, e.g. the last generated face), then a cancel point."""
    bar = ProgressBar(max(int(total), 1))

    def report(done: int, preview=None) -> None:
        bar.update_absolute(min(done, bar.total), None, ("JPEG", preview, 512) if preview is not None else None)
        model_management.throw_exception_if_processing_interrupted()

    return report


def video_from_file(path) -> object:
    """A core VIDEO backed by the file `path` (what Load Video gives and Save Video takes)."""
    return InputImpl.VideoFromFile(str(path))


def managed(model: torch.nn.Module) -> ModelPatcher:
    """Wrap a model so ComfyUI's model management loads it to the compute device and offloads it."""
    return ModelPatcher(model, load_device=model_management.get_torch_device(),
                        offload_device=model_management.unet_offload_device())


def load_for_compute(patcher: ModelPatcher) -> torch.device:
    """Bring a managed model onto its compute device (evicting others as needed); returns the device."""
    model_management.load_models_gpu([patcher])
    return patcher.load_device


def compute_dtype(choice: str, device: torch.device) -> torch.dtype:
    """`auto` is fp16 where ComfyUI would run fp16 (CUDA), else fp32; otherwise the named dtype."""
    if choice == "auto":
        return torch.float16 if model_management.should_use_fp16(device) else torch.float32
    return DTYPES[DTYPE.check(choice, "precision")]

