"""Benchmark: LatentSync UNet calls per weight precision, on random weights (no checkpoint needed).

The full-size 1.5 architecture on one 16-frame window at 256 px (latent 32x32), batch 2 as under
classifier-free guidance (a zero-audio half and an audio half). Each option runs in a process of its own so
that its peak RSS is its own; fp32 is always run first and is the baseline of every ratio. Per option it
prints seconds per UNet call, peak RSS (peak device memory on CUDA), weight memory, mean |output|, and the
output's relative error against fp32, ||out - ref|| / ||ref||.

    python -m bench.unet                       # CPU, fp32 and bf16, one call each (a few minutes on 2 cores)
    python -m bench.unet --device cuda --steps 2 --options fp32,bf16,fp16
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from latentsync.unet.model import LatentSyncUNet, build_unet
from latentsync.unet.blocks import sinusoidal_table
from latentsync.unet.loading import quantize_unet
from latentsync.unet.quantize import weight_bytes as held_bytes

REPO = Path(__file__).resolve().parents[1]

# option -> (compute dtype, quantization passed to the loader); int4 runs only on CUDA (torchao's kernels).
OPTIONS = {
    "fp32": (torch.float32, "none"),
    "bf16": (torch.bfloat16, "none"),
    "fp16": (torch.float16, "none"),
    "int8": (torch.float32, "int8"),
    "int8-bf16": (torch.bfloat16, "int8"),
    "int4": (torch.bfloat16, "int4"),
}
TIMESTEPS = (951, 451)  # DDIM 20-step timesteps 0 and 10


def random_unet(config: str, device: str, dtype: torch.dtype) -> LatentSyncUNet:
    """The architecture with seeded random weights, made one tensor at a time directly in `dtype`.

    Every option draws the same float32 values (tensor i from seed i) and rounds them to its own dtype,
    so output differences come from the precision alone. Scales keep activations O(1) through the depth.
    """
    unet = build_unet(config, device="meta")
    norms = {f"{name}.{p}" for name, module in unet.named_modules()
             if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)) for p in ("weight", "bias")}
    tensors = {}
    for index, (name, skeleton) in enumerate(unet.state_dict().items()):
        shape = skeleton.shape
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(index))
        if name.endswith(".pos_encoder.pe"):
            value = sinusoidal_table(shape[1], shape[2])[None]
        elif name in norms:
            value = noise * 0.1 + (1.0 if name.endswith("weight") else 0.0)
        elif len(shape) >= 2:
            value = noise / shape[1:].numel() ** 0.5
        else:
            value = noise * 0.02
        tensors[name] = value.to(device=device, dtype=dtype)
    unet.load_state_dict(tensors, strict=True, assign=True)
    return unet.eval().requires_grad_(False)


def inputs(batch: int, frames: int, latent: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(42)
    sample = torch.randn(1, 13, frames, latent, latent, generator=generator).repeat(batch, 1, 1, 1, 1)
    audio = torch.randn(frames, 50, 384, generator=generator)
    audio = torch.cat([torch.zeros_like(audio)] * (batch - 1) + [audio])  # unconditional half first, as the pipeline
    return sample.to(device), audio.to(device)


def worker(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype, quantization = OPTIONS[args.worker]
    cuda = args.device.startswith("cuda")
    started = time.perf_counter()
    unet = quantize_unet(random_unet(args.config, args.device, dtype), quantization)
    build_seconds = time.perf_counter() - started
    weight_bytes = held_bytes(unet)
    sample, audio = inputs(args.batch, args.frames, args.size // 8, args.device)
    outputs, seconds = [], []
    for timestep in TIMESTEPS[: args.steps]:
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.inference_mode():
            out = unet(sample.to(dtype), timestep, audio.to(dtype))
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
        print(f"  {args.worker}: t={timestep} {seconds[-1]:.2f} s", file=sys.stderr, flush=True)
        outputs.append(out.float().cpu())
    torch.save(torch.stack(outputs), Path(args.result).with_suffix(".out.pt"))
    peak = peak_bytes(torch.device(args.device))
    Path(args.result).write_text(json.dumps({
        "build_s": build_seconds, "seconds": seconds, "weight_bytes": weight_bytes, "peak_bytes": peak,
        "abs_mean": float(torch.stack(outputs).abs().mean())}))


def peak_bytes(device: torch.device) -> int:
    """The peak memory so far: `torch.cuda.max_memory_allocated` on CUDA, else the process's peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if platform.system() == "Darwin" else 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=1, choices=(1, 2), help="UNet calls per option")
    parser.add_argument("--options", help=f"comma-separated, from {', '.join(OPTIONS)} (default: fp32,bf16,int8 "
                                          "on CPU; fp32,fp16,bf16,int8-bf16,int4 on CUDA)")
    parser.add_argument("--config", default="1.5")
    parser.add_argument("--size", type=int, default=256, help="face crop in pixels (latent = size / 8)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2, help="2 = with classifier-free guidance")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    cuda = args.device.startswith("cuda")
    chosen = args.options or ("fp32,fp16,bf16,int8-bf16,int4" if cuda else "fp32,bf16,int8")
    options = ["fp32"] + [o for o in chosen.split(",") if o and o != "fp32"]
    unknown = [o for o in options if o not in OPTIONS]
    if unknown:
        parser.error(f"unknown options {unknown}; choose from {list(OPTIONS)}")
    if not cuda and "int4" in options:
        print("int4 skipped: torchao's int4 kernels need CUDA (run with --device cuda)")
        options.remove("int4")
    if args.threads:
        torch.set_num_threads(args.threads)
    # Other processes on the CPU skew CPU timings (OpenMP threads wait on each other), so say how busy it was.
    where = (torch.cuda.get_device_name() if cuda
             else f"CPU, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at start")
    print(f"LatentSync UNet {args.config}, random weights; input [{args.batch}, 13, {args.frames}, {args.size // 8}, "
          f"{args.size // 8}] ({args.size} px), {args.steps} call(s) per option; {where}; torch {torch.__version__}")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for option in options:
            result = Path(folder) / f"{option}.json"
            command = [sys.executable, "-m", "bench.unet", "--worker", option, "--result", str(result)]
            for flag in ("device", "steps", "config", "size", "frames", "batch", "threads"):
                command += [f"--{flag}", str(getattr(args, flag))]
            subprocess.run(command, check=True, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            results[option] = json.loads(result.read_text())
            results[option]["out"] = torch.load(result.with_suffix(".out.pt"), weights_only=True)
    print_table(results, "peak GPU mem" if cuda else "peak RSS")


def print_table(results: dict, peak_name: str) -> None:
    gib = 2 ** 30
    base = results["fp32"]
    base_call = sum(base["seconds"]) / len(base["seconds"])
    header = (f"{'option':<7}{'s/call':>8}{'x fp32':>8}{peak_name:>14}{'x fp32':>8}{'weights':>10}{'x fp32':>8}"
              f"{'|out| mean':>12}{'rel err':>10}")
    print(header)
    print("-" * len(header))
    for option, r in results.items():
        call = sum(r["seconds"]) / len(r["seconds"])
        error = float((r["out"] - base["out"]).norm() / base["out"].norm())
        print(f"{option:<7}{call:>8.2f}{call / base_call:>8.2f}{r['peak_bytes'] / gib:>10.2f} GiB"
              f"{r['peak_bytes'] / base['peak_bytes']:>8.2f}{r['weight_bytes'] / gib:>6.2f} GiB"
              f"{r['weight_bytes'] / base['weight_bytes']:>8.2f}{r['abs_mean']:>12.4f}{error:>10.2e}")
    print("s/call: mean over the calls (the first includes one-off kernel set-up); rel err: ||out - fp32|| / ||fp32||")


if __name__ == "__main__":
    main()
