"""Load LatentSync UNet node: official checkpoints, unmodified, in the precision and quantization asked for, and
the files `python -m latentsync convert` writes (GGUF, fp8 safetensors) from models/latentsync/ or models/unet/."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

from ..latentsync.core.precision import DTYPE
from ..latentsync.unet.compile import COMPILE, compile_mode, compile_unet
from ..latentsync.unet.files import OFFICIAL, VERSIONS, choose_config, download_official, where_to_get
from ..latentsync.unet.loading import QUANTIZATION, load_unet
from ..latentsync.unet.packed import parameter_count
from ..latentsync.unet.quantize import weight_bytes
from ._comfy import compute_dtype, folder_paths, io, managed, model_management, override
from .base import LatentSyncNode, option_input
from .data_types import LatentSyncModel

DOWNLOAD = {f"download {version}": version for version in OFFICIAL}
OTHER_MODELS = ("whisper/", "pyannote/")  # sub-folders of models/latentsync that hold other models
UNET_SUFFIXES = (".gguf", ".safetensors", ".pt")  # LatentSync files in ComfyUI's unet (diffusion_models) folders


@dataclass
class LoadedUNet:
    """What the sampler needs: the managed UNet and the face resolution it was trained at."""

    patcher: object  # ComfyUI ModelPatcher around latentsync.unet.model.LatentSyncUNet
    resolution: int
    source: str


def unet_files() -> list[str]:
    """models/latentsync/'s UNet files, then the files with "latentsync" in their name in ComfyUI's unet and
    diffusion_models folders (where users of ComfyUI-GGUF keep .gguf files)."""
    names = [n for n in folder_paths.get_filename_list("latentsync")
             if not n.replace("\\", "/").startswith(OTHER_MODELS)]
    return names + [n for n in _diffusion_model_files() if n not in names]


def _diffusion_model_files() -> dict[str, str]:
    """{name relative to its folder: full path} of LatentSync files in ComfyUI's diffusion model folders."""
    found = {}
    for folder in folder_paths.get_folder_paths("diffusion_models"):
        for root, _, files in os.walk(folder, followlinks=True):
            for file in files:
                if "latentsync" in file.lower() and file.lower().endswith(UNET_SUFFIXES):
                    path = os.path.join(root, file)
                    found.setdefault(os.path.relpath(path, folder).replace("\\", "/"), path)
    return found


def unet_path(name: str) -> str | None:
    return folder_paths.get_full_path("latentsync", name) or _diffusion_model_files().get(name)


class UNetLoader(LatentSyncNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncUNetLoader",
            display_name="Load LatentSync UNet",
            category="LatentSync/loaders",
            description="Loads the official LatentSync 1.5 (256 px) or 1.6 (512 px) latentsync_unet.pt, "
                        "unmodified, strictly checked, in fp32/fp16/bf16 with optional int8/int4/fp8/GGUF weights, "
                        "or a .gguf / fp8 file written by `python -m latentsync convert`.",
            is_output_node=True,  # shows what was loaded, and runs on its own to check a file
            inputs=[
                io.Combo.Input("unet_name", options=[*unet_files(), *DOWNLOAD],
                               tooltip="A UNet (.pt, .gguf, fp8 .safetensors) in models/latentsync/ or "
                                       "models/unet/ (latentsync*); or download 1.5/1.6."),
                io.Combo.Input("version", options=list(VERSIONS), default="auto",
                               tooltip="1.5 makes 256 px faces, 1.6 makes 512 px; auto reads it from a config, "
                                       "the file's metadata or its path."),
                option_input(DTYPE, tooltip="Weights and compute precision; auto is fp16 on CUDA, fp32 on CPU."),
                option_input(QUANTIZATION, tooltip="Weight-only: int8, int4 (CUDA, bf16), fp8, GGUF Q8_0...Q4_0 (K: "
                                                   "slow to make, convert once). none for .gguf/fp8 files."),
                # Optional and last: saved workflows and API prompts from before it still load and validate.
                option_input(COMPILE, optional=True, tooltip="torch.compile the UNet (CUDA): the first window of "
                                                             "each shape compiles (minutes), later ones run faster."),
            ],
            outputs=[LatentSyncModel.Output(display_name="model",
                                            tooltip="The UNet, managed by ComfyUI like a core model, for the "
                                                    "LatentSync Sampler.")],
        )

    @classmethod
    @override
    def check_inputs(cls, unet_name: str | None = None, **_) -> dict[str, str]:
        if unet_name is None or unet_name in DOWNLOAD or unet_path(unet_name):
            return {}
        folder = folder_paths.get_folder_paths("latentsync")[0]
        return {"unet_name": f"{unet_name!r} not found in models/latentsync; {where_to_get('1.5', folder)}"}

    @classmethod
    @override
    def execute(cls, unet_name: str, version: str, dtype: str, quantization: str,
                compile: str = "off") -> io.NodeOutput:  # noqa: A002 (the input's name)
        note = None
        if unet_name in DOWNLOAD:
            version = DOWNLOAD[unet_name]
            official = download_official(version, folder_paths.get_folder_paths("latentsync")[0])
            path, note = official.path, official.note
        else:
            path = unet_path(unet_name)
            if path is None:
                raise FileNotFoundError(f"{unet_name!r} not found in models/latentsync or models/unet")
        choice = choose_config(path, version)
        device = model_management.get_torch_device()
        torch_dtype = compute_dtype(dtype, device)
        # Quantize where the model will run: torchao picks its kernels from the weights' device.
        where = device if quantization == "int4" else model_management.unet_offload_device()
        unet = load_unet(path, choice.config, dtype=torch_dtype, device=where, quantization=quantization)
        if compile != "off":  # compiles lazily, on the sampler's first call of each window shape
            compile_unet(unet, mode=compile)
        loaded = LoadedUNet(patcher=managed(unet), resolution=choice.resolution, source=choice.source)
        summary = {"file": unet_name, "config": choice.source, "resolution": choice.resolution,
                   "dtype": str(torch_dtype).removeprefix("torch."), "quantization": quantization,
                   "weights_mb": round(weight_bytes(unet) / 2**20, 1), "storage": _storage(unet),
                   "parameters": parameter_count(unet), "compile": compile_mode(unet) or "off"}
        if note:  # say whether "download" fetched the file or used one already there
            summary["download"] = note
        return io.NodeOutput(loaded, ui={"latentsync_unet": [summary]})


def _storage(unet) -> str:
    """How the layer weights are held: "Q4_K 519, Q8_0 2", or the dtype when none is packed."""
    counts = Counter(getattr(module, "kind", None) for module in unet.modules() if hasattr(module, "packed"))
    return ", ".join(f"{kind} {count}" for kind, count in counts.most_common()) or "float"
