"""Benchmark: the GPU path in one run that fits in 8 minutes: presets x versions, and the quantizations' error.

Per version (1.5 at 256 px, 1.6 at 512 px, full-size random-weight UNets built as `bench/unet.py` builds them,
and a random-weight full-size SD VAE) and per preset (`latentsync/sample/presets.py`), N windows go through
the sampler (`latentsync.sample.sampler.lipsync`, on synthetic aligned crops and whisper-shaped features)
after one warm-up window. Each row has seconds per window, the real-time factor, the split into UNet, VAE
(encode + decode) and CPU-side time (the rest: crops, pasting, the plan), the peak memory and the preset's
`estimate_vram` beside it. Then int8, int4, fp8 and GGUF Q8_0 / Q4_K against the fp16 UNet (fp32 on the CPU): the relative error
||out - ref|| / ||ref|| of one UNet call, on the golden tiny UNet through the loader and on the full-size
random 1.5 UNet, with the weights' memory and what it saves. `--compile MODE` adds the fast preset compiled.

    bash bench/gpu.sh                                   # CUDA, JSON in bench-gpu.json
    python -m bench.gpu --device cpu --tiny --windows 1 --out /tmp/gpu.json   # the script's own check

Real-time factor (`rtf`) = seconds per window / (window frames / 25 fps): below 1 is faster than real time;
`x_real_time` is its inverse (the issue's "0.36x real time"). Peak memory is `torch.cuda.max_memory_allocated`
reset per row on CUDA; on the CPU it is the process's peak RSS so far (it cannot be reset). `--tiny` uses the
tiny UNet config for both versions, a narrow VAE, crops at a quarter of the size (64 and 128 px: the narrow
VAE at 512 px alone takes minutes on 2 cores), 2-frame windows, one step and no warm-up window: a check that
the script runs end to end, not a measurement. `--budget` stops adding rows when the time is nearly spent
and lists those not run as skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.unet import peak_bytes, random_unet
from latentsync.audio.features import AudioFeatures
from latentsync.face.align import AlignedFaces, crop_geometry
from latentsync.face.mask import latent_mask, pixel_mask
from latentsync.run.pipeline import resolve_dtype
from latentsync.sample.presets import PRESETS, dtype_name
from latentsync.sample.sampler import Output, SamplerSettings, lipsync
from latentsync.sample.vram import estimate_vram
from latentsync.sample.vae import load_vae
from latentsync.unet.compile import MODES as COMPILE_MODES, compilations, compile_unet
from latentsync.unet.loading import load_unet, quantize_unet
from latentsync.unet.quantize import weight_bytes
from scripts.vae_files import NARROW_WIDTHS, WIDTHS, write_sd_vae

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("LATENTSYNC_SHARED", REPO.parent / "shared")) / "reference" / "latentsync"
TINY_CONFIG = REFERENCE / "unet_tiny_config.json"
GOLDEN = REFERENCE / "unet_tiny_golden.safetensors"
VERSIONS = {"1.5": 256, "1.6": 512}
FPS = 25.0
FULL_WINDOW = 16
# --tiny: what keeps the whole script within a minute and a half on 2 CPU cores (a check, not a measurement)
TINY_WINDOW, TINY_MAX_STEPS, TINY_SCALE = 2, 1, 4


class Budget:
    """Wall-clock seconds left; a row starts only if the longest row so far would still fit."""

    def __init__(self, seconds: float):
        self.seconds, self.started, self.longest = seconds, time.perf_counter(), 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def allows(self) -> bool:
        return self.elapsed() + self.longest <= self.seconds

    def spent(self, seconds: float) -> None:
        self.longest = max(self.longest, seconds)


def synthetic_faces(count: int, resolution: int, seed: int) -> tuple[torch.Tensor, AlignedFaces]:
    """(frames, aligned faces): each frame is its face crop's region (frame -> crop is a plain scale)."""
    _, crop_wh = crop_geometry(resolution)
    frame_hw = (crop_wh[1], crop_wh[0])
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (count, *frame_hw, 3), dtype=torch.uint8, generator=generator)
    crops = torch.randint(0, 256, (count, resolution, resolution, 3), dtype=torch.uint8, generator=generator)
    matrices = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(count, 2, 3).clone()
    mask = pixel_mask(resolution)
    faces = AlignedFaces(crops=crops, matrices=matrices, valid=torch.ones(count, dtype=torch.bool),
                         resolution=resolution, crop_wh=tuple(crop_wh), frame_hw=frame_hw, mask=mask,
                         latent_mask=latent_mask(mask))
    return frames, faces


