"""Samplers for LatentSync's epsilon-predicting UNet, on the noise schedule it was trained with.

All three share the reference's schedule (1000 steps, "scaled linear" betas 0.00085 -> 0.012) and keep the
state in the UNet's own variance-preserving form `x = a * x0 + s * eps` with `a^2 + s^2 = 1`, so the first
state is plain unit Gaussian noise for every sampler and the UNet sees what it saw in training.

- `ddim`: the reference (diffusers' `DDIMScheduler` as configured by LatentSync: "leading" timesteps
  `951, 901, ..., 1` for 20 steps, `steps_offset` 1, eta 0, no clipping, the last step lands on
  alpha_bar[0] = 0.99915 rather than on clean latents). The arithmetic follows diffusers' order of float32
  operations, so the golden steps match to the last bits.
- `euler`: Euler steps of the probability-flow ODE in sigma space (sigma = s / a). For an epsilon model this
  is the same update as DDIM; what differs is the grid: diffusers' Euler grid (timesteps evenly from 999 to
  0, sigma interpolated in between) with a final step to sigma = 0.
- `dpmpp_2m`: DPM-Solver++ 2M (data prediction, second-order multistep, midpoint form) on diffusers' grid
  for it (`999, 949, ..., 50` for 20 steps) with a first-order final step to sigma = 0. Being second order it
  gets closer to the ODE's solution than the first-order samplers at a given number of steps.

A scheduler object holds the state of one denoising run (DPM-Solver++ remembers its previous prediction);
make a new one per window.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

SCHEDULERS = ("ddim", "dpmpp_2m", "euler")
TRAIN_STEPS = 1000
BETA_START, BETA_END = 0.00085, 0.012


@lru_cache(maxsize=2)
def _alphas_cumprod(train_steps: int = TRAIN_STEPS) -> Tensor:
    # float32 throughout, as diffusers builds it: the DDIM golden depends on these exact values.
    betas = torch.linspace(BETA_START ** 0.5, BETA_END ** 0.5, train_steps, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def _sigma_table() -> np.ndarray:
    """sigma = sqrt((1 - alpha_bar) / alpha_bar) per train step, float64."""
    alpha_bar = _alphas_cumprod().double().numpy()
    return np.sqrt((1.0 - alpha_bar) / alpha_bar)


class Scheduler:
    """One denoising run: `timesteps` to call the UNet at, `step()` to move the state to the next one.

    `alpha_bars[i]` is alpha_bar at `timesteps[i]`, and `alpha_bars[-1]` the level the last step lands on
    (1.0 = clean latents), so `len(alpha_bars) == len(timesteps) + 1`.
    """

    name = ""

    def __init__(self, steps: int):
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a whole number >= 1, got {steps!r}")
        self.steps = int(steps)
        self.timesteps: Tensor = torch.zeros(0)
        self.alpha_bars: np.ndarray = np.zeros(0)

    def __len__(self) -> int:
        return self.steps

    def step(self, noise_pred: Tensor, index: int, sample: Tensor) -> Tensor:
        raise NotImplementedError

    def _check(self, index: int) -> None:
        if not 0 <= index < self.steps:
            raise IndexError(f"step {index} of a {self.steps}-step {self.name} run")


class DDIMScheduler(Scheduler):
    """The reference's deterministic DDIM (see the module docstring)."""

    name = "ddim"

    def __init__(self, steps: int = 20, steps_offset: int = 1):
        super().__init__(steps)
        if self.steps + steps_offset > TRAIN_STEPS:  # the first timestep would fall off the schedule
            raise ValueError(f"DDIM takes at most {TRAIN_STEPS - steps_offset} steps, got {steps}")
        self.ratio = TRAIN_STEPS // self.steps
        leading = (np.arange(self.steps) * self.ratio).round()[::-1].astype(np.int64) + steps_offset
        self.timesteps = torch.from_numpy(leading.copy())
        table = _alphas_cumprod()
        # set_alpha_to_one=False: a step past t = 0 lands on alpha_bar[0], not on 1.
        self._final = table[0]
        self.alpha_bars = np.array([float(table[t]) for t in leading] + [float(self._final)])

    def step(self, noise_pred: Tensor, index: int, sample: Tensor) -> Tensor:
        self._check(index)
        table = _alphas_cumprod()
        timestep = int(self.timesteps[index])
        previous = timestep - self.ratio
        alpha_t = table[timestep]
        alpha_prev = table[previous] if previous >= 0 else self._final
        beta_t = 1 - alpha_t
        pred_x0 = (sample - beta_t ** 0.5 * noise_pred) / alpha_t ** 0.5
        direction = (1 - alpha_prev) ** 0.5 * noise_pred
        return alpha_prev ** 0.5 * pred_x0 + direction


