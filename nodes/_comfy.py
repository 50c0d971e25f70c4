"""Every ComfyUI import of the pack lives here, so the rest of nodes/ reads as plain Python."""
from __future__ import annotations

import comfy.model_management as model_management
import folder_paths
import torch
from comfy.model_patcher import ModelPatcher
from comfy.utils import ProgressBar
from comfy_api.latest import ComfyExtension, io

__all__ = ["ComfyExtension", "io", "folder_paths", "model_management", "progress_reporter", "managed",
           "load_for_compute", "compute_dtype", "check_choices", "InvalidInput", "PRECISIONS"]

PRECISIONS = ["auto", "fp32", "fp16", "bf16"]


def progress_reporter():
    """A `progress(done, total)` callback driving ComfyUI's progress bar; each call is also a cancel point."""
    bar: list[ProgressBar] = []

    def report(done: int, total: int) -> None:
        if not bar:
            bar.append(ProgressBar(total))
        bar[0].update_absolute(done, total)
        model_management.throw_exception_if_processing_interrupted()

    return report


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
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if choice not in dtypes:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {choice!r}")
    return dtypes[choice]


class InvalidInput(ValueError):
    """A problem found by `validate_inputs`, raised rather than returned when `validate_inputs` takes several
    inputs: ComfyUI 0.3.75 repeats a returned message once per argument of `validate_inputs` (and flags each of
    those inputs), while an exception is reported once, on the node. The cost: ComfyUI's own checks of that node
    (a value over its max) are reported on the next try, once this problem is fixed."""


def check_choices(**choices: tuple[str, object]) -> bool:
    """For `validate_inputs`: ComfyUI 0.3.75 does not check V3 combo values itself, so a bad one (an API prompt,
    an old workflow) would only fail mid-run. `name=(value, options)`; True, or `InvalidInput` naming the first
    problem."""
    for name, (value, options) in choices.items():
        if value not in options:
            raise InvalidInput(f"{name} must be one of {', '.join(map(str, options))}, got {value!r}")
    return True