def synthetic_features(count: int, seed: int) -> AudioFeatures:
    """Whisper-shaped features for `count` frames at 25 fps: 50 rows a second of [5, 384], 10 rows a chunk."""
    generator = torch.Generator().manual_seed(seed)
    length = 2 * count + 10
    rows = np.minimum(np.arange(count)[:, None] * 2 + np.arange(10)[None], length - 1)
    return AudioFeatures(features=torch.randn(length, 5, 384, generator=generator) * 0.5,
                         silence_features=torch.zeros(length, 5, 384), rows=rows, fps=FPS,
                         duration=count / FPS, seamless=False)


def unet_config(version: str, tiny: bool):
    return json.loads(TINY_CONFIG.read_text())["unet_config"] if tiny else version


def run_row(version: str, preset_name: str, args, device: torch.device, vae_file: Path,
            compile_mode: str | None) -> dict:
    """One version x preset: warm-up window, then `args.windows` timed windows through the sampler."""
    preset = PRESETS[preset_name]
    resolution = VERSIONS[version] // (TINY_SCALE if args.tiny else 1)
    dtype = resolve_dtype(dtype_name(preset.dtype, device), device)
    dtype_label = str(dtype).removeprefix("torch.")
    quantization = preset.quantization
    if quantization == "int4" and device.type != "cuda":
        return {"skipped": "int4 needs CUDA"}
    config = unet_config(version, args.tiny)
    window = TINY_WINDOW if args.tiny else FULL_WINDOW
    values = {**preset.settings, "window": window}
    if args.tiny:
        values["steps"] = min(values.get("steps", SamplerSettings().steps), TINY_MAX_STEPS)
    settings = SamplerSettings(**values)
    unet = quantize_unet(random_unet(config, str(device), dtype), quantization)
    if compile_mode:
        compile_unet(unet, mode=compile_mode)
    vae = load_vae(vae_file, device=device, dtype=dtype, batch_size=preset.vae_batch, tiling=preset.vae_tiling,
                   offload=preset.offload)
    count = window * args.windows

    def sample(frames_count: int, seed: int):
        frames, faces = synthetic_faces(frames_count, resolution, seed)
        return lipsync(frames, synthetic_features(frames_count, seed), unet, vae, settings, faces=faces,
                       device=device, output=Output(torch.uint8))

    started = time.perf_counter()
    if not args.tiny:  # warm-up: kernel selection, allocator growth and compilation are not timed
        sample(window, seed=1)
    warmup = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    result = sample(count, seed=2)
    total = time.perf_counter() - started
    seconds = result.stats["seconds"]
    unet_s, vae_s = seconds["unet"], seconds["encode"] + seconds["decode"]
    per_window = total / args.windows
    estimate = estimate_vram(config, resolution, dtype=dtype, quantization=quantization, window=window,
                             guidance=settings.guidance, vae_batch=preset.vae_batch, vae_tiling=preset.vae_tiling,
                             whisper=False, offload=preset.offload)
    return {"dtype": dtype_label, "quantization": quantization, "settings": dict(values),
            "vae_batch": preset.vae_batch, "vae_tiling": preset.vae_tiling, "offload": preset.offload,
            "window_frames": window, "windows": args.windows, "warmup_s": warmup, "total_s": total,
            "seconds_per_window": per_window, "rtf": per_window / (window / FPS),
            "x_real_time": (window / FPS) / per_window,
            "unet_s": unet_s, "vae_s": vae_s, "cpu_s": max(total - unet_s - vae_s, 0.0),
            "unet_passes": {"full": result.stats["full_passes"], "shallow": result.stats["shallow_passes"]},
            "peak_bytes": peak_bytes(device), "unet_weight_bytes": weight_bytes(unet), "estimate": estimate,
            "compilations": compilations(unet)}


