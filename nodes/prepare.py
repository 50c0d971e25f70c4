"""Prepare Video (LatentSync) node: the work that depends on the video alone (faces found and aligned, crops
VAE-encoded) done once, for the samplers to reuse with every voice (`latentsync/prepared/`)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..latentsync.core.digest import tensor_digest
from ..latentsync.face.detect import detect_faces
from ..latentsync.face.smooth import SMOOTHING
from ..latentsync.media.frame_reader import VideoFrames
from ..latentsync.media.partial import file_identity
from ..latentsync.media.video import video_info
from ..latentsync.prepared import (PreparedVideo, file_video_identity, frames_identity, prepare_file, prepare_frames,
                                   prepared_identity, use_or_prepare, vae_identity)
from ..latentsync.run.job import FaceChoice
from ._comfy import folder_paths, io, override, progress_reporter
from .base import LatentSyncNode
from .data_types import Faces, LatentSyncModel, Prepared
from .faces import face_choice_inputs, face_detector, smoothing_input
from .sampler import ComfyFaceVAE, vae_device

FOLDERS = "latentsync/prepared"  # under ComfyUI's output folder


def output_folder(name: str) -> Path:
    """`name` under ComfyUI's output folder's `latentsync/prepared/`, refused when it points outside."""
    root = (Path(folder_paths.get_output_directory()) / FOLDERS).resolve()
    folder = (root / name).resolve()
    if root not in folder.parents:
        raise ValueError(f"folder {name!r} points outside {root}")
    return folder


def video_file(video, folder: Path) -> Path:
    """The file behind a core VIDEO: Load Video's own file, else the video saved once under `folder`."""
    source = video.get_stream_source() if hasattr(video, "get_stream_source") else None
    if isinstance(source, (str, Path)) and Path(source).is_file():
        return Path(source)
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / "incoming.mp4"
    video.save_to(str(temporary))
    path = folder / f"video_{file_identity(temporary)['sha256_ends'][:16]}.mp4"
    temporary.replace(path)
    return path


class PrepareVideo(LatentSyncNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncPrepareVideo",
            display_name="Prepare Video (LatentSync)",
            category="LatentSync",
            description="Does a video's own work once: finds and aligns the face of every frame and VAE-encodes "
                        "the crops. Samplers fed by it skip that work, with the same result: ComfyUI's cache keeps "
                        "it while only the audio changes (one video, many voices), and a folder keeps it on disk.",
            inputs=[
                io.Vae.Input("vae", tooltip="The VAE the sampler uses (sd-vae-ft-mse from Load VAE)."),
                LatentSyncModel.Input("model", tooltip="From Load LatentSync UNet: its face size (256 or 512 px)."),
                *face_choice_inputs(),
                io.Image.Input("images", optional=True,
                               tooltip="Frames for LatentSync Sampler (connect images or video, not both)."),
                io.Video.Input("video", optional=True,
                               tooltip="A video for LatentSync Sampler (video file), read from its file."),
                Faces.Input("faces", optional=True,
                            tooltip="Faces from Detect and Align Faces for the images; else found with the widgets."),
                io.String.Input("folder", default="", optional=True,
                                tooltip="Keep it in output/latentsync/prepared/<folder> for later sessions (empty: "
                                        "images stay in memory)."),
                io.Boolean.Input("rebuild", default=False, optional=True,
                                 tooltip="Make the folder again (damaged, or of another video or settings)."),
                smoothing_input(),
            ],
            outputs=[Prepared.Output(display_name="prepared",
                                     tooltip="For the prepared input of LatentSync Sampler or Sampler (video file).")],
        )

    @classmethod
    @override
    def execute(cls, vae, model, detector: str, select: str, index: int, position_x: float, position_y: float,
                threshold: float, images=None, video=None, faces=None, folder: str = "", rebuild: bool = False,
                smoothing: bool = SMOOTHING.default) -> io.NodeOutput:
        if (images is None) == (video is None):
            raise ValueError("connect images (for LatentSync Sampler) or a video (for LatentSync Sampler (video "
                             "file)) to Prepare Video, one of them")
        face_vae, device = ComfyFaceVAE(vae), vae_device(vae)
        face = FaceChoice(face_detector(detector, threshold), select, index, (position_x, position_y), smoothing)
        face.check()
        if video is not None:
            prepared, note = cls.prepare_video(video, face_vae, device, face, model.resolution, folder, rebuild)
        else:
            prepared, note = cls.prepare_images(images, faces, face_vae, device, face, model.resolution, folder,
                                                rebuild)
        note = {**note, "frames": len(prepared), "faces": int(prepared.faces.valid.sum())}
        return io.NodeOutput(prepared, ui={"latentsync_prepared": [note]})

    @staticmethod
    def prepare_images(images, faces, face_vae, device, face: FaceChoice, resolution: int, folder: str,
                       rebuild: bool) -> tuple[PreparedVideo, dict]:
        if faces is not None and faces.resolution != resolution:
            raise ValueError(f"the faces were aligned at {faces.resolution} px but the model makes {resolution} px "
                             f"faces; set Detect Faces' resolution to {resolution}")
        how = face.identity() if faces is None else {"given": tensor_digest(faces.matrices, faces.valid.float())}
        bar = progress_reporter()

        def make() -> PreparedVideo:
            found = faces
            if found is None:
                found = detect_faces(images, face.detector, face.select, face.index, face.position,
                                     smoothing=face.smoothing)
            prepared = prepare_frames(images, found, resolution, face_vae, device, bar, how)
            return prepared if not folder else prepared.save(output_folder(folder))

        if not folder:
            return make(), {"folder": None, "made": True}
        identity = prepared_identity(frames_identity(images), how, resolution, vae_identity(face_vae), device.type,
                                     None)
        return use_or_prepare(output_folder(folder), identity, make, rebuild)

    @staticmethod
    def prepare_video(video, face_vae, device, face: FaceChoice, resolution: int, folder: str,
                      rebuild: bool) -> tuple[PreparedVideo, dict]:
        path = video_file(video, output_folder("inputs"))
        frames = VideoFrames(path)
        fps = None if frames.still else (frames.fps or 25.0)
        identity = prepared_identity(file_video_identity(path), face.identity(), resolution, vae_identity(face_vae),
                                     device.type, fps)
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
        stated, faces_bar, encode_bar = max(video_info(path).frames, 1), progress_reporter(), progress_reporter()

        def faces_pass(count: int) -> None:  # a bar over the frames the header states, then one over the faces
            if count % 10 == 0:
                faces_bar(min(count, stated), stated)

        def make() -> PreparedVideo:
            return prepare_file(frames, face, face_vae, output_folder(name), identity, device=device,
                                hooks=(faces_pass, encode_bar))

        name = folder or f"{path.stem}_{digest}"  # named by what it is made from: found again, never mixed up
        return use_or_prepare(output_folder(name), identity, make, rebuild)
