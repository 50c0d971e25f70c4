"""Speaker nodes: voices as speakers, diarization of a mixed track, and who drives which face."""
from __future__ import annotations

import importlib.util

import torch

from ..latentsync.audio import diarize
from ..latentsync.audio.features import FPS
from ..latentsync.catalogue import CATALOGUE
from ..latentsync.audio.vad_pyannote import INSTALL_HINT

from ..latentsync.media.audio import to_mono_16k
from ..latentsync.score.syncnet import load_syncnet
from ..latentsync.speakers.cast import (AUTO, Speaker, auto_mapping, cast_payload, make_cast, preview_frame,
                                        timeline_payload, unique_speakers)
from ._comfy import folder_paths, io, model_management, override, progress_reporter, ui
from .base import LatentSyncNode, option_input
from .data_types import AudioFeatures, Cast, FaceTracks, Speakers, Speech

NO_MODEL = "none"


class SpeakerNode(LatentSyncNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncSpeaker",
            display_name="Speaker (LatentSync)",
            category="LatentSync/speakers",
            description="One person's voice for a clip with several faces: their features (Whisper Encode of "
                        "their own audio stem) and when they speak (the VAD of that stem). Chain Speaker nodes "
                        "to list several people, then Assign Faces to Speakers.",
            inputs=[
                AudioFeatures.Input("features", tooltip="Whisper Encode of this person's voice, at the video's fps."),
                io.String.Input("name", default="", tooltip="A name shown in the mapping (empty: SPEAKER_1, "
                                                            "SPEAKER_2, ... in chain order)."),
                Speech.Input("speech", optional=True,
                             tooltip="This voice's speech segments (VAD node); else the ones Whisper Encode got."),
                io.Audio.Input("audio", optional=True,
                               tooltip="This voice, for matching faces to speakers by SyncNet (mapping auto)."),
                Speakers.Input("speakers", optional=True, tooltip="Speakers listed before this one."),
            ],
            outputs=[Speakers.Output(display_name="speakers", tooltip="The speakers so far, this one last.")],
        )

    @classmethod
    @override
    def execute(cls, features, name: str, speech=None, audio=None, speakers=None) -> io.NodeOutput:
        speech = speech if speech is not None else features.speech
        if speech is None:
            raise ValueError("the speaker needs to know when it speaks: connect the VAD node's speech of this "
                             "voice (or give Whisper Encode the speech segments)")
        audio16k = to_mono_16k(audio["waveform"], audio["sample_rate"]) if audio is not None else None
        listed = list(speakers or []) + [Speaker(name.strip(), features, speech, audio16k)]
        return io.NodeOutput(unique_speakers(listed))


