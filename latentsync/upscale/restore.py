"""Face restoration of the generated crops, blended only where the mouth was regenerated.

LatentSync's mouths and teeth come out soft. A face restorer (GFPGAN v1.3/v1.4, RestoreFormer, CodeFormer) run
over the whole frame would also change the eyes and the skin that LatentSync kept from the video, so here it
runs on the aligned crops the sampler made, and its result replaces the crop only inside the mouth mask, with
the feathered edge the mouth-only upscale uses (`frames.mouth_weight`).

Files are read as data (`checkpoint.read_checkpoint`, through `models.load_spandrel_descriptor`) and built by
spandrel from a registry made here: spandrel's own architectures plus spandrel-extra-arches' (CodeFormer) when
that package is installed. spandrel's global registry is never changed.

`FaceRestorer` owns each architecture's calling convention, as the official inference code calls it
(TencentARC/GFPGAN `gfpgan/utils.py`, sczhou/CodeFormer `inference_codeformer.py`): input in [-1, 1], the
first output mapped back to 0-1. GFPGAN uses its stored noise (`randomize_noise=False`) so that a clip restores
the same way twice.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..catalogue import CATALOGUE
from ..checkpoint import CheckpointError
from ..core.process_state import contained, hushed
from ..face.align import FILL
from .frames import as_frames, mouth_weight
from .models import arch_name, import_spandrel, load_spandrel_descriptor
from .options import FEATHER, RESTORE_CHUNK, STRENGTH, TEMPORAL
from .resize import resize_nchw
from .tiling import (Progress, TiledRunner, Tiling, check_host_memory, default_device, default_dtype, placed,
                     report)

FACE_ARCHITECTURES = ("GFPGAN", "RestoreFormer", "CodeFormer")
# The face size every supported restorer was trained on (FFHQ-aligned 512 px faces).
FACE_SIZE = 512
# CodeFormer's quality/fidelity balance `w`, as the official script's default.
DEFAULT_FIDELITY = 0.5
CODEFORMER_NEEDS = ("pip install spandrel-extra-arches; CodeFormer's weights are non-commercial "
                    "(S-Lab licence)")
# Full-resolution feature maps alive at once, in units of the first conv's width (the U-Net skips of GFPGAN,
# the encoder/decoder maps of RestoreFormer and CodeFormer); the deeper layers run at 1/4 of the pixels or less.
_FULL_RES_MAPS = 24
# Restore Mouths' chunk; the tile is always the restorer's whole face (`restore_mouths`).
RESTORE_TILING = Tiling(chunk=RESTORE_CHUNK.default)


@dataclass(frozen=True)
class MouthBlend:
    """How the restored mouth goes into the crops: `strength` toward the restored face, over the mouth mask softened
    by `feather` (a fraction of the crop side), the change steadied over time by `temporal` (`restore_mouths`)."""

    strength: float = STRENGTH.default
    feather: float = FEATHER.default
    temporal: float = TEMPORAL.default

    def __post_init__(self) -> None:
        for option in (STRENGTH, FEATHER, TEMPORAL):
            option.check(getattr(self, option.name))


class FaceRestorerError(CheckpointError):
    """A file or object that cannot be used as a face restorer; the message says what it is instead."""


class FaceRestorer:
    """A spandrel face-restoration descriptor behind `upscale.models.UpscaleModel`: `restorer(x)` maps
    `[B, 3, 512, 512]` in 0-1 to the same shape in 0-1, `.scale` is 1, `.model` the `nn.Module`."""

    scale = 1
    size = FACE_SIZE

    def __init__(self, descriptor: Any, fidelity: float = DEFAULT_FIDELITY):
        self.descriptor = descriptor
        self.architecture = arch_name(descriptor)
        self.fidelity = float(fidelity)

    @property
    def model(self) -> torch.nn.Module:
        return self.descriptor.model

    @property
    def supports_half(self) -> bool:
        return bool(getattr(self.descriptor, "supports_half", False))

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        module = self.model
        # The runner hands over a permuted (channels-last) view; GFPGAN's `view` needs a contiguous tensor.
        image = image.contiguous()
        if module.training:
            module.eval()  # as spandrel does before a call: dropout and batch statistics off
        if self.architecture == "GFPGAN":
            restored = module(image * 2 - 1, return_rgb=False, randomize_noise=False)[0]
        elif self.architecture == "CodeFormer":
            # spandrel-extra-arches' CodeFormer names the official `w` `weight` (and always uses AdaIN, as the
            # official script asks); an unknown keyword would be swallowed by its **kwargs.
            restored = module(image * 2 - 1, weight=self.fidelity)[0]
        else:  # RestoreFormer: spandrel's call already maps 0-1 to [-1, 1] and back
            return self.descriptor(image)
        return ((restored + 1) / 2).clamp(0, 1)

    def estimate_activation_bytes(self, height: int, width: int, batch: int, dtype: torch.dtype) -> int:
        """Peak device memory of one call (weights not included), for the planner in `tiling.py`."""
        first = next((m for m in self.model.modules() if isinstance(m, torch.nn.Conv2d)), None)
        width_0 = first.out_channels if first is not None else 64
        element = torch.empty((), dtype=dtype).element_size()
        return batch * height * width * (element * width_0 * _FULL_RES_MAPS + 4 * 3 * 2)


def load_face_restorer(path: str | Path, device: str | torch.device = "cpu",
                       fidelity: float = DEFAULT_FIDELITY) -> FaceRestorer:
    """Load GFPGANv1.3/v1.4 (GFPGANv1Clean), RestoreFormer or CodeFormer from a .pth/.safetensors file.

    Raises `FileNotFoundError` (with where to get GFPGANv1.4) for a missing file and `FaceRestorerError` for any
    other model (an upscaler, a VAE, ...), a file that is code, or CodeFormer without spandrel-extra-arches.
    `fidelity` is CodeFormer's `w` (0 = most restored, 1 = closest to the input).
    """
    path = Path(path)
    descriptor = load_spandrel_descriptor(
        path, device, expected="a face restoration model (GFPGANv1.4.pth, RestoreFormer.pth or codeformer.pth)",
        hint=f"For example, {CATALOGUE['gfpgan'].where_to_get()}", kind="a face restoration model",
        short="a face restorer", registry=_registry(), state_check=lambda state: _check_codeformer(state, path.name),
        error=FaceRestorerError)
    return check_face_restorer(descriptor, path.name, fidelity)


def check_face_restorer(model: Any, name: str = "the model", fidelity: float = DEFAULT_FIDELITY) -> FaceRestorer:
    """`model` (a spandrel descriptor, as ComfyUI's Load Upscale Model gives, or a `FaceRestorer`) as a
    `FaceRestorer`, or `FaceRestorerError` saying what it is instead."""
    if isinstance(model, FaceRestorer):
        return model
    module = getattr(model, "model", None)
    if not callable(model) or not isinstance(module, torch.nn.Module):
        raise FaceRestorerError(f"{name} is a {type(model).__name__}, not a face restoration model (expected a "
                                "spandrel ImageModelDescriptor, as ComfyUI's Load Upscale Model gives)")
    architecture = arch_name(model)
    if architecture in FACE_ARCHITECTURES:
        return FaceRestorer(model, fidelity)
    purpose = getattr(model, "purpose", "")
    if purpose == "SR":
        what = f"an upscaler ({architecture}, x{getattr(model, 'scale', '?')})"
        use = ": use it in Upscale Faces or Frames"
    else:
        what, use = f"a {purpose or 'image'} model ({architecture})", ""
    raise FaceRestorerError(f"{name} is {what}, not a face restoration model (GFPGAN, RestoreFormer or "
                            f"CodeFormer){use}")


def restore_mouths(crops: torch.Tensor, mouth_mask: torch.Tensor, model: FaceRestorer | Any, *,
                   blend: MouthBlend = MouthBlend(), size: int | None = None, tiling: Tiling = RESTORE_TILING,
                   device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                   progress: Progress | None = None) -> torch.Tensor:
    """Restore the regenerated mouths of `crops` `[N, H, W, 3]` (0-1, the sampler's 256 or 512 px crops);
    returns `[N, S, S, 3]` float32 on the CPU.

    `mouth_mask` is LatentSync's (1 = kept, 0 = regenerated; `AlignedFaces.mask`), in any shape
    `frames.mouth_weight` takes. The output side S is `size`, default the larger of the crop side and the
    model's 512. Each crop is resized to 512, restored, and resized to S; the base is the crop resized to S
    bicubically as `upscale_frames(..., "bicubic")` does (untouched when S is the crop side), and the result is
    `base + strength * w * (restored - base)`, `w` the feathered mouth weight (`blend`): where `strength * w` is 0
    the result is the base bit for bit.

    With `blend.temporal` t > 0 the crops are a clip, in order (consecutive frames of one face): the change
    `restored - base` of each crop is replaced by its exponential moving average, `t * previous + (1 - t) * change`,
    so the restorer cannot make the mouth flicker (the crops are aligned, so the average follows the head). A crop
    that is entirely grey 127 (the sampler's crop of a frame without a face) starts the average again. At 0 the
    result is the one above, bit for bit.

    `tiling.chunk` crops are on the device at once (halved when memory runs out) and `tiling.max_memory` caps the
    device memory planned; its tile, overlap and `min_tile` are not used (a restorer takes the whole face at its
    own size). `progress` may raise to cancel; the model goes back to its device and dtype. `dtype` defaults to
    fp32 for models that spandrel marks as not half-safe (all three).
    """
    crops = as_frames(crops)
    count, height, width, channels = crops.shape
    if height != width or channels != 3:
        raise ValueError(f"face crops are square RGB images [N, S, S, 3], got {tuple(crops.shape)}")
    model = check_face_restorer(model)
    side = int(size) if size else max(width, model.size)
    if side < 1:
        raise ValueError(f"size must be at least one pixel, got {size}")
    check_host_memory(count * side * side * 3 * 4, f"{count} crops of {side}x{side}", None)
    out = torch.empty(count, side, side, 3)
    weights = blend.strength * mouth_weight(mouth_mask, count, (side, side), blend.feather)
    chunk = tiling.chunk
    for start in range(0, count, max(1, chunk)):
        out[start:start + chunk] = _base(crops[start:start + chunk], side)
    if not bool((weights > 0).any()):
        report(progress, count, count)
        return out
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(model, device)
    faces = _AtModelSize(crops, model.size)
    steady = _Steady(blend.temporal, crops)
    with placed(model, device, dtype):
        whole_face = replace(tiling, tile=model.size, min_tile=model.size,
                             reserved=tiling.reserved + out.numel() * 4)
        runner = TiledRunner(model, faces, device, dtype, tiling=whole_face, progress=progress)
        for first, restored in runner.chunks():
            stop = first + restored.shape[0]
            restored = resize_nchw(restored, (side, side), "bicubic").permute(0, 2, 3, 1).cpu()
            weight = (weights if weights.shape[0] == 1 else weights[first:stop])[..., None]
            base = out[first:stop]
            restored = steady(first, restored, base)
            out[first:stop] = torch.where(weight > 0, torch.lerp(base, restored, weight), base)
    return out


class _Steady:
    """The temporal blend of `restore_mouths`: each crop's change (restored - base) as its exponential moving
    average over the crops before it, kept across chunks (which arrive in order); reset at an all-grey crop."""

    def __init__(self, temporal: float, crops: torch.Tensor):
        self.temporal, self.crops, self.average = float(temporal), crops, None

    def __call__(self, first: int, restored: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        if self.temporal == 0:
            return restored  # off: today's result, bit for bit
        steadied = torch.empty_like(restored)
        for row in range(restored.shape[0]):
            change = restored[row] - base[row]
            if bool(((self.crops[first + row] * 255 - FILL).abs() < 0.5).all()):
                self.average = None  # a frame without a face: restored as it is, the next face starts afresh
            else:
                if self.average is not None:
                    change = torch.lerp(change, self.average, self.temporal)
                self.average = change
            steadied[row] = base[row] + change
        return steadied


class _AtModelSize:
    """The crops as the runner reads them, resized to the restorer's size one chunk at a time (a whole clip at
    512 px would hold 3 MB a crop in RAM)."""

    def __init__(self, crops: torch.Tensor, side: int):
        self.crops, self.side = crops, side
        self.shape = (crops.shape[0], side, side, 3)

    def __getitem__(self, rows: slice) -> torch.Tensor:
        return resize_nchw(self.crops[rows].permute(0, 3, 1, 2), (self.side, self.side), "bicubic").permute(0, 2, 3, 1)


def _base(crops: torch.Tensor, side: int) -> torch.Tensor:
    """The crops at `side`, by `upscale_frames`' bicubic path (on the CPU); an exact copy at their own size."""
    return resize_nchw(crops.permute(0, 3, 1, 2), (side, side), "bicubic").permute(0, 2, 3, 1)


def _registry():
    """spandrel's architectures plus spandrel-extra-arches' when installed, in a registry of our own."""
    spandrel = import_spandrel()
    registry = spandrel.ArchRegistry()
    registry.add(*spandrel.MAIN_REGISTRY)
    extra = _extra_registry()
    if extra is not None:
        # ComfyUI adds the extra architectures to spandrel's main registry itself; those are already in.
        registry.add(*extra, ignore_duplicates=True)
    return registry


def _extra_registry():
    try:
        # Its import may add warning filters (keep the host's), and it scripts CodeFormer's parts with
        # torch.jit.script, which torch says is deprecated (a note for --debug).
        with contained(), hushed():
            from spandrel_extra_arches import EXTRA_REGISTRY
    except ImportError:
        return None
    return EXTRA_REGISTRY


def _check_codeformer(state: Mapping[str, Any], name: str) -> None:
    """CodeFormer needs spandrel-extra-arches; without it spandrel would only say it does not know the file."""
    if "position_emb" in state and "idx_pred_layer.1.weight" in state and _extra_registry() is None:
        raise FaceRestorerError(f"{name} is a CodeFormer model, which needs spandrel-extra-arches: "
                                f"{CODEFORMER_NEEDS}")