def golden_unet_file(folder: Path) -> tuple[Path, Path]:
    """The golden tiny UNet written as an official checkpoint (as tests/test_unet.py does), and its config."""
    from safetensors.torch import load_file

    if not GOLDEN.is_file():
        raise FileNotFoundError(f"{GOLDEN} is missing: the shared reference data must be next to the repository")
    golden = load_file(str(GOLDEN))
    weights = {name[len("weights."):]: t.float() for name, t in golden.items() if name.startswith("weights.")}
    path = folder / "latentsync_unet.pt"
    torch.save({"state_dict": weights, "global_step": 0}, path)
    return path, TINY_CONFIG


def one_call(unet, device: torch.device, dtype: torch.dtype, latent: int, frames: int) -> tuple[torch.Tensor, int]:
    """One guided UNet call on fixed inputs: (output in float32 on the CPU, peak memory of the call)."""
    generator = torch.Generator().manual_seed(42)
    sample = torch.randn(1, 13, frames, latent, latent, generator=generator).repeat(2, 1, 1, 1, 1)
    audio = torch.randn(frames, 50, 384, generator=generator)
    audio = torch.cat([torch.zeros_like(audio), audio])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        out = unet(sample.to(device, dtype), torch.tensor(951, device=device), audio.to(device, dtype))
    return out.float().cpu(), peak_bytes(device)


def quantized_rows(reference_dtype: torch.dtype) -> tuple[tuple[str, torch.dtype], ...]:
    """The quantizations measured against the reference, with their activations' dtype: int8, fp8 and the GGUF
    formats keep the reference's; int4 needs bf16 (torchao's kernels)."""
    return (("int8", reference_dtype), ("int4", torch.bfloat16), ("fp8_e4m3fn", reference_dtype),
            ("Q8_0", reference_dtype), ("Q4_K", reference_dtype))


