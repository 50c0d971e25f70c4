"""Several faces, several voices: each face track lip-synced to its own speaker.

One pass of the ordinary sampler per face that has a speaker, in label order (A, then B, ...), each on the
frames the previous pass made: where two crops overlap, the later face is pasted over the earlier, the same way
every run. A pass drives its face with its speaker's features and gates it with its speaker's speech, so the VAD
policy decides what the face does while its speaker is silent: `silence` keeps the mouth at rest, `skip` leaves
those frames untouched; where two speakers overlap, both mouths move. The first pass applies the length rules
(audio longer or shorter than the video); the later ones see frames that already match the audio.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from ..speakers.cast import Cast
from .frame_plan import audio_frame_count
from .sampler import LipSyncResult, Output, Progress, lipsync, plan_lipsync
from .progress import StepInfo, StepProgress
from .settings import SETTING, SamplerSettings
from .denoise import FaceVAE

# With several speakers a face rests while its own speaker is silent, unless the user says otherwise.
CAST_VAD_POLICY = replace(SETTING["vad_policy"], default="silence",
                          help="While a face's speaker is silent: silence rests the mouth, skip leaves it untouched; "
                               "off: its own audio throughout.")


def check_cast(cast: Cast, settings: SamplerSettings) -> list:
    """The roles to generate (faces with a speaker), after checking the speakers can drive one clip together."""
    roles = [role for role in cast.roles if role.speaker is not None]
    if not roles:
        listed = ", ".join(role.label for role in cast.roles) or "none"
        raise ValueError(f"no face has a speaker (face tracks: {listed}); map at least one, e.g. 'A = 1'")
    speakers = {id(role.speaker.features): role.speaker for role in roles}
    rates = {round(s.features.fps, 6) for s in speakers.values()}
    if len(rates) > 1:
        raise ValueError(f"the speakers' features were made at different frame rates ({sorted(rates)}); encode "
                         "every voice at the video's fps")
    counts = {s.name: audio_frame_count(s.features.duration, s.features.fps, s.features.frames)
              for s in speakers.values()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name}: {n} frames" for name, n in counts.items())
        raise ValueError(f"the speakers' voices differ in length ({listed}); give every speaker audio of the same "
                         "length (pad the stems with silence), so one output clip fits them all")
    if settings.vad_policy == "off" and len(roles) > len(speakers):
        raise ValueError("vad_policy 'off' would drive every face with the whole shared track; choose 'silence' "
                         "(a face rests while its speaker is silent) or 'skip' (its frames stay untouched)")
    return roles


@torch.no_grad()
def lipsync_cast(frames: Tensor | np.ndarray, cast: Cast, unet: torch.nn.Module, vae: FaceVAE,
                 settings: SamplerSettings = SamplerSettings(), *, resolution: int = 256,
                 device: torch.device | str | None = None, progress: Progress | None = None,
                 output: Output = Output()) -> LipSyncResult:
    """Lip-sync every face of `cast` that has a speaker, each to its speaker (see the module's docstring).

    `frames` are the clip the cast's face tracks were found in. The result's `generated` marks frames where any
    face was diffused; `crops` and `faces` are those of the last face generated; `blend_weights` (with
    `output.weights`) is, per pixel, the largest of the faces' blend weights. `output` is the frames' dtype and
    what each face's paste-back does (the reference's whole crop, or the landmark mouth; a custom mask is not
    offered: one mask cannot say which face it is for).
    """
    settings.validate()  # lipsync checks the window against this UNet too
    if output.blend.mask == "custom":
        raise ValueError("blend_mask custom is not offered for several faces (one mask cannot say which face it is "
                         "for): choose reference or landmarks")
    roles = check_cast(cast, settings)
    count = len(frames)
    for role in roles:
        if len(role.track) != count:
            raise ValueError(f"face track {role.label} has {len(role.track)} frames but the clip has {count}; "
                             "find the faces on the same frames")
    # Every pass's plan up front: one progress bar over all of them, and errors before any diffusion.
    totals, source_index, frames_in = [], np.arange(count), count
    for role in roles:
        plan = plan_lipsync(frames_in, role.speaker.features, role.track.valid[source_index], settings,
                            role.speaker.speech)
        totals.append(plan.total_steps)
        source_index, frames_in = source_index[plan.source_index], plan.frames
    done = [0]

    class Offset(StepProgress):  # one run's steps counted after the passes before it; steps passed on
        def __init__(self, offset: int):
            self.offset = offset

        def __call__(self, current: int, _total: int) -> None:
            done[0] = self.offset + current
            if progress is not None:
                progress(done[0], sum(totals))

        def step(self, info: StepInfo) -> None:
            if isinstance(progress, StepProgress):
                progress.step(replace(info, done=done[0], total=sum(totals)))

    def report(offset: int) -> Offset:
        return Offset(offset)

    current, source_index, generated, stats, result = frames, np.arange(count), None, [], None
    weights = None  # with output.weights: per output frame, the most any face's paste took of the generated face
    for number, role in enumerate(roles):
        result = lipsync(current, role.speaker.features.with_speech(role.speaker.speech), unet, vae, settings,
                         faces=role.track.subset(source_index), resolution=resolution, device=device,
                         progress=report(sum(totals[:number])), output=output)
        source_index = source_index[result.source_index]
        generated = result.generated if generated is None else generated | result.generated
        if result.blend_weights is not None:
            new = result.blend_weights
            previous = None if weights is None else weights[torch.from_numpy(result.source_index)]
            weights = new if previous is None else torch.maximum(previous, new, out=new)
        stats.append({"face": role.label, "speaker": role.speaker.name} | result.stats)
        current = result.frames
    return LipSyncResult(frames=result.frames, crops=result.crops, faces=result.faces, generated=generated,
                         source_index=source_index, fps=result.fps, stats={"faces": stats}, blend_weights=weights)
