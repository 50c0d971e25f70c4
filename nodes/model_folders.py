"""The pack's model folders, registered with ComfyUI so `extra_model_paths.yaml` works for them too."""
from __future__ import annotations

import os

from ._comfy import folder_paths

WEIGHT_EXTENSIONS = {".pt", ".pth", ".safetensors", ".ckpt", ".bin", ".onnx", ".model"}

# key -> sub-folders of ComfyUI's models/ that hold it
FOLDERS = {
    "latentsync": ["latentsync"],
    "whisper": ["whisper", os.path.join("latentsync", "whisper")],
    "pyannote": ["pyannote", os.path.join("latentsync", "pyannote")],
    "insightface": ["insightface"],  # buffalo_l lives in insightface/models/buffalo_l/, as other packs expect
    "syncnet": ["syncnet", os.path.join("latentsync", "syncnet")],
}


def register_model_folders() -> None:
    """Add our folders after any the user configured, and filter the listings to weight files."""
    for key, subfolders in FOLDERS.items():
        for sub in subfolders:
            folder_paths.add_model_folder_path(key, os.path.join(folder_paths.models_dir, sub))
        paths, extensions = folder_paths.folder_names_and_paths[key]
        folder_paths.folder_names_and_paths[key] = (paths, set(extensions) | WEIGHT_EXTENSIONS)
