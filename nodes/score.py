"""SyncNet Score node: LSE-C, LSE-D and AV offset of frames against audio, the reference metric; with the
sampler's faces also the mouth sharpness and flicker (against the source frames when given)."""
from __future__ import annotations

import math

import torch

from ..latentsync.score.crops import pack_face_detector
from ..latentsync.score.s3fd import load_s3fd
from ..latentsync.score.plot import render_distances
from ..latentsync.score.evaluate import (CROPS, FPS, JPEG, MIN_TRACK_FRAMES, FaceCrops, TrackRules, score_sync,
                                        wants_jpeg)
from ..latentsync.score.flicker import compare_flicker
from ..latentsync.score.sharpness import compare_sharpness
from ..latentsync.score.syncnet import load_syncnet
from ._comfy import folder_paths, io, model_management, override, ui
from .base import LatentSyncNode, option_input
from .data_types import Faces

NO_MODEL = "none"


class SyncNetScore(LatentSyncNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        models = folder_paths.get_filename_list("syncnet")
        return io.Schema(
            node_id="LatentSyncSyncNetScore",
            display_name="SyncNet Score (LatentSync)",
            category="LatentSync/score",
            description="Measures lip sync as papers do: LSE-C (confidence, higher is better), LSE-D (distance, "
                        "lower is better) and the audio-video offset in frames, with SyncNet at 25 fps.",
            is_output_node=True,
            inputs=[
                io.Image.Input("images", tooltip="The lip-synced frames."),
                io.Audio.Input("audio", tooltip="The voice they should be in sync with."),
                option_input(FPS, "Frame rate of the images; the metric takes frames at 25 fps."),
                io.Combo.Input("syncnet_model", options=models,
                               tooltip="SyncNet weights (LatentSync's checkpoints/auxiliary/syncnet_v2.model) in "
                                       "models/syncnet/."),
                option_input(CROPS),
                io.Combo.Input("s3fd_model", options=[NO_MODEL, *models], default=NO_MODEL,
                               tooltip="crops=s3fd: sfd_face.pth (LatentSync's checkpoints/auxiliary/) in "
                                       "models/syncnet/."),
                option_input(MIN_TRACK_FRAMES),
                # Optional and last: saved workflows and API prompts from before them still load and validate.
                option_input(JPEG, optional=True),
                Faces.Input("faces", optional=True,
                            tooltip="The sampler's faces: adds the mouth sharpness (Laplacian variance) and flicker "
                                    "to the report."),
                io.Image.Input("source_images", optional=True,
                               tooltip="With faces: the original frames, for the sharpness and flicker ratios "
                                       "generated/source."),
            ],
            outputs=[
                io.Float.Output(display_name="lse_c", tooltip="LSE-C: sync confidence, higher is better."),
                io.Float.Output(display_name="lse_d", tooltip="LSE-D: distance at the best offset, lower is "
                                                              "better."),
                io.Int.Output(display_name="offset", tooltip="Audio-video offset in frames at 25 fps; 0 is in "
                                                             "sync, above 0 the video lags."),
                io.String.Output(display_name="report", tooltip="The three numbers and the crop source as text."),
                io.Image.Output(display_name="plot", tooltip="Mean distance at each offset from -15 to 15."),
            ],
        )

    @classmethod
    @override
    def check_inputs(cls, syncnet_model: str | None = None, crops: str | None = None, s3fd_model: str | None = None,
                     **_) -> dict[str, str]:
        problems = {}
        if syncnet_model is not None and folder_paths.get_full_path("syncnet", syncnet_model) is None:
            problems["syncnet_model"] = (f"SyncNet model {syncnet_model!r} not found in models/syncnet; put "
                                         "LatentSync's checkpoints/auxiliary/syncnet_v2.model there "
                                         "(ByteDance/LatentSync-1.5 on the hub)")
        if crops == "s3fd" and s3fd_model is not None and folder_paths.get_full_path("syncnet", s3fd_model) is None:
            problems["s3fd_model"] = ("crops=s3fd needs sfd_face.pth in models/syncnet (LatentSync's "
                                      "checkpoints/auxiliary/sfd_face.pth), or use crops=pack")
        return problems

    @classmethod
    @override
    def execute(cls, images, audio, fps: float, syncnet_model: str, crops: str, s3fd_model: str,
                min_track: int, jpeg_round_trip: str = "auto", faces=None, source_images=None) -> io.NodeOutput:
        mouth = _mouth_measures(images, faces, source_images)  # first: a count mismatch fails before SyncNet runs
        device = model_management.get_torch_device()
        syncnet = load_syncnet(folder_paths.get_full_path_or_raise("syncnet", syncnet_model), device=device)
        extra = {}
        if crops == "s3fd":
            extra["s3fd"] = load_s3fd(folder_paths.get_full_path_or_raise("syncnet", s3fd_model), device=device)
        elif crops == "pack":
            extra["face_boxes"] = pack_face_detector()
        jpeg = wants_jpeg(jpeg_round_trip, crops)
        score = score_sync(images, audio["waveform"], audio["sample_rate"], fps, syncnet,
                           FaceCrops(crops, jpeg=jpeg, **extra), tracks=TrackRules(min_track=min_track))
        report = (f"LSE-C {score.lse_c:.3f}  LSE-D {score.lse_d:.3f}  offset {score.offset:+d}  "
                  f"({score.crops} crops{', JPEG round trip' if jpeg else ''}, {score.snippets} snippets of 5 frames)")
        if mouth:
            report += "\n" + mouth_line("mouth sharpness", mouth["sharpness"], 1)
            report += "\n" + mouth_line("mouth flicker", mouth["flicker"], 2)
        plot = torch.from_numpy(render_distances(score)).float().div(255)[None]
        summary = score.to_json() | {"report": report} | mouth
        # The core image preview, and the numbers the editor's report widget shows (js/node_reports.js).
        shown = ui.PreviewImage(plot, cls=cls).as_dict() | {"latentsync_score": [summary]}
        return io.NodeOutput(float(score.lse_c), float(score.lse_d), int(score.offset), report, plot, ui=shown)


def _mouth_measures(images, faces, source_images) -> dict:
    """{"sharpness": ..., "flicker": ...}: the mouth measures of the images (and their source frames) with the
    faces they were made with; {} without faces."""
    if faces is None:
        if source_images is not None:
            raise ValueError("source_images are compared through the faces: connect the sampler's faces too")
        return {}
    for name, frames in (("images", images), ("source_images", source_images)):
        if frames is not None and len(frames) != len(faces):
            raise ValueError(f"{name} has {len(frames)} frames but the faces cover {len(faces)}; connect the faces "
                             "the sampler returned with these frames (one face entry per frame)")
    measured = {"sharpness": compare_sharpness(images, source_images, faces),
                "flicker": compare_flicker(images, source_images, faces)}
    # NaN (no frame, or no two frames in a row, with a face) as null: the summary goes to the browser as JSON.
    return {name: {key: value if math.isfinite(value) else None for key, value in values.items()}
            for name, values in measured.items()}


def mouth_line(name: str, measured: dict, digits: int) -> str:
    """"NAME X" and, against the source, "(source Y, Z x)"; "-" where no face was measured."""
    def shown(key: str, places: int) -> str:
        return "-" if measured.get(key) is None else f"{measured[key]:.{places}f}"

    line = f"{name} {shown('generated', digits)}"
    if "source" in measured:
        line += f" (source {shown('source', digits)}, {shown('ratio', 2)} x)"
    return line
