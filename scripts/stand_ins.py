"""Stand-ins for tests and benchmarks (never product code): a UNet and a VAE that only take time, as a GPU does."""
from __future__ import annotations

import time

import torch


class SleepingUNet(torch.nn.Module):
    """The UNet's call signature; each call sleeps `seconds` (releasing the GIL, as a CUDA call leaves the CPU
    free) and predicts zero noise. Stands in for a device on a machine without one."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = float(seconds)
        self.calls = 0
        self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)  # gives the module a device

    def forward(self, sample: torch.Tensor, timestep, context, cache=None) -> torch.Tensor:
        self.calls += 1
        time.sleep(self.seconds)
        return torch.zeros_like(sample[:, :4])


class SleepingVAE:
    """The sampler's VAE interface; each call sleeps `seconds` per image and returns flat latents / grey faces."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds * len(images))
        return torch.zeros(len(images), 4, images.shape[2] // 8, images.shape[3] // 8)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds * len(latents))
        return torch.zeros(len(latents), 3, latents.shape[2] * 8, latents.shape[3] * 8)
