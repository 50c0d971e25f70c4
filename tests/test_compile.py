"""Specification of `latentsync/unet/compile.py`: torch.compile of the UNet, once per window shape.

On the CPU the tests compile through dynamo with the "aot_eager" backend: the same graph capture, guards and
functionalization inductor gets, without inductor's C++ code generation (minutes for this UNet on 2 cores).
Compiled and eager outputs of the tiny random UNet agree within atol 1e-5, rtol 1e-5 in float32 (aot_eager's
decompositions reorder a few float ops: ~1e-6 measured). Inductor itself runs in the CUDA test, skipped without
a GPU.
"""
from __future__ import annotations

import pytest
import torch

from latentsync.sample.denoise import denoise
from latentsync.sample.schedulers import make_scheduler
from latentsync.unet.compile import compilations, compile_mode, compile_unet, uncompile_unet
from latentsync.unet.deepcache import DeepCache
from latentsync.unet.model import build_unet

pytestmark = pytest.mark.usefixtures("one_thread")

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
LATENT = 8  # 64 px crops: the graph is the same whatever the size, the calls are cheaper


def random_window(frames: int, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 13, frames, LATENT, LATENT, generator=generator)
    return sample, torch.randn(batch * frames, 50, 384, generator=generator)


@pytest.fixture(scope="module")
def unets(tiny_unet_config):
    torch.manual_seed(0)
    eager = build_unet(tiny_unet_config, device="cpu")
    compiled = build_unet(tiny_unet_config, device="cpu")
    compiled.load_state_dict(eager.state_dict())
    return eager, compile_unet(compiled, backend="aot_eager")


@torch.no_grad()
def test_compiled_matches_eager_and_compiles_once_per_window_shape(unets):
    eager, compiled = unets
    assert compilations(compiled) == 0  # compiling happens at the first call, not in compile_unet
    for seed, timestep in ((1, 951), (2, 451)):  # two windows of one shape, at different timesteps
        sample, audio = random_window(16, seed=seed)
        torch.testing.assert_close(compiled(sample, timestep, audio), eager(sample, timestep, audio), **TOLERANCE)
    assert compilations(compiled) == 1
    sample, audio = random_window(8, seed=3)  # the last, shorter window of a clip
    torch.testing.assert_close(compiled(sample, 1, audio), eager(sample, 1, audio), **TOLERANCE)
    assert compilations(compiled) == 2
    sample, audio = random_window(16, seed=4)  # back to the first shape: no new graph
    compiled(sample, torch.tensor(51), audio)
    assert compilations(compiled) == 2


def two_level_config(tiny_unet_config: dict) -> dict:
    """The tiny config cut to its first and last levels: a quarter of the layers, so a quarter of the tracing."""
    return {**tiny_unet_config, "block_out_channels": [32, 64],
            "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
            "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"]}


@torch.no_grad()
def test_deepcache_runs_compiled_with_one_graph_per_pass_kind(tiny_unet_config):
    """The full pass (which stores the deep features in the cache from inside the graph) and the shallow pass
    (which reads them) are two graphs of a shape, each compiled once; the denoised window equals the eager one.
    Guidance 1 (batch 1); a two-level UNet keeps the test's tracing short."""
    torch.manual_seed(0)
    config = two_level_config(tiny_unet_config)
    eager = build_unet(config, device="cpu")
    compiled = build_unet(config, device="cpu")
    compiled.load_state_dict(eager.state_dict())
    compile_unet(compiled, backend="aot_eager")
    generator = torch.Generator().manual_seed(5)
    noise = torch.randn(1, 4, 16, LATENT, LATENT, generator=generator)
    conditioning = torch.randn(1, 9, 16, LATENT, LATENT, generator=generator)
    chunks = torch.randn(16, 50, 384, generator=generator)
    results = []
    for unet in (eager, compiled):
        cache = DeepCache(2)  # steps 0 and 2 full, 1 and 3 shallow
        results.append(denoise(unet, make_scheduler("ddim", 4), noise, conditioning, chunks, 1.0, cache))
        assert (cache.full_passes, cache.shallow_passes) == (2, 2)
    torch.testing.assert_close(results[1], results[0], **TOLERANCE)
    assert compilations(compiled) == 2


def test_modes_are_checked_and_a_compiled_unet_can_be_undone(tiny_unet_config):
    unet = build_unet(tiny_unet_config, device="meta")
    with pytest.raises(ValueError, match="unknown compile mode 'fastest'"):
        compile_unet(unet, mode="fastest")
    assert compilations(unet) is None and compile_mode(unet) is None
    compile_unet(unet, mode="reduce-overhead")
    assert compile_mode(unet) == "reduce-overhead" and compilations(unet) == 0
    with pytest.raises(ValueError, match="already compiled"):
        compile_unet(unet)
    assert "forward" not in uncompile_unet(unet).__dict__ and compilations(unet) is None
    assert not any(key.startswith("_orig_mod") for key in unet.state_dict())  # the checkpoint's keys, unchanged


@pytest.mark.skipif(not torch.cuda.is_available(), reason="inductor's CUDA path needs a GPU (on the CPU it "
                    "spends minutes in C++ code generation for this UNet, so the CPU tests use aot_eager)")
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
@torch.no_grad()
def test_inductor_on_cuda_matches_eager(tiny_unet_config, mode):
    torch.manual_seed(0)
    eager = build_unet(tiny_unet_config, device="cuda")
    compiled = build_unet(tiny_unet_config, device="cuda")
    compiled.load_state_dict(eager.state_dict())
    compile_unet(compiled, mode=mode)
    outputs = []
    for seed in (1, 2):
        sample, audio = (t.cuda() for t in random_window(16, seed=seed))
        outputs.append(compiled(sample, 951, audio))
        # TF32 and fused kernels: compare with a tolerance fit for reordered float32 sums on a GPU
        torch.testing.assert_close(outputs[-1], eager(sample, 951, audio), atol=2e-3, rtol=2e-3)
    assert not torch.equal(outputs[0], outputs[1])  # CUDA graphs' outputs were copied out, not overwritten
    assert compilations(compiled) == 1