def quantization_rows(args, device: torch.device, folder: Path, budget: Budget) -> list[dict]:
    """int8 and int4 against fp16 (fp32 on the CPU) on the golden tiny UNet (through the loader) and on a
    full-size random 1.5 UNet (the tiny config with --tiny)."""
    cuda = device.type == "cuda"
    reference_dtype = torch.float16 if cuda else torch.float32
    models = {}
    if GOLDEN.is_file():
        golden_path, golden_config = golden_unet_file(folder)
        models["golden tiny UNet (loader)"] = (lambda dtype, q: load_unet(golden_path, golden_config, dtype=dtype,
                                                                          device=device, quantization=q), 8, 16)
    rows = [] if GOLDEN.is_file() else [{"model": "golden tiny UNet (loader)",
                                         "skipped": f"{GOLDEN} is missing (set LATENTSYNC_SHARED)"}]
    models.update({
        f"random {'tiny' if args.tiny else 'full-size'} 1.5 UNet": (
            lambda dtype, q: quantize_unet(random_unet(unet_config("1.5", args.tiny), str(device), dtype), q),
            32, TINY_WINDOW if args.tiny else FULL_WINDOW),
    })
    for name, (make, latent, frames) in models.items():
        row = {"model": name, "reference": str(reference_dtype).removeprefix("torch."),
               "input": [2, 13, frames, latent, latent]}
        if not budget.allows():
            rows.append({**row, "skipped": "budget spent"})
            continue
        started = time.perf_counter()
        unet = make(reference_dtype, "none")
        reference, reference_peak = one_call(unet, device, reference_dtype, latent, frames)
        row["reference_weight_bytes"], row["reference_peak_bytes"] = weight_bytes(unet), reference_peak
        del unet
        # int8 keeps the reference's dtype for activations; int4 needs bf16 (torchao's kernels) and CUDA.
        for quantization, dtype in quantized_rows(reference_dtype):
            if quantization == "int4" and not cuda:
                row[quantization] = {"skipped": "needs CUDA (torchao's int4 kernels run only there)"}
                continue
            unet = make(dtype, quantization)
            out, peak = one_call(unet, device, dtype, latent, frames)
            held = weight_bytes(unet)
            row[quantization] = {"dtype": str(dtype).removeprefix("torch."),
                                 "relative_error": float((out - reference).norm() / reference.norm()),
                                 "weight_bytes": held, "saved_bytes": row["reference_weight_bytes"] - held,
                                 "peak_bytes": peak}
            del unet
        budget.spent(time.perf_counter() - started)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny UNet and VAE: check the script on a CPU")
    parser.add_argument("--windows", type=int, default=3, help="timed windows per row (after one warm-up)")
    parser.add_argument("--out", default="bench-gpu.json", help="JSON file for the README table")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds; rows that would not fit are skipped")
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets")
    parser.add_argument("--versions", default=",".join(VERSIONS), help="comma-separated UNet versions")
    parser.add_argument("--compile", choices=COMPILE_MODES, default=None,
                        help="also run the fast preset with the UNet compiled in this mode")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.windows < 1:
        parser.error("--windows must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    budget = Budget(args.budget)
    cuda = device.type == "cuda"
    where = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    report = {"device": torch.cuda.get_device_name(device) if cuda else where, "torch": torch.__version__,
              "cuda": torch.version.cuda, "tiny": args.tiny, "windows": args.windows, "fps": FPS, "budget_s": args.budget,
              "peak_kind": "torch.cuda.max_memory_allocated, reset per row" if cuda
              else "process peak RSS so far (not reset per row)", "rows": [], "quantization": []}
    plan = [(version, preset, None) for version in args.versions.split(",") for preset in args.presets.split(",")]
    plan += [(version, "fast", args.compile) for version in args.versions.split(",")] if args.compile else []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        vae_file = write_sd_vae(folder / "vae.safetensors", widths=NARROW_WIDTHS if args.tiny else WIDTHS)
        for version, preset, compile_mode in plan:
            row = {"version": version, "resolution": VERSIONS[version] // (TINY_SCALE if args.tiny else 1),
                   "preset": preset, "compile": compile_mode}
            if not budget.allows():
                report["rows"].append({**row, "skipped": "budget spent"})
                continue
            started = time.perf_counter()
            row.update(run_row(version, preset, args, device, vae_file, compile_mode))
            budget.spent(time.perf_counter() - started)
            report["rows"].append(row)
            print_row(row, flush=True)
            if cuda:
                torch.cuda.empty_cache()
        report["quantization"] = quantization_rows(args, device, folder, budget)
    report["elapsed_s"] = budget.elapsed()
    Path(args.out).write_text(json.dumps(report, indent=1))
    print_quantization(report["quantization"])
    print(f"{report['device']}, torch {report['torch']}, CUDA {report['cuda']}; {report['elapsed_s']:.0f} s; "
          f"written to {args.out}")


def print_row(row: dict, flush: bool = False) -> None:
    gib = 2 ** 30
    name = f"{row['version']} {row['resolution']}px {row['preset']}{' +' + row['compile'] if row['compile'] else ''}"
    if "skipped" in row:
        print(f"{name:<34} skipped: {row['skipped']}", flush=flush)
        return
    print(f"{name:<34} {row['seconds_per_window']:7.2f} s/window  rtf {row['rtf']:6.2f}  unet {row['unet_s']:6.2f} s"
          f"  vae {row['vae_s']:6.2f} s  cpu {row['cpu_s']:5.2f} s  peak {row['peak_bytes'] / gib:5.2f} GiB"
          f"  estimate {row['estimate']['total'] / gib:5.2f} GiB", flush=flush)


def print_quantization(rows: list[dict]) -> None:
    for row in rows:
        if "skipped" in row:
            print(f"{row['model']}: skipped ({row['skipped']})")
            continue
        parts = []
        for name, _ in quantized_rows(torch.float32):
            result = row[name]
            parts.append(f"{name} {result['skipped']}" if "skipped" in result else
                         f"{name} rel err {result['relative_error']:.2e}, weights "
                         f"{result['weight_bytes'] / 2**20:.0f} MiB (saves {result['saved_bytes'] / 2**20:.0f} MiB)")
        print(f"{row['model']} vs {row['reference']} ({row['reference_weight_bytes'] / 2**20:.0f} MiB): "
              + "; ".join(parts))


if __name__ == "__main__":
    main()
