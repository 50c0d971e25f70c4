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
from ..latentsync.sample.progress import StepInfo, StepProgress, step_text

__all__ = ["ComfyExtension", "io", "ui", "override", "folder_paths", "model_management", "progress_reporter",
           "step_reporter", "window_reporter", "video_from_file", "managed", "load_for_compute", "compute_dtype"]



def progress_reporter():
    """A `progress(done, total)` callback driving ComfyUI's progress bar; each call is also a cancel point."""
    bar: list[ProgressBar] = []

    def report(done: int, total: int) -> None:
        if not bar:
            bar.append(ProgressBar(total))
        bar[0].update_absolute(done, total)
        model_management.throw_exception_if_processing_interrupted()

    return report


class _StepReporter(StepProgress):
    """ComfyUI's progress bar at every UNet step with a live preview of the window being denoised, made as core
    KSampler makes its previews (`latent_preview.get_previewer`: TAESD when models/vae_approx has it and
    --preview-method taesd asks for it, else the latent-to-RGB approximation of the SD latent space; none with
    --preview-method none, ComfyUI's default), and the window, step and time left as the node's progress text."""

    def __init__(self):
        import comfy.latent_formats
        import latent_preview

        self.bar: ProgressBar | None = None
        self.previewer = latent_preview.get_previewer(model_management.get_torch_device(),
                                                      comfy.latent_formats.SD15())
        context = _executing_context()
        self.node_id = getattr(context, "node_id", None)

    def __call__(self, done: int, total: int) -> None:
        model_management.throw_exception_if_processing_interrupted()

    def step(self, info: StepInfo) -> None:
        if self.bar is None:
            self.bar = ProgressBar(info.total)
        preview = None
        if self.previewer is not None and info.latents is not None:
            middle = len(info.latents) // 2  # the window's middle frame
            preview = self.previewer.decode_latent_to_preview_image("JPEG", info.latents[middle:middle + 1].float())
        self.bar.update_absolute(info.done, info.total, preview)
        _progress_text(step_text(info), self.node_id)

    def picture(self, image) -> None:
        """Show a PIL image (e.g. a finished window's face) with the bar where it is."""
        if self.bar is not None:
            self.bar.update_absolute(self.bar.current, self.bar.total, ("JPEG", image, 512))


def _executing_context():
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:  # an older ComfyUI: no text, the bar still moves
        return None
    return get_executing_context()


def _progress_text(text: str, node_id) -> None:
    """The text under the node's progress bar (PromptServer.send_progress_text; the editor shows it on the node)."""
    try:
        from server import PromptServer
    except ImportError:
        return
    server = getattr(PromptServer, "instance", None)
    if server is not None and node_id is not None and hasattr(server, "send_progress_text"):
        server.send_progress_text(text, node_id, getattr(server, "client_id", None))


def step_reporter() -> StepProgress:
    """A sampler `progress` (a `StepProgress`) for the nodes that sample: see `_StepReporter`."""
    return _StepReporter()


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

