"""One window through the models: VAE-encode the faces, denoise with the UNet, decode.

The UNet input has 13 channels, in the reference's order: the noisy latents (4), the mouth mask at latent
size (1, 1 = keep), the latents of the masked face (4) and of the reference face (4). The reference face is
the window's own unmasked crop, as at inference in the reference. Classifier-free guidance doubles the batch:
first the unconditional half with all-zero audio features (the reference has no learned null token), then the
audio half; `eps = uncond + guidance * (cond - uncond)`.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import Tensor

from ..unet.deepcache import DeepCache
from ..face.align import AlignedFaces
from .schedulers import Scheduler

LATENT_SCALE = 0.18215  # sd-vae-ft-mse, as LatentSync forces it (shift 0)


class FaceVAE(Protocol):
    """What the sampler needs from a VAE (ComfyUI's, or `vae.DiffusersFaceVAE`).

    Latents are UNSCALED (the sampler applies 0.18215). An adapter may also offer `reseed(seed)`, called at
    the start of each run, to make a posterior-sampling encoder reproducible, and split its encode in two:
    `moments(images)`, the deterministic part a prepared video stores (`prepared/`), and `sample(moments)`,
    the latents drawn from them. Without those, `encode` is taken as deterministic and stored as it is.
    """

    def encode(self, images: Tensor) -> Tensor:
        """`[B, 3, H, W]` in [-1, 1] -> `[B, 4, H/8, W/8]`."""
        ...

    def decode(self, latents: Tensor) -> Tensor:
        """`[B, 4, h, w]` -> `[B, 3, 8h, 8w]` in [-1, 1]."""
        ...


def to_clip(latents: Tensor) -> Tensor:
    """`[F, C, h, w]` frames -> `[1, C, F, h, w]`, the UNet's clip layout."""
    return latents.transpose(0, 1).unsqueeze(0)


def from_clip(latents: Tensor) -> Tensor:
    """`[1, C, F, h, w]` -> `[F, C, h, w]`."""
    return latents[0].transpose(0, 1)


def vae_moments(vae: FaceVAE, images: Tensor) -> Tensor:
    """The deterministic part of encoding `images` (see `FaceVAE`)."""
    return vae.moments(images) if hasattr(vae, "moments") else vae.encode(images)


def vae_sample(vae: FaceVAE, moments: Tensor) -> Tensor:
    """Unscaled latents from `vae_moments`' output (a posterior-sampling VAE draws them here)."""
    return vae.sample(moments) if hasattr(vae, "sample") else moments


def face_moments(vae: FaceVAE, faces: AlignedFaces, device: torch.device | str) -> Tensor:
    """`[2F, ...]`: `vae_moments` of the masked faces, then of the whole (reference) faces.

    Each frame's two faces go to the VAE together and alone: the kernels a device runs, and so the last bits of
    their sums, can change with what else is in a batch, and a frame's latents must not depend on which window
    or chunk it came with (a prepared video's latents equal those a run makes itself, bit for bit)."""
    pixels = faces.pixel_values()
    masked = pixels * faces.mask
    pairs = [vae_moments(vae, torch.stack([masked[i], pixels[i]]).to(device)) for i in range(len(pixels))]
    if not pairs:
        return vae_moments(vae, torch.cat([masked, pixels]).to(device))
    return torch.cat([torch.stack([pair[0] for pair in pairs]), torch.stack([pair[1] for pair in pairs])])


def encode_conditioning(vae: FaceVAE, faces: AlignedFaces, device: torch.device | str,
                        dtype: torch.dtype = torch.float32, moments: Tensor | None = None) -> Tensor:
    """The 9 conditioning channels `[1, 9, F, h, w]`: latent mask, masked-face latents, reference latents.
    `moments`: the faces' `face_moments` made before (a prepared video's); else they are made here."""
    if moments is None:
        moments = face_moments(vae, faces, device)
    latents = vae_sample(vae, moments.to(device)).to(device, dtype) * LATENT_SCALE
    masked_latents, reference_latents = latents.chunk(2)
    frames = len(faces)
    mask = faces.latent_mask.to(device, dtype)[None].expand(frames, -1, -1, -1)
    return to_clip(torch.cat([mask, masked_latents, reference_latents], dim=1))


def unet_input(latents: Tensor, conditioning: Tensor, guided: bool) -> Tensor:
    """`[B, 13, F, h, w]`: noisy latents then conditioning; the batch doubled for guidance."""
    sample = torch.cat([latents, conditioning], dim=1)
    return torch.cat([sample, sample]) if guided else sample


def audio_context(chunks: Tensor, guided: bool) -> Tensor:
    """`[B*F, 50, 384]`: the frames' whisper chunks, after an all-zero unconditional copy when guided."""
    return torch.cat([torch.zeros_like(chunks), chunks]) if guided else chunks


def guided_noise(unet: Callable[..., Tensor], latents: Tensor, timestep: Tensor | float, conditioning: Tensor,
                 context: Tensor, guidance: float, cache: DeepCache | None = None) -> Tensor:
    """The guided noise prediction for `latents` `[1, 4, F, h, w]` at `timestep`, in `latents`' dtype.

    `context` comes from `audio_context` with the same `guided` (guidance > 1) as used here.
    """
    guided = guidance > 1.0
    sample = unet_input(latents, conditioning, guided)
    timestep = torch.as_tensor(timestep, device=latents.device)
    out = unet(sample, timestep, context, cache=cache) if cache is not None else unet(sample, timestep, context)
    out = out.to(latents.dtype)
    if not guided:
        return out
    uncond, cond = out.chunk(2)
    return uncond + guidance * (cond - uncond)


def denoise(unet: Callable[..., Tensor], scheduler: Scheduler, noise: Tensor, conditioning: Tensor,
            chunks: Tensor, guidance: float, cache: DeepCache | None = None,
            on_step: Callable[[int, Tensor], None] | None = None) -> Tensor:
    """Run `scheduler` from `noise` `[1, 4, F, h, w]`; returns the final latents (scaled, as the UNet's).
    `on_step(index, x0)` is called after every step with the step's prediction of the clean latents
    (`x0 = (x_t - sqrt(1 - alpha_bar) * eps) / sqrt(alpha_bar)`, `[1, 4, F, h, w]`): what a preview shows."""
    context = audio_context(chunks, guidance > 1.0)
    latents = noise
    if cache is not None:
        cache.start_window()
    for index, timestep in enumerate(scheduler.timesteps):
        if cache is not None:
            cache.before_step(index)
        eps = guided_noise(unet, latents, timestep, conditioning, context, guidance, cache)
        if on_step is not None:
            alpha_bar = float(scheduler.alpha_bars[index])
            x0 = (latents - (1.0 - alpha_bar) ** 0.5 * eps) / alpha_bar ** 0.5
        latents = scheduler.step(eps, index, latents)
        if on_step is not None:
            on_step(index, x0)
    return latents


def decode_faces(vae: FaceVAE, latents: Tensor) -> Tensor:
    """Scaled clip latents `[1, 4, F, h, w]` -> faces `[F, 3, R, R]` float32 in [-1, 1] on the CPU."""
    return vae.decode(from_clip(latents) / LATENT_SCALE).to("cpu", torch.float32)