def _interpolated_sigmas(timesteps: np.ndarray) -> np.ndarray:
    """sigma at (possibly fractional) timesteps, linear in t between train steps, as diffusers' samplers."""
    table = _sigma_table()
    return np.interp(timesteps, np.arange(len(table)), table)


class EulerScheduler(Scheduler):
    """Deterministic Euler in sigma space on diffusers' Euler grid, ending on clean latents."""

    name = "euler"

    def __init__(self, steps: int = 20):
        super().__init__(steps)
        grid = np.linspace(0, TRAIN_STEPS - 1, self.steps, dtype=np.float64)[::-1].copy()
        self.timesteps = torch.from_numpy(grid)
        self.sigmas = np.append(_interpolated_sigmas(grid), 0.0)
        self.alpha_bars = 1.0 / (1.0 + self.sigmas ** 2)

    def step(self, noise_pred: Tensor, index: int, sample: Tensor) -> Tensor:
        self._check(index)
        sigma, sigma_next = self.sigmas[index], self.sigmas[index + 1]
        # z = x / a is the ODE's variable: dz/dsigma = eps.
        z = sample * math.sqrt(1.0 + sigma ** 2)
        z_next = z + (sigma_next - sigma) * noise_pred
        return z_next / math.sqrt(1.0 + sigma_next ** 2)


class DPMSolverPP2MScheduler(Scheduler):
    """DPM-Solver++(2M): first order on the first and last step, second-order multistep in between."""

    name = "dpmpp_2m"

    def __init__(self, steps: int = 20):
        super().__init__(steps)
        grid = np.linspace(0, TRAIN_STEPS - 1, self.steps + 1).round()[::-1][:-1].astype(np.int64)
        self.timesteps = torch.from_numpy(grid.copy())
        self.sigmas = np.append(_interpolated_sigmas(grid.astype(np.float64)), 0.0)
        self.alpha_bars = 1.0 / (1.0 + self.sigmas ** 2)
        self._previous_x0: Tensor | None = None

    def _alpha_sigma(self, index: int) -> tuple[float, float]:
        alpha = 1.0 / math.sqrt(1.0 + self.sigmas[index] ** 2)
        return alpha, self.sigmas[index] * alpha

    def _lambda(self, index: int) -> float:
        return -math.log(self.sigmas[index])  # log(a / s)

    def step(self, noise_pred: Tensor, index: int, sample: Tensor) -> Tensor:
        self._check(index)
        if index == 0:
            self._previous_x0 = None
        alpha_t, sigma_t = self._alpha_sigma(index)
        x0 = (sample - sigma_t * noise_pred) / alpha_t
        previous, self._previous_x0 = self._previous_x0, x0
        if self.sigmas[index + 1] == 0:
            return x0  # the first-order step to sigma = 0 is the data prediction itself
        alpha_s, sigma_s = self._alpha_sigma(index + 1)
        h = self._lambda(index + 1) - self._lambda(index)
        decay = math.expm1(-h)  # exp(-h) - 1, negative
        if previous is None:
            data = x0
        else:
            ratio = (self._lambda(index) - self._lambda(index - 1)) / h
            data = x0 + (0.5 / ratio) * (x0 - previous)
        return (sigma_s / sigma_t) * sample - (alpha_s * decay) * data


_CLASSES = {"ddim": DDIMScheduler, "dpmpp_2m": DPMSolverPP2MScheduler, "euler": EulerScheduler}


def make_scheduler(name: str, steps: int) -> Scheduler:
    """A fresh scheduler (one of `SCHEDULERS`) for one `steps`-step run."""
    if name not in _CLASSES:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    return _CLASSES[name](steps)
