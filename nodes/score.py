"""SyncNet Score node: LSE-C, LSE-D and AV offset of frames against audio, the reference metric."""
from __future__ import annotations

import torch

from ..latentsync.score.crops import pack_face_detector
from ..latentsync.score.s3fd import load_s3fd
from ..latentsync.score.plot import render_distances
from ..latentsync.score.evaluate import score_sync
from ..latentsync.score.syncnet import load_syncnet
from ._comfy import InvalidInput, check_choices, folder_paths, io, model_management

CROPS = ("pack", "s3fd", "input")
NO_MODEL = "none"


class SyncNetScore(io.ComfyNode):
    @classmethod
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
                io.Float.Input("fps", default=25.0, min=1.0, max=240.0, step=0.001,
                               tooltip="Frame rate of the images; frames are taken at 25 fps for the metric."),
                io.Combo.Input("syncnet_model", options=models,
                               tooltip="SyncNet weights: LatentSync's checkpoints/auxiliary/syncnet_v2.model, in "
                                       "models/syncnet/."),
                io.Combo.Input("crops", options=list(CROPS), default="pack",
                               tooltip="Where the face crops come from. pack: this pack's detector (offline, not "
                                       "comparable with papers); s3fd: the reference's S3FD detector and crops "
                                       "(comparable); input: the images already are face crops."),
                io.Combo.Input("s3fd_model", options=[NO_MODEL, *models], default=NO_MODEL,
                               tooltip="crops=s3fd: sfd_face.pth (checkpoints/auxiliary/sfd_face.pth), in "
                                       "models/syncnet/."),
                io.Int.Input("min_track", default=50, min=5, max=1000,
                             tooltip="Face tracks must be longer than this many frames at 25 fps (reference: 50, "
                                     "i.e. 2 s). Lower it for short clips; numbers are then not paper-comparable."),
            ],
            outputs=[
                io.Float.Output(display_name="lse_c", tooltip="LSE-C: sync confidence, higher is better."),
                io.Float.Output(display_name="lse_d", tooltip="LSE-D: mean distance at the best offset, lower "
                                                              "is better."),
                io.Int.Output(display_name="offset", tooltip="Audio-video offset in frames at 25 fps (0 = in "
                                                             "sync; > 0: the video lags)."),
                io.String.Output(display_name="report", tooltip="The three numbers and the crop source as text."),
                io.Image.Output(display_name="plot", tooltip="Mean distance at each offset -15..15 (yellow: "
                                                             "chosen, green: 0)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, syncnet_model: str, crops: str, s3fd_model: str) -> bool:
        check_choices(crops=(crops, CROPS))
        if folder_paths.get_full_path("syncnet", syncnet_model) is None:
            raise InvalidInput(f"SyncNet model {syncnet_model!r} not found in models/syncnet; put LatentSync's "
                               "checkpoints/auxiliary/syncnet_v2.model there (ByteDance/LatentSync-1.5 on the hub)")
        if crops == "s3fd" and folder_paths.get_full_path("syncnet", s3fd_model) is None:
            raise InvalidInput("crops=s3fd needs sfd_face.pth in models/syncnet (LatentSync's checkpoints/auxiliary/"
                               "sfd_face.pth), or use crops=pack")
        return True

    @classmethod
    def execute(cls, images, audio, fps: float, syncnet_model: str, crops: str, s3fd_model: str,
                min_track: int) -> io.NodeOutput:
        device = model_management.get_torch_device()
        syncnet = load_syncnet(folder_paths.get_full_path_or_raise("syncnet", syncnet_model), device=device)
        extra = {}
        if crops == "s3fd":
            extra["s3fd"] = load_s3fd(folder_paths.get_full_path_or_raise("syncnet", s3fd_model), device=device)
        elif crops == "pack":
            extra["face_boxes"] = pack_face_detector()
        score = score_sync(images, audio["waveform"], audio["sample_rate"], fps, syncnet, crops=crops,
                           min_track=min_track, **extra)
        report = (f"LSE-C {score.lse_c:.3f}  LSE-D {score.lse_d:.3f}  offset {score.offset:+d}  "
                  f"({score.crops} crops, {score.windows} windows)")
        plot = torch.from_numpy(render_distances(score)).float().div(255)[None]
        summary = score.to_json() | {"report": report}
        return io.NodeOutput(float(score.lse_c), float(score.lse_d), int(score.offset), report, plot,
                             ui={"latentsync_score": [summary]})
