"""LatentSync Sampler (video file) node: a core VIDEO in, a VIDEO out backed by the mp4 it writes. Frames are
read from the video's file window by window and written as they finish (the library's streamed run, as the
`lipsync` command), so a long clip never becomes one IMAGE batch. A cancelled run leaves its finished windows
beside the output; queuing the same prompt again continues it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from PIL import Image

from ..latentsync.audio.features import FPS
from ..latentsync.core.digest import tensor_digest, weights_digest
from ..latentsync.face.smooth import SMOOTHING
from ..latentsync.media.audio import write_wav
from ..latentsync.media.frame_reader import VideoFrames
from ..latentsync.media.outputs import check_output
from ..latentsync.media.partial import PartialOutput, file_identity
from ..latentsync.prepared import file_video_identity
from ..latentsync.media.video import CRF, check_crf, video_info
from ..latentsync.face.blend import BLEND_MASK, FEATHER, GROW, Blend
from ..latentsync.face.seam import COLOUR_MATCH
from ..latentsync.run.job import STREAMED_BLEND_MASKS, FaceChoice, blend_options, job_identity, streamed_blend
from ..latentsync.run.stream import Hooks, LoadedModels, Voice, lipsync_stream
from ..latentsync.sample.settings import SETTINGS, SamplerSettings
from ..latentsync.unet.config import max_window
from ._comfy import folder_paths, io, load_for_compute, override, step_reporter, video_from_file, window_reporter
from .base import LatentSyncNode, option_input
from .data_types import AudioFeatures, LatentSyncModel, Prepared, Speech
from .faces import face_choice_inputs, face_detector, smoothing_input
from .prepare import video_file
from .sampler import ComfyFaceVAE, check_prepared, apply_preset, blend_inputs, preset_input, setting_input


def inputs_identity(path: Path, audio: dict, features, speech, model, vae) -> dict:
    """The inputs of a job as the node gets them: the video's file, and digests of the tensors and weights that
    stand for the audio, features and model files the `lipsync` command would name (`run/job.job_identity`)."""
    return {"video": file_identity(path), "audio": [tensor_digest(audio["waveform"][0]), int(audio["sample_rate"])],
            "features": tensor_digest(features.features, features.silence_features, torch.as_tensor(features.rows)),
            "speech": None if speech is None else [speech.duration, [list(s) for s in speech.speech]],
            "unet": [model.source, model.resolution, weights_digest(model.patcher.model)],
            "vae": weights_digest(getattr(vae, "first_stage_model", torch.nn.Module()))}


class LatentSyncSampleVideo(LatentSyncNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncSampleVideo",
            display_name="LatentSync Sampler (video file)",
            category="LatentSync",
            description="Lip-syncs a VIDEO (from Load Video) to audio features for clips of any length: frames "
                        "are read from the file a window at a time and the result is written to an mp4 as it "
                        "goes, so memory does not grow with the clip. Cancel keeps the finished windows; queue "
                        "again to continue.",
            inputs=[
                io.Video.Input("video", tooltip="The video to lip-sync (Load Video); read from its file."),
                io.Audio.Input("audio", tooltip="The voice given to Whisper Encode; it becomes the soundtrack."),
                AudioFeatures.Input("features", tooltip="From Whisper Encode, at the video's fps."),
                LatentSyncModel.Input("model", tooltip="From Load LatentSync UNet."),
                io.Vae.Input("vae", tooltip="sd-vae-ft-mse (vae-ft-mse-840000-ema-pruned) from ComfyUI's Load VAE."),
                *(setting_input(setting) for setting in SETTINGS),
                *face_choice_inputs(),
                option_input(CRF),
                io.String.Input("filename_prefix", default="latentsync/lipsync",
                                tooltip="Where the mp4 goes, under ComfyUI's output folder (a hash of the job is "
                                        "added: the same job finds its file again)."),
                Speech.Input("speech", optional=True,
                             tooltip="Speech segments from the VAD node, for the silence/skip/fast policies."),
                preset_input(),
                smoothing_input(),
                *blend_inputs(STREAMED_BLEND_MASKS, "What is pasted back: reference: the whole crop; landmarks: "
                                                    "lips, jaw, chin (a MASK: Paste Faces Back)."),
                Prepared.Input("prepared", optional=True,
                               tooltip="From Prepare Video given this video: its faces and latents are used (the "
                                       "face widgets here are not)."),
            ],
            outputs=[io.Video.Output(display_name="video", tooltip="The lip-synced video with the voice, backed "
                                                                   "by the mp4 written.")],
        )

    @classmethod
    @override
    def execute(cls, video, audio, features, model, vae, detector: str, select: str, index: int, position_x: float,
                position_y: float, threshold: float, crf: int, filename_prefix: str, speech=None,
                preset: str = "custom", smoothing: bool = SMOOTHING.default, blend_mask: str = BLEND_MASK.default,
                mask_grow: float = GROW.default, mask_feather: float = FEATHER.default,
                colour_match: bool = COLOUR_MATCH.default, prepared=None, **values) -> io.NodeOutput:
        settings = SamplerSettings(**apply_preset(values, preset))  # one input per setting (SETTINGS)
        blend = streamed_blend(Blend(blend_mask, mask_grow, mask_feather, colour_match=colour_match))
        settings.validate(max_window(model.patcher.model.config))
        check_crf(crf)
        root = Path(folder_paths.get_output_directory())
        out_base = (root / filename_prefix).resolve()
        if root.resolve() not in out_base.parents:
            raise ValueError(f"filename_prefix {filename_prefix!r} points outside ComfyUI's output folder")
        path = video_file(video, out_base.parent / "inputs")
        frames = VideoFrames(path)
        fps = features.fps
        if frames.fps is not None and abs(frames.fps - fps) > 1e-3:
            raise ValueError(f"the audio features were made for {fps:g} fps but the video is at {frames.fps:g} fps; "
                             "give Whisper Encode the video's fps")
        face = FaceChoice(face_detector(detector, threshold), select, index, (position_x, position_y), smoothing)
        options = {"crf": crf, **blend_options(blend)}
        if prepared is not None:  # its faces, found as Prepare Video's widgets said, name the output
            if prepared.pts is None:
                raise ValueError("the prepared video was made from images; connect this video to Prepare Video")
            check_prepared(prepared, file_video_identity(path), ComfyFaceVAE(vae), vae, model.resolution, fps)
            options["prepared_face"] = prepared.identity["face"]
        job = job_identity(inputs_identity(path, audio, features, speech, model, vae), settings, face, options)
        name = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:12]
        out = check_output(out_base.with_name(f"{out_base.name}_{name}.mp4"), {"the video": path},
                           flag="filename_prefix's file")
        if out.is_file():  # this very job finished before (ComfyUI's cache was cleared since)
            return io.NodeOutput(video_from_file(out), ui={"latentsync_video": [{"file": str(out), "reused": True}]})
        partial = PartialOutput(out, job, resume=True)
        voice = partial.folder / "voice.wav"
        if not voice.is_file():
            write_wav(voice, audio["waveform"][0], int(audio["sample_rate"]))

        steps = step_reporter()  # the bar, a live preview and the time left at every UNet step

        def on_window(done: int, total: int, crops: torch.Tensor) -> None:  # then the window's finished face
            face = (crops[-1].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            steps.picture(Image.fromarray(face))

        stated = video_info(path).frames if not frames.still else 1
        faces_bar = window_reporter(stated or 1)

        def face_progress(count: int) -> None:  # the first pass: a bar over the frames the header states
            if count % 10 == 0:
                faces_bar(count if stated else 0)

        device = load_for_compute(model.patcher)
        loaded = LoadedModels(model.patcher.model, ComfyFaceVAE(vae), model.resolution, device)
        summary = lipsync_stream(frames, Voice(features, speech, voice), loaded, settings, prepared or face, partial,
                                 crf=crf,
                                 hooks=Hooks(progress=steps, face_progress=face_progress, on_window=on_window), blend=blend)
        note = {"file": str(out), "frames": summary["frames"], "generated": summary["generated_frames"],
                "resumed_segments": summary["resumed_segments"], "warnings": cls.warned(summary["warnings"]),
                "preset": preset}
        return io.NodeOutput(video_from_file(out), ui={"latentsync_video": [note]})


class VideoInfo(LatentSyncNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncVideoInfo",
            display_name="Video Info (LatentSync)",
            category="LatentSync",
            description="The frame rate, frame count and size of a VIDEO, read from its file's header and first frame "
                        "(Get Video Components decodes every frame), so long clips can feed their fps to Whisper "
                        "Encode. A phone video's size is the upright one players show.",
            inputs=[io.Video.Input("video", tooltip="A video from Load Video.")],
            outputs=[io.Float.Output(display_name="fps", tooltip="Frames per second (25 when the file states none)."),
                     io.Int.Output(display_name="frames", tooltip="Frame count from the header (0 when unknown)."),
                     io.Int.Output(display_name="width", tooltip="Frame width in pixels, as players show it (a "
                                                                     "phone's rotation flag applied)."),
                     io.Int.Output(display_name="height", tooltip="Frame height in pixels, as players show it.")],
        )

    @classmethod
    @override
    def execute(cls, video) -> io.NodeOutput:
        path = video_file(video, Path(folder_paths.get_temp_directory()) / "latentsync")
        info = video_info(path)
        return io.NodeOutput(info.fps or FPS.default, info.frames, info.width, info.height)
