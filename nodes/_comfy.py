"""Every ComfyUI import of the pack lives here, so the rest of nodes/ reads as plain Python."""
from __future__ import annotations

import comfy.model_management as model_management
import folder_paths
from comfy.utils import ProgressBar
from comfy_api.latest import ComfyExtension, io

__all__ = ["ComfyExtension", "io", "folder_paths", "model_management", "progress_reporter"]


def progress_reporter():
    """A `progress(done, total)` callback driving ComfyUI's progress bar; each call is also a cancel point."""
    bar: list[ProgressBar] = []

    def report(done: int, total: int) -> None:
        if not bar:
            bar.append(ProgressBar(total))
        bar[0].update_absolute(done, total)
        model_management.throw_exception_if_processing_interrupted()

    return report
