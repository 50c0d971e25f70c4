"""Load LatentSync UNet node: official checkpoints, unmodified, in the precision and quantization asked for."""
from __future__ import annotations

from dataclasses import dataclass

from ..latentsync.core.precision import DTYPE
from ..latentsync.unet.compile import COMPILE, compile_mode, compile_unet
from ..latentsync.unet.files import OFFICIAL, VERSIONS, choose_config, download_official, where_to_get
from ..latentsync.unet.loading import QUANTIZATION, load_unet
from ..latentsync.unet.quantize import weight_bytes
from ._comfy import compute_dtype, folder_paths, io, managed, model_management, override
from .base import LatentSyncNode, option_input
from .data_types import LatentSyncModel

DOWNLOAD = {f"download {version}": version for version in OFFICIAL}
OTHER_MODELS = ("whisper/", "pyannote/")  # sub-folders of models/latentsync that hold other models


@dataclass
class LoadedUNet:
    """What the sampler needs: the managed UNet and the face resolution it was trained at."""

    patcher: object  # ComfyUI ModelPatcher around latentsync.unet.model.LatentSyncUNet
    resolution: int
    source: str


def unet_files() -> list[str]:
    names = folder_paths.get_filename_list("latentsync")
    return [n for n in names if not n.replace("\\", "/").startswith(OTHER_MODELS)]


class UNetLoader(LatentSyncNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncUNetLoader",
            display_name="Load LatentSync UNet",
            category="LatentSync/loaders",
            description="Loads the official LatentSync 1.5 (256 px) or 1.6 (512 px) latentsync_unet.pt, "
                        "unmodified, strictly checked, in fp32/fp16/bf16 with optional int8/int4 weights.",
            is_output_node=True,  # shows what was loaded, and runs on its own to check a file
            inputs=[
                io.Combo.Input("unet_name", options=[*unet_files(), *DOWNLOAD],
                               tooltip="latentsync_unet.pt in models/latentsync/, or 'download 1.5/1.6' to fetch "
                                       "the official file."),
                io.Combo.Input("version", options=list(VERSIONS), default="auto",
                               tooltip="1.5 makes 256 px faces, 1.6 makes 512 px; auto reads it from a config "
                                       "or the file's path."),
                option_input(DTYPE, tooltip="Weights and compute precision; auto is fp16 on CUDA, fp32 on CPU."),
                option_input(QUANTIZATION, tooltip="Weight-only quantization: int8 (CPU or CUDA) or int4 (CUDA and "
                                                   "bf16) to save memory."),
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
        if unet_name is None or unet_name in DOWNLOAD or folder_paths.get_full_path("latentsync", unet_name):
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
            path = folder_paths.get_full_path_or_raise("latentsync", unet_name)
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
                   "weights_mb": round(weight_bytes(unet) / 2**20, 1),
                   "parameters": sum(p.numel() for p in unet.parameters()), "compile": compile_mode(unet) or "off"}
        if note:  # say whether "download" fetched the file or used one already there
            summary["download"] = note
        return io.NodeOutput(loaded, ui={"latentsync_unet": [summary]})
