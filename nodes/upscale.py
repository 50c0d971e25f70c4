"""Upscale node: Real-ESRGAN-family models or interpolation, for generated face crops or whole frames."""
from __future__ import annotations

from ..latentsync.upscale.resize import INTERPOLATION_MODES
from ..latentsync.upscale.frames import face_fit_side, upscale_frames, upscale_mouth_region
from ..latentsync.upscale.models import check_upscale_model, load_upscale_model
from ..latentsync.upscale.tiling import estimate_activation_bytes, model_device_bytes
from ._comfy import PRECISIONS, compute_dtype, folder_paths, io, model_management, override, progress_reporter
from .base import LatentSyncNode
from .data_types import Faces

NO_MODEL = "none"
METHODS = ("model", *INTERPOLATION_MODES)


class Upscale(LatentSyncNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncUpscale",
            display_name="Upscale Faces or Frames (LatentSync)",
            category="LatentSync/image",
            description="Super-resolves IMAGE batches (the sampler's face crops before paste-back, or whole "
                        "frames) with a Real-ESRGAN-family model, or resizes them by interpolation; frames are "
                        "processed in chunks and large images in tiles.",
            inputs=[
                io.Image.Input("images", tooltip="Face crops or frames to upscale."),
                io.Combo.Input("method", options=list(METHODS), default="model",
                               tooltip="model: the upscale model below or the one connected; the others "
                                       "interpolate."),
                io.Combo.Input("model_name", options=[NO_MODEL, *folder_paths.get_filename_list("upscale_models")],
                               default=NO_MODEL,
                               tooltip="A Real-ESRGAN-family .pth in models/upscale_models/."),
                io.Float.Input("scale", default=2.0, min=0.05, max=16.0, step=0.05,
                               tooltip="Output size as a multiple of the input size, unless width and height "
                                       "are set."),
                io.Int.Input("width", default=0, min=0, max=16384, step=1,
                             tooltip="Exact output width in pixels; 0 = from scale."),
                io.Int.Input("height", default=0, min=0, max=16384, step=1,
                             tooltip="Exact output height in pixels; 0 = from scale."),
                io.Int.Input("tile", default=512, min=32, max=4096, step=32,
                             tooltip="Tile size in input pixels for the model; halved when memory runs out."),
                io.Int.Input("overlap", default=32, min=0, max=256, step=8,
                             tooltip="Overlap between tiles (input pixels), cross-faded to hide seams."),
                io.Int.Input("chunk", default=8, min=1, max=256,
                             tooltip="Frames on the device at once; memory stays flat however long the clip."),
                io.Combo.Input("precision", options=PRECISIONS, default="auto",
                               tooltip="Model precision; auto is fp16 on GPU, fp32 on CPU."),
                io.UpscaleModel.Input("upscale_model", optional=True,
                                      tooltip="A model from ComfyUI's Load Upscale Model; overrides model_name."),
                Faces.Input("faces", optional=True,
                            tooltip="The faces the crops belong to, for fit_to_faces and mouth_only."),
                io.Boolean.Input("fit_to_faces", default=False, optional=True,
                                 tooltip="With faces: crops as large as the faces in the frames (overrides the "
                                         "size settings)."),
                io.Boolean.Input("mouth_only", default=False, optional=True,
                                 tooltip="With faces and a model: the model upscales only the regenerated mouth "
                                         "region."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The upscaled images.")],
        )

    @classmethod
    @override
    def check_inputs(cls, model_name: str | None = None, **_) -> dict[str, str]:
        if model_name in (None, NO_MODEL) or folder_paths.get_full_path("upscale_models", model_name):
            return {}
        return {"model_name": f"upscale model {model_name!r} not found in models/upscale_models"}

    @classmethod
    @override
    def execute(cls, images, method: str, model_name: str, scale: float, width: int, height: int, tile: int,
                overlap: int, chunk: int, precision: str, upscale_model=None, faces=None, fit_to_faces: bool = False,
                mouth_only: bool = False) -> io.NodeOutput:
        device = model_management.get_torch_device()
        size = (width, height) if width and height else None
        if (fit_to_faces or mouth_only) and faces is None:
            raise ValueError("fit_to_faces and mouth_only need the faces input (from the sampler or Detect Faces)")
        if fit_to_faces:
            size = (face_fit_side(faces),) * 2
        if method != "model":
            return io.NodeOutput(upscale_frames(images, method, scale=None if size else scale, size=size,
                                                device=device, progress=progress_reporter()))
        if upscale_model is not None:
            model = check_upscale_model(upscale_model, "the connected upscale model")
        elif model_name != NO_MODEL:
            model = load_upscale_model(folder_paths.get_full_path_or_raise("upscale_models", model_name))
        else:
            raise ValueError("method 'model' needs an upscale model: pick model_name, connect Load Upscale "
                             "Model, or choose an interpolation method")
        dtype = compute_dtype(precision, device)
        # Make room the way core upscaling does, so other models are offloaded first. The library shrinks the
        # tile and chunk to what is free, so asking for more than the device holds would only evict every model.
        count, height, width = images.shape[:3]
        side = min(tile, max(height, width))
        wanted = model_device_bytes(model, dtype) + estimate_activation_bytes(model, side, side, min(chunk, count),
                                                                              dtype)
        model_management.free_memory(min(wanted, model_management.get_total_memory(device)), device)
        options = {"scale": None if size else scale, "size": size, "tile": tile, "overlap": overlap, "chunk": chunk,
                   "device": device, "dtype": dtype, "progress": progress_reporter()}
        if mouth_only:
            out = upscale_mouth_region(images, faces.mask, model, **options)
        else:
            out = upscale_frames(images, model, **options)
        return io.NodeOutput(out.to(model_management.intermediate_device()))

