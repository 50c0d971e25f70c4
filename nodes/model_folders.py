"""The pack's model folders, registered with ComfyUI so `extra_model_paths.yaml` works for them too."""
from __future__ import annotations

import os

from ..latentsync.catalogue import MODEL_FOLDERS
from ._comfy import folder_paths

WEIGHT_EXTENSIONS = {".pt", ".pth", ".safetensors", ".ckpt", ".bin", ".onnx", ".model", ".gguf"}


def register_model_folders() -> None:
    """Add our folders after any the user configured, and filter the listings to weight files."""
    for key, subfolders in MODEL_FOLDERS.items():
        for sub in subfolders:
            folder_paths.add_model_folder_path(key, os.path.join(folder_paths.models_dir, sub))
        paths, extensions = folder_paths.folder_names_and_paths[key]
        folder_paths.folder_names_and_paths[key] = (paths, set(extensions) | WEIGHT_EXTENSIONS)
