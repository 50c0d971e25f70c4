"""Specification of the samplers (latentsync/schedulers.py).

DDIM must be the reference's: diffusers' `DDIMScheduler` as LatentSync configures it, checked against the
`ddim.*` golden of shared/reference/latentsync/misc_golden.safetensors (timesteps and alpha_bar exactly, three
steps within 1e-6, i.e. float32 rounding). All three samplers are checked on cases with a closed-form answer:
data concentrated on one point (every consistent ODE solver lands on it exactly) and Gaussian data (the
probability-flow ODE is solvable; the second-order sampler must be the most accurate).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import shared_path

from latentsync.sample.schedulers import SCHEDULERS, _alphas_cumprod, make_scheduler


@pytest.fixture(scope="module")
def ddim_golden() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    golden = load_file(shared_path("reference/latentsync/misc_golden.safetensors"))
    return {k: v for k, v in golden.items() if k.startswith("ddim.")}


def test_ddim_matches_reference_schedule(ddim_golden):
    scheduler = make_scheduler("ddim", 20)
    assert scheduler.timesteps.tolist() == ddim_golden["ddim.timesteps_20"].tolist()  # 951, 901, ..., 1
    assert torch.equal(_alphas_cumprod(), ddim_golden["ddim.alphas_cumprod"])
    assert scheduler.alpha_bars[-1] == pytest.approx(0.9991499781608582)  # set_alpha_to_one=False


def test_ddim_steps_match_reference(ddim_golden):
    """The golden's three consecutive `step(eps, t, x, eta=0)` calls at t = 951, 901, 851."""
    scheduler = make_scheduler("ddim", 20)
    sample = ddim_golden["ddim.step_in_latents"]
    for index in range(3):
        out = scheduler.step(ddim_golden[f"ddim.step{index}_noise_pred"], index, sample)
        expected = ddim_golden[f"ddim.step{index}_prev_sample"]
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
        sample = expected


@pytest.mark.parametrize("steps", [1, 6, 7, 20, 50])
def test_ddim_timesteps_are_leading_with_offset(steps):
    timesteps = make_scheduler("ddim", steps).timesteps.tolist()
    ratio = 1000 // steps
    assert timesteps == [i * ratio + 1 for i in reversed(range(steps))]


def test_grids_of_the_other_samplers():
    assert make_scheduler("dpmpp_2m", 20).timesteps[:3].tolist() == [999, 949, 899]
    euler = make_scheduler("euler", 20)
    assert float(euler.timesteps[0]) == 999.0 and float(euler.timesteps[-1]) == 0.0
    for name in ("dpmpp_2m", "euler"):
        assert make_scheduler(name, 20).alpha_bars[-1] == 1.0  # they end on clean latents


def _alpha_sigma(alpha_bar: float) -> tuple[float, float]:
    return math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)


def _run(name: str, steps: int, model, x_start: torch.Tensor) -> tuple[torch.Tensor, object]:
    scheduler = make_scheduler(name, steps)
    x = x_start.clone()
    for index in range(len(scheduler)):
        x = scheduler.step(model(x, scheduler.alpha_bars[index]), index, x)
    return x, scheduler


@pytest.mark.parametrize("name", SCHEDULERS)
@pytest.mark.parametrize("steps", [3, 20])
def test_exact_denoiser_of_a_point_lands_on_it(name, steps):
    """Data = one point x0. The exact noise prediction is (x - a x0) / s; along the ODE it stays constant,
    so each sampler must end exactly on a_end x0 + s_end eps (a_end = 1, s_end = 0 except for DDIM's
    alpha_bar[0] end)."""
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 3, 8, 8, generator=generator, dtype=torch.float64)
    x_start = torch.randn(x0.shape, generator=generator, dtype=torch.float64)

    def model(x, alpha_bar):
        a, s = _alpha_sigma(alpha_bar)
        return (x - a * x0) / s

    out, scheduler = _run(name, steps, model, x_start)
    a_first, s_first = _alpha_sigma(scheduler.alpha_bars[0])
    eps = (x_start - a_first * x0) / s_first
    a_end, s_end = _alpha_sigma(scheduler.alpha_bars[-1])
    torch.testing.assert_close(out, a_end * x0 + s_end * eps, atol=1e-6, rtol=1e-6)  # DDIM's table is float32


def _gaussian_case(scale: float):
    """Data ~ N(0, scale^2): exact eps(x) and the ODE's exact end point from any start."""
    def model(x, alpha_bar):
        a, s = _alpha_sigma(alpha_bar)
        return s * x / (a * a * scale ** 2 + s * s)

    def exact(x_start, alpha_bar_start, alpha_bar_end):
        # In z = x / a and sigma = s / a the ODE is dz/dsigma = eps, solved by z ~ sqrt(scale^2 + sigma^2).
        def sigma(ab):
            return math.sqrt((1 - ab) / ab)

        z_start = x_start / math.sqrt(alpha_bar_start)
        z_end = z_start * math.sqrt(scale ** 2 + sigma(alpha_bar_end) ** 2) / math.sqrt(
            scale ** 2 + sigma(alpha_bar_start) ** 2)
        return z_end * math.sqrt(alpha_bar_end)

    return model, exact


def _relative_error(name: str, steps: int, skip_last: bool = False) -> float:
    model, exact = _gaussian_case(0.5)
    x_start = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    scheduler = make_scheduler(name, steps)
    x = x_start.clone()
    run = steps - 1 if skip_last else steps
    for index in range(run):
        x = scheduler.step(model(x, scheduler.alpha_bars[index]), index, x)
    expected = exact(x_start, scheduler.alpha_bars[0], scheduler.alpha_bars[run])
    return float((x - expected).norm() / expected.norm())


@pytest.mark.parametrize("name", SCHEDULERS)
def test_gaussian_data_converges_to_the_ode_solution(name):
    """Data ~ N(0, 0.25): the end point approaches the ODE's exact one as steps grow (first order overall:
    the last step to clean latents is a plain data prediction for the ODE samplers)."""
    coarse, fine = _relative_error(name, 50), _relative_error(name, 250)
    assert fine < 0.02 and fine < 0.3 * coarse, (coarse, fine)


def test_second_order_sampler_is_the_most_accurate():
    """Up to the last step (where every sampler predicts the data directly), DPM-Solver++ 2M's multistep
    updates are second order: at 10 steps its error is a small fraction of DDIM's and Euler's."""
    errors = {name: _relative_error(name, 10, skip_last=True) for name in SCHEDULERS}
    assert errors["dpmpp_2m"] < 0.1 * min(errors["ddim"], errors["euler"]), errors


def test_state_is_per_run_and_steps_are_checked():
    scheduler = make_scheduler("dpmpp_2m", 4)
    x = torch.ones(1, 4, 1, 2, 2)
    first = [scheduler.step(torch.zeros_like(x), i, x) for i in range(4)]
    again = [scheduler.step(torch.zeros_like(x), i, x) for i in range(4)]  # index 0 restarts the history
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    with pytest.raises(IndexError):
        scheduler.step(x, 4, x)
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler("plms", 20)
    with pytest.raises(ValueError, match="steps"):
        make_scheduler("ddim", 0)
    assert np.all(np.diff(make_scheduler("euler", 8).alpha_bars) > 0)  # noise goes down monotonically
