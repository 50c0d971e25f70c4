"""A streamed lip-sync from files as one value (`Job`), and what its output is made from (`job_identity`).

`Job` holds the inputs, the model files, the sampler settings, the face to follow, the run's options and the
output path: `stream.lipsync_video_file(job, models)` runs it, on this process or a Ray cluster. The identity
is the record `media/partial.PartialOutput` keeps in `job.json` and compares on `--resume`; the video-file node
builds the same record from the tensors it is given (their digests stand for the files), and hashes it to name
its output.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..audio.features import FPS
from ..audio.vad import THRESHOLD
from ..face.blend import BLEND_MASK, Blend
from ..face.detect import FaceDetector, FaceTracker, check_selection
from ..face.smooth import SMOOTHING
from ..media.partial import file_identity
from ..media.video import CRF
from ..sample.settings import SamplerSettings
from ..sample.vae import OFFLOAD, VAE_BATCH, VAE_TILING
from .pipeline import UNetSpec

# job.json's layout: a partial output left by another layout is refused on --resume, with the differences.
JOB_FORMAT = 2


@dataclass(frozen=True)
class FaceChoice:
    """The face a run follows: the detector that finds faces, and which one to take when there are several
    (`FaceTracker`'s select/index/position; it is then tracked from frame to frame), its points steadied from
    frame to frame or not (`smoothing`, `smooth.SMOOTHING`)."""

    detector: FaceDetector
    select: str = "largest"
    index: int = 0
    position: tuple[float, float] | None = None
    smoothing: bool = SMOOTHING.default

    def check(self) -> None:
        check_selection(self.select, self.index, self.position)
        SMOOTHING.check(self.smoothing, "the face smoothing")

    def tracker(self) -> FaceTracker:
        return FaceTracker(self.detector, self.select, self.index, self.position, smoothing=self.smoothing)

    def identity(self) -> dict:
        detector = self.detector
        return {"detector": getattr(detector, "name", type(detector).__name__),
                "threshold": getattr(detector, "threshold", None), "select": self.select, "index": self.index,
                "position": None if self.position is None else list(self.position), "smoothing": self.smoothing}


@dataclass(frozen=True)
class MemoryOptions:
    """The VAE's and whisper's memory options (`sample/presets.py`): images per VAE call, the VAE in tiles, and
    whisper to the CPU once the features are made with the VAE on the device only for its calls."""

    vae_batch: int = VAE_BATCH.default
    vae_tiling: bool = VAE_TILING.default
    offload: bool = OFFLOAD.default

    def check(self) -> None:
        for option in (VAE_BATCH, VAE_TILING, OFFLOAD):
            option.check(getattr(self, option.name))


STREAMED_BLEND_MASKS = tuple(choice for choice in BLEND_MASK.choices if choice != "custom")


def streamed_blend(blend: Blend) -> Blend:
    """`blend` checked for a streamed run, which offers no custom mask (it has no frames to give one for)."""
    if blend.mask == "custom":
        raise ValueError("blend_mask custom is not offered for a streamed run (the lipsync command, the video-file "
                         "sampler): choose reference or landmarks, or lip-sync IMAGE frames and paste them with "
                         "Paste Faces Back and your MASK")
    return blend.check(1, (1, 1))  # nothing of the frames is checked without a custom mask


def blend_options(blend: Blend) -> dict:
    """The blend's part of a job's `options` (nothing for the default, so older partial outputs still match)."""
    chosen = {"mask": blend.mask, "grow": blend.grow, "feather": blend.feather, "colour_match": blend.colour_match}
    default = Blend()
    return {} if chosen == {name: getattr(default, name) for name in chosen} else {"blend": chosen}


def job_identity(inputs: dict, settings: SamplerSettings, face: FaceChoice, options: dict) -> dict:
    """What a streamed run's output is made from, in one record (JSON-able): `inputs` names each input by its
    identity (a file's `file_identity`, or a digest of the tensor a node was given), then every sampler setting,
    the face choice, and `options`, the run's choices that change the output's pixels (crf, dtype ...)."""
    return {"format": JOB_FORMAT, "inputs": inputs, "settings": asdict(settings), "face": face.identity(),
            "options": options}


@dataclass(frozen=True)
class Job:
    """One lip-sync of the file `video` (or a still image) to `audio`, written to the mp4 `out`.

    `device` and `dtype` default to those of the model set the job runs with (a new one: CUDA when there is
    one, in fp16 there, else the CPU in fp32). `compile_mode` compiles the UNet
    (`unet/compile.py`); `still_fps` is a still image's frame rate; `resume` continues a run that stopped with
    the same job (`media/partial.py`); `blend` is what is pasted back (`streamed_blend`: no custom mask);
    `prepared` is a prepared video's folder (`prepared/`: made on the first run, its faces and latents read on
    later ones; the output is the same), made again when `rebuild_prepared`."""

    video: Path
    audio: Path
    out: Path
    unet: UNetSpec
    whisper: Path
    vae: Path
    face: FaceChoice
    settings: SamplerSettings = field(default_factory=SamplerSettings)
    device: torch.device | None = None
    dtype: torch.dtype | None = None
    memory: MemoryOptions = MemoryOptions()
    compile_mode: str | None = None
    crf: int = CRF.default
    vad_threshold: float = THRESHOLD.default
    seamless: bool = False
    still_fps: float = FPS.default
    resume: bool = False
    blend: Blend = Blend()
    prepared: Path | None = None
    rebuild_prepared: bool = False

    def __post_init__(self) -> None:
        for name in ("video", "audio", "out", "whisper", "vae"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        if self.device is not None:
            object.__setattr__(self, "device", torch.device(self.device))
        if self.prepared is not None:
            object.__setattr__(self, "prepared", Path(self.prepared))

    def identity(self, still: bool) -> dict:
        """`job_identity` of this job's files and options (its device and dtype resolved: see
        `stream.lipsync_video_file`); `still`: the video is a still image, so its fps counts."""
        inputs = {"video": file_identity(self.video), "audio": file_identity(self.audio),
                  "unet": {**file_identity(self.unet.path), "config": self.unet.config,
                           "quantization": self.unet.quantization},
                  "whisper": file_identity(self.whisper), "vae": file_identity(self.vae)}
        options = {"vad_threshold": self.vad_threshold, "seamless": self.seamless, "crf": self.crf,
                   "still_fps": self.still_fps if still else None, "device": self.device.type,
                   "dtype": str(self.dtype).removeprefix("torch."),
                   "vae_calls": {"batch": self.memory.vae_batch, "tiling": self.memory.vae_tiling},
                   **blend_options(self.blend)}
        return job_identity(inputs, self.settings, self.face, options)
