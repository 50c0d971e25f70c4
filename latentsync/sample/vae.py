"""The SD VAE for standalone use (outside ComfyUI, whose own VAE loader serves the nodes).

LatentSync encodes and decodes faces with stabilityai's sd-vae-ft-mse. This loads the official single file,
`vae-ft-mse-840000-ema-pruned.safetensors` (or `.ckpt`) from stabilityai/sd-vae-ft-mse-original, which is
in the original latent-diffusion (LDM) key layout, into diffusers' `AutoencoderKL` built from the config
shipped in `latentsync/assets/` (nothing is fetched). The diffusers-layout file of stabilityai/sd-vae-ft-mse
(`diffusion_pytorch_model.safetensors`) loads too. Every tensor must be present with its exact shape;
anything else is refused with a message saying what was found. The one freedom is width: an SD-family VAE
whose four levels are narrower (the tests run one, a CPU's fraction of the cost) loads with its own widths.
"""
from __future__ import annotations

import json
import re
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor

from ..catalogue import CATALOGUE
from ..checkpoint import CheckpointError, read_checkpoint
from ..core.digest import weights_digest
from ..core.options import Option
from ..core.process_state import hushed

CONFIG_PATH = Path(__file__).resolve().parents[1] / "assets" / "sd_vae_ft_mse.json"
OFFICIAL_FILE = CATALOGUE["vae"].source_file
WHERE_TO_GET = CATALOGUE["vae"].where_to_get()
# Training leftovers some LDM files carry; they are not part of the autoencoder.
_IGNORED_PREFIXES = ("model_ema.", "loss.")
# How the VAE runs (the run options a preset bundles; ComfyUI's own VAE manages itself).
VAE_BATCH = Option("vae_batch", 8, "Images per VAE call (1: the least memory; 16: a window's frames, as the "
                   "reference).", low=1)
VAE_TILING = Option("vae_tiling", False, "VAE in 256 px tiles (acts on 1.6's 512 px crops; less memory, faint "
                    "tile blending).")
OFFLOAD = Option("offload", False, "Whisper to the CPU once the features are made; the VAE on the device only "
                 "for its calls.")


class VAECheckpointError(CheckpointError):
    """The file is not the SD VAE; the message says what it looks like and where to get the right one."""


def vae_config() -> dict:
    """The diffusers `AutoencoderKL` config of sd-vae-ft-mse (without bookkeeping keys)."""
    config = json.loads(CONFIG_PATH.read_text(encoding="utf-8"))
    return {key: value for key, value in config.items() if not key.startswith("_")}


def file_widths(tensors: dict[str, Tensor], groups: int = 32) -> list[int] | None:
    """The encoder's per-level widths a VAE file has (LDM or diffusers names), when they make an SD-family
    autoencoder that differs from sd-vae-ft-mse only in width: four levels (8x down), each a multiple of the
    norm's `groups`. None otherwise, and the file is checked against the official widths."""
    widths = []
    for level in range(len(vae_config()["block_out_channels"])):
        for key in (f"encoder.down.{level}.block.0.conv1.weight", f"encoder.down_blocks.{level}.resnets.0.conv1.weight"):
            if key in tensors and tensors[key].ndim == 4:
                widths.append(int(tensors[key].shape[0]))
                break
        else:
            return None
    return widths if all(w > 0 and w % groups == 0 for w in widths) else None


