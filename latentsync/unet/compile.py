"""`torch.compile` of a loaded LatentSync UNet: one compiled graph per window shape, CUDA graphs if asked.

`compile_unet(unet, mode=...)` replaces the module's `forward` with a compiled one and returns the same module
(same weights, same state-dict keys). Shapes are static (`dynamic=False`): each distinct input shape compiles
once and is then reused for every window of that shape. A clip usually has two or three: its 16-frame windows,
the last, shorter window, and the guidance batch (2 with guidance > 1, 1 without) is part of the shape too.
DeepCache (`deepcache.py`) works with it: the full and the shallow pass are two graphs of each shape, both
compiled once. The timestep is passed as a float32 tensor on the sample's device, so its value never
recompiles.

Modes (torch.compile's own, on the "inductor" backend):
- "default": kernel fusion, no autotuning; the cheapest compile.
- "max-autotune": benchmarks matmul and conv kernels at compile time (minutes per shape) and uses CUDA graphs.
- "reduce-overhead": CUDA graphs, which replay a whole UNet call as one launch; the shapes must be fixed,
  which they are per window. Outputs of a CUDA graph live in its memory pool and the next replay overwrites
  them, so they are copied out here (the output and DeepCache's features), once per call.

Quantized UNets: int8 and int4 (torchao tensor subclasses, plus our `Int8Conv2d`) compile on CUDA, where
inductor fuses the dequantization into the kernels. On the CPU they compile too, but inductor's generated C++
dequantizes the weights much like eager does, so expect no gain there.

Recompilations are counted per UNet (`compilations(unet)`): the graphs dynamo made during this UNet's calls,
read as the difference of dynamo's process-wide `counters["stats"]["unique_graphs"]` around each call. That
counter has existed under that name from torch 2.0 to 2.14, counts every graph whatever the backend (a counting
backend of our own would have to rebuild inductor's mode handling, which torch keeps private), and also counts
graph breaks, which a test should see. Calls are not thread-safe against other compilations in the process.
Past dynamo's recompile limit (8 graphs per function by default) further shapes run eagerly with a warning.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ..core.options import Option
from ..core.process_state import contained

MODES = ("default", "max-autotune", "reduce-overhead")
COMPILE = Option("compile", "off", "torch.compile the UNet (CUDA; once per window shape): default, max-autotune, "
                 "or reduce-overhead (CUDA graphs).", choices=("off", *MODES))
CUDA_GRAPH_MODES = frozenset({"reduce-overhead", "max-autotune"})


def _graphs_made() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class CompiledForward:
    """A UNet's forward through `torch.compile`, with the count of graphs compiled for it."""

    def __init__(self, forward: Callable[..., Tensor], mode: str, backend: str):
        self.mode, self.backend = mode, backend
        self.eager_forward = forward
        self.compilations = 0
        # CUDA graphs only where inductor makes them (its reduce-overhead and max-autotune modes on CUDA).
        self.cuda_graphs = backend == "inductor" and mode in CUDA_GRAPH_MODES
        with contained():  # torch.compile may set CUPTI variables for CUDA graphs: not the host's business
            self.compiled = torch.compile(forward, backend=backend, mode=mode if backend == "inductor" else None,
                                          dynamic=False)

    def __call__(self, sample: Tensor, timestep: Tensor | float, encoder_hidden_states: Tensor | None,
                 cache=None) -> Tensor:
        # One dtype and device for every timestep: a Python number would be a constant of the graph and each
        # new value would compile again; a CPU scalar would keep CUDA graphs off.
        timestep = torch.as_tensor(timestep, device=sample.device, dtype=torch.float32)
        cuda_graphs = self.cuda_graphs and sample.device.type == "cuda"
        before = _graphs_made()
        try:
            # the first call of a shape compiles, and inductor may set its cache variables as it does
            with contained():
                if cuda_graphs:
                    torch.compiler.cudagraph_mark_step_begin()  # the previous call's outputs were copied out
                out = self.compiled(sample, timestep, encoder_hidden_states, cache=cache)
        finally:
            self.compilations += _graphs_made() - before
        if cuda_graphs:
            out = out.clone()
            if cache is not None and cache.features is not None:
                cache.features = cache.features.clone()
        return out


def compile_unet(unet: nn.Module, *, mode: str = "default", backend: str = "inductor") -> nn.Module:
    """`unet` with its forward compiled (`dynamic=False`: one graph per window shape); returns the same module.

    `mode` is one of `MODES` (used by the "inductor" backend; other backends, such as "aot_eager" or "eager" for
    tests, ignore it). Compiling happens on the first call of each shape, not here. Compiling a compiled UNet
    again is refused: `uncompile_unet` first.
    """
    if mode not in MODES:
        raise ValueError(f"unknown compile mode {mode!r}; choose from {', '.join(MODES)}")
    if isinstance(unet.__dict__.get("forward"), CompiledForward):
        raise ValueError("this UNet is already compiled; call uncompile_unet(unet) before compiling it again")
    # An instance attribute: nn.Module.__call__ finds it, while the class, the weights and the keys stay as they are.
    unet.forward = CompiledForward(unet.forward, mode, backend)
    return unet


def uncompile_unet(unet: nn.Module) -> nn.Module:
    """`unet` back on its eager forward (no-op for a UNet that is not compiled)."""
    if isinstance(unet.__dict__.get("forward"), CompiledForward):
        del unet.forward
    return unet


def compilations(unet: nn.Module) -> int | None:
    """How many graphs were compiled for `unet`'s calls so far; None when it is not compiled."""
    forward = unet.__dict__.get("forward")
    return forward.compilations if isinstance(forward, CompiledForward) else None


def compile_mode(unet: nn.Module) -> str | None:
    """The mode `unet` was compiled with, or None."""
    forward = unet.__dict__.get("forward")
    return forward.mode if isinstance(forward, CompiledForward) else None