class AssignFaces(LatentSyncNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        models = folder_paths.get_filename_list("syncnet")
        return io.Schema(
            node_id="LatentSyncAssignFaces",
            display_name="Assign Faces to Speakers (LatentSync)",
            category="LatentSync/speakers",
            description="Says which face track (A, B, ... from Detect Faces with track_all) each speaker drives. "
                        "auto matches them by SyncNet when a SyncNet model and the speakers' audio are given, "
                        "else in order; type a mapping to fix it. The mapping is saved with the workflow.",
            is_output_node=True,
            inputs=[
                io.Image.Input("images", tooltip="The frames the face tracks were found in."),
                option_input(FPS, "Frame rate of the images (for the timeline and SyncNet)."),
                FaceTracks.Input("tracks", tooltip="Every face of the clip: Detect Faces' tracks output."),
                Speakers.Input("speakers", tooltip="From Speaker or Diarize Speakers."),
                io.String.Input("mapping", default=AUTO, multiline=True,
                                tooltip="auto, or e.g. 'A = 1, B = 2' (A + C = 1 merges two tracks; B = none "
                                        "leaves a face untouched)."),
                io.Combo.Input("syncnet_model", options=[NO_MODEL, *models], default=NO_MODEL,
                               tooltip="mapping auto: SyncNet (syncnet_v2.model, models/syncnet/) finds each "
                                       "speaker's face; none: in order."),
            ],
            outputs=[
                Cast.Output(display_name="cast", tooltip="The faces and their speakers, for LatentSync Sampler "
                                                         "(speakers)."),
                io.String.Output(display_name="mapping", tooltip="The mapping used, in the mapping widget's "
                                                                 "syntax."),
                io.Image.Output(display_name="preview", tooltip="A keyframe with each face track's box and letter."),
            ],
        )

    @classmethod
    @override
    def check_inputs(cls, syncnet_model: str | None = None, **_) -> dict[str, str]:
        if syncnet_model not in (None, NO_MODEL) and folder_paths.get_full_path("syncnet", syncnet_model) is None:
            return {"syncnet_model": f"SyncNet model {syncnet_model!r} not found in models/syncnet; put LatentSync's "
                                     "checkpoints/auxiliary/syncnet_v2.model there, or choose none"}
        return {}

    @classmethod
    @override
    def execute(cls, images, fps: float, tracks, speakers, mapping: str, syncnet_model: str) -> io.NodeOutput:
        if len(images) != len(tracks):
            raise ValueError(f"{len(images)} frames but face tracks of {len(tracks)}; connect the frames the "
                             "faces were found in")
        speakers = unique_speakers(list(speakers))
        automatic, how = None, ""
        if mapping.strip().lower() in ("", AUTO) and syncnet_model != NO_MODEL:
            syncnet = load_syncnet(folder_paths.get_full_path_or_raise("syncnet", syncnet_model),
                                   device=model_management.get_torch_device())
            automatic, how = auto_mapping(images, fps, tracks, speakers, syncnet)
        cast = make_cast(tracks, speakers, mapping, automatic, how)
        picture = torch.from_numpy(preview_frame(images, cast)).float().div(255)[None]
        shown = ui.PreviewImage(picture, cls=cls).as_dict() | {"latentsync_cast": [cast_payload(cast)]}
        return io.NodeOutput(cast, cast.mapping_text(), picture, ui=shown)


DIARIZE_SOURCES = ("pyannote", "rttm")
PIPELINE_HINT = (f"{CATALOGUE['diarization'].what}: {CATALOGUE['diarization'].where_to_get()}, with "
                 f"{CATALOGUE['pyannote'].path} and {CATALOGUE['wespeaker'].path} beside its folder")


def diarization_configs() -> list[str]:
    """The pipelines in models/pyannote/: each folder with a config.yaml (speaker-diarization-3.1/config.yaml)."""
    return [name for name in folder_paths.get_filename_list("pyannote") if name.replace("\\", "/").endswith(
        "/config.yaml")]


class DiarizeSpeakers(LatentSyncNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncDiarize",
            display_name="Diarize Speakers (LatentSync)",
            category="LatentSync/speakers",
            description="Splits one mixed voice track into speakers: who speaks when, by pyannote's speaker "
                        "diarization from local files (offline), or from RTTM text you write or correct. Every "
                        "speaker is driven by the mixed track's features during its own turns.",
            is_output_node=True,
            inputs=[
                io.Audio.Input("audio", tooltip="The mixed voice track (every speaker in one track)."),
                AudioFeatures.Input("features", tooltip="Whisper Encode of the same track, at the video's fps."),
                io.Combo.Input("source", options=list(DIARIZE_SOURCES), default="pyannote",
                               tooltip="pyannote: find the speakers with the pipeline below; rttm: take the turns "
                                       "from the rttm text."),
                io.Combo.Input("pipeline", options=[NO_MODEL, *diarization_configs()], default=NO_MODEL,
                               tooltip="source pyannote: speaker-diarization-3.1/config.yaml in models/pyannote/, "
                                       "beside its two model folders."),
                io.Int.Input("num_speakers", default=0, min=0, max=16,
                             tooltip="source pyannote: how many people speak; 0 lets the pipeline decide."),
                io.String.Input("rttm", default="", multiline=True,
                                tooltip="source rttm: lines 'SPEAKER audio 1 <start s> <duration s> <NA> <NA> "
                                        "<name> <NA> <NA>'."),
            ],
            outputs=[
                Speakers.Output(display_name="speakers", tooltip="One speaker per voice found, in order of "
                                                                 "first speech."),
                io.String.Output(display_name="rttm", tooltip="The turns as RTTM: paste them into rttm (source "
                                                              "rttm) to correct them."),
            ],
        )

    @classmethod
    @override
    def check_inputs(cls, source: str | None = None, pipeline: str | None = NO_MODEL, **_) -> dict[str, str]:
        if source != "pyannote":
            return {}
        if importlib.util.find_spec("pyannote") is None:
            return {"source": INSTALL_HINT}
        if pipeline is not None and (pipeline == NO_MODEL or folder_paths.get_full_path("pyannote", pipeline) is None):
            folders = ", ".join(folder_paths.get_folder_paths("pyannote"))
            return {"pipeline": f"source pyannote needs a diarization pipeline: {PIPELINE_HINT} (ComfyUI's pyannote "
                                f"folders: {folders}), or use source rttm"}
        return {}

    @classmethod
    @override
    def execute(cls, audio, features, source: str, pipeline: str, num_speakers: int, rttm: str) -> io.NodeOutput:
        audio16k = to_mono_16k(audio["waveform"], audio["sample_rate"])
        duration = audio16k.shape[-1] / 16000
        if source == "rttm":
            turns = diarize.parse_rttm(rttm, duration)
        else:
            config = folder_paths.get_full_path_or_raise("pyannote", pipeline)
            turns = diarize.diarize(audio16k, diarize.load_diarization(config),
                                    num_speakers=num_speakers or None, progress=progress_reporter())
        if not turns.speakers:
            raise ValueError("no speaker was found in the audio" if source == "pyannote" else
                             "the rttm text holds no SPEAKER line; write one per turn, or use source pyannote")
        speakers = [Speaker(name, features, turns.speakers[name], audio16k) for name in turns.names]
        payload = timeline_payload(speakers, how=f"{len(speakers)} speakers ({source})")
        return io.NodeOutput(speakers, turns.to_rttm(), ui={"latentsync_cast": [payload]})
