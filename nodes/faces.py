"""Face nodes: find and align the face of every frame (previewable before any diffusion), and paste
generated crops back."""
from __future__ import annotations

from pathlib import Path

import torch

from ..latentsync.core.memory import check_fits
from ..latentsync.face.align import align
from ..latentsync.face.detect import FACE_OPTIONS, detect_faces, detector_threshold, make_detector
from ..latentsync.face.mask import RESOLUTION
from ..latentsync.face.blend import BLEND_MASK, FEATHER, GROW, Blend
from ..latentsync.face.paste import paste_back
from ..latentsync.face.smooth import SMOOTHING
from ..latentsync.face.tracks import FaceTracks as Tracks, choose_track, keyframe_index, label_keyframe, track_faces
from ..latentsync.face.types import no_face_found
from ._comfy import folder_paths, io, override, progress_reporter, ui
from .base import LatentSyncNode, option_input
from .data_types import Faces, FaceTracks

RESOLUTIONS = [str(side) for side in RESOLUTION.choices]  # a combo of text, as saved workflows hold it


def insightface_dirs() -> list[Path]:
    """ComfyUI's usual place for InsightFace's buffalo_l: models/insightface/models/buffalo_l/."""
    return [Path(p) / "models" / "buffalo_l" for p in folder_paths.get_folder_paths("insightface")]


def face_choice_inputs() -> list[io.Input]:
    """The detector and which face to follow: the inputs of every node that finds faces (`detect.FACE_OPTIONS`:
    detector, select, index, position_x, position_y, threshold; smoothing is `smoothing_input`, last). The schema
    check (nodes/base.py) refuses a negative index or a NaN position before the run; linked ones are checked by
    the library when the node runs."""
    return [option_input(option) for option in FACE_OPTIONS if option is not SMOOTHING]


def smoothing_input() -> io.Input:
    """The face points' smoothing (`smooth.SMOOTHING`). Optional and last on each node: saved workflows and API
    prompts from before it still load and validate (the editor fills widgets by position)."""
    return option_input(SMOOTHING, optional=True)


def face_detector(detector: str, threshold: float):
    """The detector the inputs of `face_choice_inputs` name (threshold -1: the detector's default)."""
    options = {"models_dir": insightface_dirs()} if detector == "insightface" else {}
    return make_detector(detector, detector_threshold(threshold), **options)


class DetectFaces(LatentSyncNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncDetectFaces",
            display_name="Detect and Align Faces (LatentSync)",
            category="LatentSync/face",
            description="Finds the face to lip-sync in every frame, aligns it as LatentSync expects, and shows "
                        "the crops and mouth masks before any diffusion time is spent. Frames without a usable "
                        "face are flagged and pass through the sampler unchanged.",
            inputs=[
                io.Image.Input("images", tooltip="The video frames (or a repeated still image)."),
                io.Combo.Input("resolution", options=RESOLUTIONS, default=str(RESOLUTION.default),
                               tooltip=RESOLUTION.help),
                *face_choice_inputs(),
                io.Boolean.Input("track_all", default=False, optional=True,  # prompts from before it still run
                                 tooltip="Also follow every face as a track (A, B, ...) for several speakers, "
                                         "labelled on the preview."),
                smoothing_input(),
            ],
            outputs=[
                Faces.Output(display_name="faces", tooltip="Aligned faces and how to paste them back, for the "
                                                           "sampler and Paste Faces Back."),
                io.Image.Output(display_name="crops", tooltip="The aligned face crops the model sees."),
                io.Mask.Output(display_name="mouth_mask",
                               tooltip="1 where the mouth will be regenerated, per crop; 0 on frames without a "
                                       "face."),
                FaceTracks.Output(display_name="tracks",
                                  tooltip="Every face as a track (A, B, ...) with track_all, else the chosen face as "
                                          "A: for Assign Faces to Speakers."),
            ],
        )

    @classmethod
    @override
    def execute(cls, images, resolution: str, detector: str, select: str, index: int, position_x: float,
                position_y: float, threshold: float, track_all: bool = False,
                smoothing: bool = SMOOTHING.default) -> io.NodeOutput:
        engine, position = face_detector(detector, threshold), (position_x, position_y)
        if track_all:
            tracks = track_faces(images, engine, smoothing=smoothing, progress=progress_reporter())
            track = choose_track(tracks, select=select, index=index, position=position)
        else:
            track = detect_faces(images, engine, select=select, index=index, position=position,
                                 smoothing=smoothing, progress=progress_reporter())
            tracks = Tracks(tracks=[track], labels=["A"], frame_hw=track.frame_hw, detector=track.detector)
        faces = align(images, track, int(resolution), progress=progress_reporter())
        mouth = (1.0 - faces.mask.to(torch.float32))[None].repeat(len(faces), 1, 1)
        mouth[~faces.valid] = 0.0
        found = int(faces.valid.sum())
        summary = {"frames": len(faces), "frames_with_face": found, "detector": detector, "smoothing": smoothing,
                   "resolution": faces.resolution, "tracks": list(tracks.labels),
                   "warnings": cls.warned([] if found else [f"{no_face_found(len(faces))}; every frame passes "
                                                            "through unchanged"])}
        shown = {"latentsync_faces": [summary]}
        if track_all:  # the keyframe with every track's letter, in the core image preview
            key = keyframe_index(tracks)
            frame = (images[key, ..., :3].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            picture = torch.from_numpy(label_keyframe(frame, tracks, key)).float().div(255)[None]
            shown = ui.PreviewImage(picture, cls=cls).as_dict() | shown
        return io.NodeOutput(faces, faces.images(), mouth, tracks, ui=shown)


class PasteFaces(LatentSyncNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncPasteFaces",
            display_name="Paste Faces Back (LatentSync)",
            category="LatentSync/face",
            description="Restores face crops (e.g. the sampler's, after upscaling) into their frames with the "
                        "reference's soft blend, or only where a blend mask says; frames without a face are "
                        "returned unchanged.",
            inputs=[
                io.Image.Input("images", tooltip="The frames the faces were aligned on."),
                Faces.Input("faces", tooltip="From Detect and Align Faces or the sampler."),
                io.Image.Input("crops", tooltip="One face crop per frame, at the faces' resolution."),
                # added after the first release: optional, so saved workflows and API prompts still load
                option_input(BLEND_MASK, optional=True),
                option_input(GROW, optional=True),
                option_input(FEATHER, optional=True),
                io.Mask.Input("mask", optional=True, tooltip="blend_mask=custom: where the face goes (1), one mask "
                                                             "or one per frame, at the frames' size."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="Frames with the crops pasted in."),
                     io.Mask.Output(display_name="blend_mask", tooltip="Where each frame took the pasted face "
                                                                       "(1) and kept its pixels (0).")],
        )

    @classmethod
    @override
    def execute(cls, images, faces, crops, blend_mask: str = BLEND_MASK.default, mask_grow: float = GROW.default,
                mask_feather: float = FEATHER.default, mask=None) -> io.NodeOutput:
        blend = Blend(blend_mask, mask_grow, mask_feather, mask)
        check_fits(images.shape[0] * images.shape[1] * images.shape[2] * 4, "the blend masks", "the number of "
                   "frames", "cpu")
        weights = torch.zeros(images.shape[:3])
        out = paste_back(images, faces, crops, progress=progress_reporter(), blend=blend, weights_out=weights)
        return io.NodeOutput(out, weights)
