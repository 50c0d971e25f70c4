"""Upscale node: Real-ESRGAN-family models or interpolation, for generated face crops or whole frames; Restore
Mouths: a face restorer (GFPGAN, RestoreFormer, CodeFormer) on the generated crops, blended only on the mouth."""
from __future__ import annotations

import torch

from ..latentsync.face.align import face_fit_side
from ..latentsync.upscale.frames import upscale_frames, upscale_mouth_region
from ..latentsync.upscale.models import check_upscale_model, load_upscale_model
from ..latentsync.upscale.options import (CHUNK, HEIGHT, METHOD, OVERLAP, PRECISION, RESTORE_OPTIONS, SCALE, TEMPORAL,
                                          TILE, WIDTH)
from ..latentsync.upscale.restore import MouthBlend, check_face_restorer, load_face_restorer, restore_mouths
from ..latentsync.upscale.tiling import Tiling, estimate_activation_bytes, model_device_bytes
from ._comfy import compute_dtype, folder_paths, io, model_management, override, progress_reporter
from .base import LatentSyncNode, option_input
from .data_types import Faces

NO_MODEL = "none"


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
                option_input(METHOD),
                io.Combo.Input("model_name", options=[NO_MODEL, *folder_paths.get_filename_list("upscale_models")],
                               default=NO_MODEL,
                               tooltip="A Real-ESRGAN-family .pth in models/upscale_models/."),
                *(option_input(option) for option in (SCALE, WIDTH, HEIGHT, TILE, OVERLAP, CHUNK, PRECISION)),
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
        count, height, width = images.shape[:3]
        make_room(model, min(tile, max(height, width)), min(chunk, count), dtype, device)
        options = {"scale": None if size else scale, "size": size,
                   "tiling": Tiling(tile=tile, overlap=overlap, chunk=chunk), "device": device, "dtype": dtype,
                   "progress": progress_reporter()}
        if mouth_only:
            out = upscale_mouth_region(images, faces.mask, model, **options)
        else:
            out = upscale_frames(images, model, **options)
        return io.NodeOutput(out.to(model_management.intermediate_device()))


FACE_RESTORE_FOLDER = "facerestore_models"


class RestoreMouths(LatentSyncNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncRestoreMouths",
            display_name="Restore Mouths (LatentSync)",
            category="LatentSync/image",
            description="Runs a face restorer (GFPGAN v1.3/v1.4, RestoreFormer, CodeFormer) over the sampler's "
                        "face crops and keeps its result only where the mouth was regenerated, so eyes and skin "
                        "stay as in the video. Paste the result back with Paste Faces Back.",
            inputs=[
                io.Image.Input("images", tooltip="The generated face crops (the sampler's crops output)."),
                Faces.Input("faces", tooltip="The faces the crops belong to: their mouth mask says where to blend."),
                io.Combo.Input("model_name",
                               options=[NO_MODEL, *folder_paths.get_filename_list(FACE_RESTORE_FOLDER)],
                               default=NO_MODEL,
                               tooltip="GFPGANv1.4.pth, RestoreFormer.pth or codeformer.pth in "
                                       "models/facerestore_models/."),
                *(option_input(option) for option in RESTORE_OPTIONS),  # strength ... precision
                io.UpscaleModel.Input("restore_model", optional=True,
                                      tooltip="A face restorer from ComfyUI's Load Upscale Model; overrides "
                                              "model_name."),
                # Optional and last: saved workflows and API prompts from before it still load and validate.
                option_input(TEMPORAL, optional=True),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The crops with restored mouths.")],
        )

    @classmethod
    @override
    def check_inputs(cls, model_name: str | None = None, **_) -> dict[str, str]:
        if model_name in (None, NO_MODEL) or folder_paths.get_full_path(FACE_RESTORE_FOLDER, model_name):
            return {}
        return {"model_name": f"face restoration model {model_name!r} not found in models/{FACE_RESTORE_FOLDER}"}

    @classmethod
    @override
    def execute(cls, images, faces, model_name: str, strength: float, feather: float, size: int, chunk: int,
                precision: str, restore_model=None, temporal: float = TEMPORAL.default) -> io.NodeOutput:
        device = model_management.get_torch_device()
        if restore_model is not None:
            model = check_face_restorer(restore_model, "the connected model")
        elif model_name != NO_MODEL:
            model = load_face_restorer(folder_paths.get_full_path_or_raise(FACE_RESTORE_FOLDER, model_name))
        else:
            raise ValueError("Restore Mouths needs a face restoration model: pick model_name (GFPGANv1.4.pth in "
                             "models/facerestore_models) or connect Load Upscale Model")
        # None lets the library pick fp32 for models spandrel marks as not fp16-safe (all three are).
        dtype = None if precision == "auto" else compute_dtype(precision, device)
        make_room(model, model.size, min(chunk, images.shape[0]), dtype or torch.float32, device)
        out = restore_mouths(images, faces.mask, model, blend=MouthBlend(strength, feather, temporal),
                             size=size or None, tiling=Tiling(chunk=chunk), device=device, dtype=dtype,
                             progress=progress_reporter())
        return io.NodeOutput(out.to(model_management.intermediate_device()))


def make_room(model, side: int, batch: int, dtype, device) -> None:
    """Free device memory for the model and one batch of `side` px tiles the way core upscaling does, so other
    models are offloaded first. The library shrinks the batch (and tile) to what is free, so asking for more
    than the device holds would only evict every model."""
    wanted = model_device_bytes(model, dtype) + estimate_activation_bytes(model, side, side, batch, dtype)
    model_management.free_memory(min(wanted, model_management.get_total_memory(device)), device)