def ldm_to_diffusers_key(key: str, levels: int = 4) -> str:
    """The diffusers name of an LDM-layout VAE tensor (unknown names come back unchanged)."""
    def up_level(match: re.Match) -> str:
        # LDM counts decoder levels from the lowest resolution up, diffusers from the top down.
        return f"decoder.up_blocks.{levels - 1 - int(match.group(1))}."

    rules = (
        (r"^(encoder|decoder)\.mid\.block_(\d)\.", lambda m: f"{m.group(1)}.mid_block.resnets.{int(m.group(2)) - 1}."),
        (r"^(encoder|decoder)\.mid\.attn_1\.norm\.", r"\1.mid_block.attentions.0.group_norm."),
        (r"^(encoder|decoder)\.mid\.attn_1\.([qkv])\.", r"\1.mid_block.attentions.0.to_\2."),
        (r"^(encoder|decoder)\.mid\.attn_1\.proj_out\.", r"\1.mid_block.attentions.0.to_out.0."),
        (r"^encoder\.down\.(\d+)\.block\.", r"encoder.down_blocks.\1.resnets."),
        (r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0."),
        (r"^decoder\.up\.(\d+)\.block\.", lambda m: up_level(m) + "resnets."),
        (r"^decoder\.up\.(\d+)\.upsample\.", lambda m: up_level(m) + "upsamplers.0."),
        (r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out."),
        (r"\.nin_shortcut\.", ".conv_shortcut."),
    )
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def read_vae_file(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a `.safetensors` or PyTorch (`.ckpt`/`.pt`, optionally under "state_dict") file."""
    payload = read_checkpoint(path, f"the SD VAE ({OFFICIAL_FILE})", WHERE_TO_GET, error=VAECheckpointError)
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict):
        raise VAECheckpointError(f"{path} holds a {type(payload).__name__}, not a state dict. {WHERE_TO_GET}")
    return {key: value for key, value in payload.items() if isinstance(value, Tensor)}


def convert_state_dict(state_dict: dict[str, Tensor], expected: dict[str, torch.Size], path: Path,
                       levels: int = 4) -> dict[str, Tensor]:
    """`state_dict` (LDM or diffusers layout) renamed and reshaped to `expected`; raises on any mismatch."""
    tensors = {k: v for k, v in state_dict.items() if not k.startswith(_IGNORED_PREFIXES)}
    if any(key.startswith("first_stage_model.") for key in tensors):
        raise VAECheckpointError(
            f"{path} is a whole Stable Diffusion checkpoint (first_stage_model.*), not a VAE file. {WHERE_TO_GET}")
    diffusers_layout = set(tensors) <= set(expected)
    converted = {}
    for key, value in tensors.items():
        name = key if diffusers_layout else ldm_to_diffusers_key(key, levels)
        if name in expected and value.ndim == 4 and len(expected[name]) == 2:
            value = value[:, :, 0, 0]  # LDM's attention projections are 1x1 convolutions
        converted[name] = value
    missing = [k for k in expected if k not in converted]
    unexpected = [k for k in converted if k not in expected]
    wrong = [k for k in expected if k in converted and tuple(converted[k].shape) != tuple(expected[k])]
    if missing or unexpected or wrong:
        problems = []
        if missing:
            problems.append(f"{len(missing)} tensors missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(sorted(unexpected)[:3])})")
        if wrong:
            problems.append("; ".join(f"{k} is {list(converted[k].shape)}, expected {list(expected[k])}"
                                      for k in wrong[:3]))
        raise VAECheckpointError(
            f"{path} is not the SD VAE (sd-vae-ft-mse, 4 latent channels, widths 128-512): {len(tensors)} tensors, "
            + "; ".join(problems) + f". Nothing was loaded. {WHERE_TO_GET}")
    return converted


class DiffusersFaceVAE:
    """diffusers' `AutoencoderKL` behind the sampler's `FaceVAE` interface (unscaled latents, [-1, 1] images).

    Encoding samples the posterior as the reference does (`latent_dist.sample()`), from a generator the sampler
    reseeds per run; `sample_posterior=False` takes its mean. Batches run `batch_size` images at a time to
    bound activation memory. With `offload` the weights live on the CPU and visit `device` for each encode and
    decode only (the low-VRAM preset: the UNet's activations then have the device to themselves).
    """

    def __init__(self, model, sample_posterior: bool = True, batch_size: int = VAE_BATCH.default, seed: int = 0,
                 device: torch.device | str | None = None, offload: bool = OFFLOAD.default):
        self.model = model
        self.sample_posterior = sample_posterior
        self.batch_size = max(int(batch_size), 1)
        self.offload = offload
        self._device = torch.device(device) if device is not None else next(model.parameters()).device
        self._generator: torch.Generator | None = None
        self.reseed(seed)

    @property
    def device(self) -> torch.device:
        """Where encode and decode compute (with `offload`, not where the weights rest)."""
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @contextmanager
    def _on_device(self):
        if not self.offload:
            yield
            return
        self.model.to(self._device)
        try:
            yield
        finally:
            self.model.to("cpu")

    def reseed(self, seed: int) -> None:
        self._generator = torch.Generator(device=self.device).manual_seed(int(seed))

    @torch.no_grad()
    def moments(self, images: Tensor) -> Tensor:
        """`[B, 8, h, w]` in the VAE's dtype: the posterior's mean and log-variance of each image, `batch_size`
        images per call (`denoise.face_moments` calls it with one frame's two faces)."""
        with self._on_device():
            return torch.cat([self.model.encode(batch.to(self.device, self.dtype)).latent_dist.parameters
                              for batch in images.split(self.batch_size)])

    @torch.no_grad()
    def sample(self, moments: Tensor) -> Tensor:
        """Latents from `moments`: drawn from the posterior, `batch_size` at a time, with the generator the
        sampler reseeds per window (as the reference's `latent_dist.sample()`), or its mean."""
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        out = []
        for batch in moments.split(self.batch_size):
            posterior = DiagonalGaussianDistribution(batch.to(self.device, self.dtype))
            latents = posterior.sample(generator=self._generator) if self.sample_posterior else posterior.mode()
            out.append(latents.float())
        return torch.cat(out)

    def encode(self, images: Tensor) -> Tensor:
        return self.sample(self.moments(images))

    def identity(self) -> dict:
        """What a prepared video records of this VAE: its weights, precision, and what changes its moments."""
        return {"kind": "diffusers", "weights": weights_digest(self.model),
                "dtype": str(self.dtype).removeprefix("torch."), "batch": self.batch_size,
                "tiling": bool(getattr(self.model, "use_tiling", False))}

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        with self._on_device():
            return torch.cat([self.model.decode(batch.to(self.device, self.dtype)).sample.float()
                              for batch in latents.split(self.batch_size)])


def load_vae(path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
             sample_posterior: bool = True, batch_size: int = VAE_BATCH.default, tiling: bool = VAE_TILING.default,
             offload: bool = OFFLOAD.default) -> DiffusersFaceVAE:
    """Load sd-vae-ft-mse from `path` (see the module docstring) as a `DiffusersFaceVAE` running on `device`.

    `batch_size`: images per call; `tiling`: diffusers' tiled encode and decode, which acts on crops larger
    than the config's `sample_size` (256 px: 1.6's 512 px crops, in 256 px tiles blended over 64 px);
    `offload`: the weights rest on the CPU between calls (see `DiffusersFaceVAE`)."""
    path = Path(path)
    state_dict = read_vae_file(path)
    try:
        with hushed():  # with torchao installed, diffusers imports it and logs about a type it lacks
            from diffusers import AutoencoderKL
    except ImportError as exc:
        raise ImportError("the standalone VAE needs diffusers: pip install 'diffusers>=0.30'") from exc
    config = vae_config()
    # The official file has the official widths; a narrower SD-family VAE (the tests' cheap stand-in) its own.
    config["block_out_channels"] = file_widths(state_dict, config["norm_num_groups"]) or config["block_out_channels"]
    with torch.device("meta"):
        model = AutoencoderKL.from_config(config)
    expected = {name: tensor.shape for name, tensor in model.state_dict().items()}
    tensors = convert_state_dict(state_dict, expected, path, len(config["block_out_channels"]))
    # Own copies: tensors read from a file may be views of it (a crash if it is overwritten while loaded).
    home = "cpu" if offload else device
    owned = {name: tensors.pop(name).to(device=home, dtype=dtype, copy=True) for name in expected}
    model.load_state_dict(owned, strict=True, assign=True)
    model.eval().requires_grad_(False)
    if tiling:
        model.enable_tiling()
    return DiffusersFaceVAE(model, sample_posterior=sample_posterior, batch_size=batch_size, device=device,
                            offload=offload)
