"""Upscaling 256 px face crops to 512 px: per-frame time of interpolation and of Real-ESRGAN models, same run.

Random weights at the released sizes (built with spandrel's own architecture classes, saved as a `.pth` and
loaded through the pack's loader) do the same arithmetic as the released files. On CPU: bicubic and lanczos, SRVGGNetCompact (realesr-animevideov3, x4 then reduced to 512),
RRDBNet x2 (RealESRGAN_x2plus, cut into 128 px tiles as a large frame would be). Every line gives the ratio to
bicubic measured in this run. With CUDA, the models also run in fp16 and the peak VRAM is printed next to the
library's estimate.

    python -m bench.upscale [--frames 4] [--rrdb-frames 1] [--threads N]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from latentsync.upscale.frames import upscale_frames
from latentsync.upscale.models import load_upscale_model
from latentsync.upscale.tiling import Tiling, estimate_activation_bytes


def write_random_model(path: Path, kind: str) -> Path:
    """A state dict at a released size with random weights: realesr-animevideov3 or RealESRGAN_x2plus."""
    if kind == "animevideov3":
        from spandrel.architectures.Compact import Compact

        module = Compact(num_feat=64, num_conv=16, upscale=4)
    else:
        from spandrel.architectures.ESRGAN import ESRGAN

        module = ESRGAN(num_filters=64, num_blocks=23, scale=2, shuffle_factor=2)
    torch.save(module.state_dict(), path)
    return path


def per_frame(run, frames: torch.Tensor, repeats: int = 1) -> float:
    run(frames[:1])  # warm-up: first-call allocations and kernel selection
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        run(frames)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best / frames.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4, help="crops for interpolation and SRVGGNetCompact")
    parser.add_argument("--rrdb-frames", type=int, default=1, help="crops for RRDBNet on CPU (about 5 s each)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    crops = torch.rand(max(args.frames, args.rrdb_frames), 256, 256, 3)
    with tempfile.TemporaryDirectory() as folder:
        compact = load_upscale_model(write_random_model(Path(folder) / "c.pth", "animevideov3"))
        rrdb = load_upscale_model(write_random_model(Path(folder) / "r.pth", "x2plus"))

    cases = [
        ("bicubic", "bicubic", {}, args.frames),
        ("lanczos", "lanczos", {}, args.frames),
        ("SRVGGNetCompact x4 -> 512", compact, {}, args.frames),
        ("RRDBNet x2, 128 px tiles", rrdb, {"tiling": Tiling(tile=128, overlap=16)}, args.rrdb_frames),
    ]
    print(f"256x256 -> 512x512 face crops, CPU, {torch.get_num_threads()} threads, fp32")
    baseline = None
    for label, method, options, count in cases:
        seconds = per_frame(lambda f: upscale_frames(f, method, size=(512, 512), device="cpu", **options),
                            crops[:count], repeats=3 if isinstance(method, str) else 1)
        baseline = baseline or seconds
        print(f"  {label:28s} {seconds * 1000:10.1f} ms/frame  {seconds / baseline:9.1f}x bicubic  ({count} frames)")

    if not torch.cuda.is_available():
        print("CUDA: no device")
        return
    name = torch.cuda.get_device_name()
    gpu_crops = torch.rand(16, 256, 256, 3)
    frame_1080p = torch.rand(4, 1080, 1920, 3)
    print(f"CUDA ({name}), fp16, 16 crops 256 -> 512 and 4 frames 1080p -> x2 (tile 512)")
    baseline = None
    for label, method, frames, size in [("bicubic crops", "bicubic", gpu_crops, (512, 512)),
                                        ("SRVGGNetCompact crops", compact, gpu_crops, (512, 512)),
                                        ("RRDBNet x2 crops", rrdb, gpu_crops, (512, 512)),
                                        ("SRVGGNetCompact 1080p", compact, frame_1080p, (3840, 2160)),
                                        ("RRDBNet x2 1080p", rrdb, frame_1080p, (3840, 2160))]:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        seconds = per_frame(lambda f: upscale_frames(f, method, size=size, device="cuda"), frames, repeats=3)
        peak = torch.cuda.max_memory_allocated() - before
        estimate = "" if isinstance(method, str) else "  estimate {:8.0f} MiB".format(estimate_activation_bytes(
            method, min(512, frames.shape[1]), min(512, frames.shape[2]), min(8, len(frames))) / 2 ** 20)
        baseline = baseline or seconds
        print(f"  {label:24s} {seconds * 1000:9.2f} ms/frame  {seconds / baseline:8.1f}x bicubic  "
              f"peak {peak / 2**20:8.0f} MiB{estimate}")


if __name__ == "__main__":
    main()
