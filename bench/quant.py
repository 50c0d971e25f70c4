"""Benchmark: the UNet's weight storages on this CPU: weight bytes, output error against fp32, seconds per call.

Storages: fp32 (the reference), bf16, fp8 e4m3fn/e5m2 (`unet/packed.py`), int8 (torchao for Linear, ours for
Conv2d), int4 (torchao, group 128: its kernels run only on CUDA, so on a CPU its quantization math, torchao's own
tinygemm functions, is applied to the Linear weights of a bf16 model: its error, not its speed or bytes), and
GGUF's Q8_0, Q6_K, Q5_K, Q4_K, Q4_0 (`unet/ggml.py`). Models:

- the golden tiny UNet of the shared reference, through the loader: the GGUF formats are converted to .gguf
  files (`unet/convert.py`) and loaded from them, the others quantized as the loader node does;
- the full-size random-weight 1.5 UNet (`bench/unet.py`'s weights), quantized in memory by the same code.

One call each on one 16-frame window at 256 px (latents 32x32, batch 1), after which the goals are checked:
Q4_K weights <= 0.3x bf16's with an error no larger than int4's; Q8_0's error <= 2x int8's; every storage runs.

    python -m bench.quant --tiny-only          # the golden tiny UNet (under a minute)
    python -m bench.quant --out quant.json     # both models (about 25 minutes on 2 cores: the K formats'
                                               # scale search for 1.3 B weights takes most of it)
    python -m bench.quant --sensitivity        # full size: Q4_0 on one resolution level at a time (5 minutes);
                                               # the reason for `unet/packed.py`'s finer levels
    python -m bench.quant --speed              # full size: seconds per call of each storage, one after the
                                               # other in one process (3 minutes): the unpacking's cost

`--speed` fills each packed layer with random blocks of its format (the search that makes real ones takes minutes,
and the unpacking costs the same whatever the values), so its outputs are noise and only its times count.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bench.unet import random_unet
from latentsync.unet.convert import Conversion, convert_unet
from latentsync.unet.loading import load_unet, quantize_unet
from latentsync.unet.quantize import weight_bytes

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("LATENTSYNC_SHARED", REPO.parent / "shared")) / "reference" / "latentsync"
GGUF = ("Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q4_0")
# storage -> (compute dtype, quantization)
STORAGES = {"fp32": (torch.float32, "none"), "bf16": (torch.bfloat16, "none"),
            "fp8_e4m3fn": (torch.float32, "fp8_e4m3fn"), "fp8_e5m2": (torch.float32, "fp8_e5m2"),
            "int8": (torch.float32, "int8"), "int4": (torch.bfloat16, "int4"),
            **{kind: (torch.float32, kind) for kind in GGUF}}


def int4_math(unet: nn.Module) -> nn.Module:
    """torchao's Int4WeightOnlyConfig(group_size=128) applied to the Linear weights as its quantize and
    dequantize functions compute them (tinygemm's asymmetric qparams in bf16), for a CPU without its kernels;
    layers whose input width is no multiple of 128 stay as they are, as torchao leaves them."""
    from torchao.quantization.quant_primitives import (MappingType, _choose_qparams_affine_tinygemm,
                                                       _dequantize_affine_tinygemm, _quantize_affine_tinygemm)

    block = (1, 128)
    for module in unet.modules():
        if isinstance(module, nn.Linear) and module.in_features % 128 == 0:
            weight = module.weight.detach().to(torch.bfloat16)
            scale, zero = _choose_qparams_affine_tinygemm(weight, MappingType.ASYMMETRIC, block, torch.int32, 0, 15,
                                                          scale_dtype=torch.bfloat16, zero_point_dtype=torch.bfloat16)
            levels = _quantize_affine_tinygemm(weight, block, scale, zero, torch.int32, 0, 15)
            module.weight.data = _dequantize_affine_tinygemm(levels, block, scale, zero, torch.int32, 0, 15,
                                                             output_dtype=torch.bfloat16)
    return unet


def inputs(frames: int, latent: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(42)
    return (torch.randn(1, 13, frames, latent, latent, generator=generator),
            torch.randn(frames, 50, 384, generator=generator))


@torch.inference_mode()
def one_call(unet: nn.Module, dtype: torch.dtype, sample: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, float]:
    started = time.perf_counter()
    out = unet(sample.to(dtype), 451, audio.to(dtype))
    return out.float(), time.perf_counter() - started


def golden_maker(folder: Path):
    """A function (storage -> UNet) over the golden tiny UNet written as an official checkpoint."""
    from safetensors.torch import load_file

    config = json.loads((REFERENCE / "unet_tiny_config.json").read_text())["unet_config"]
    golden = load_file(REFERENCE / "unet_tiny_golden.safetensors")
    path = folder / "latentsync_unet.pt"
    torch.save({"state_dict": {k[8:]: v.float() for k, v in golden.items() if k.startswith("weights.")},
                "global_step": 1}, path)
    path.with_suffix(".json").write_text(json.dumps({"unet_config": config, "resolution": 256}))

    def make(storage: str) -> nn.Module:
        dtype, quantization = STORAGES[storage]
        if storage in GGUF:
            out = folder / f"latentsync_unet-{storage}.gguf"
            if not out.exists():
                convert_unet(Conversion(path, f"gguf-{storage.lower()}", out))
            return load_unet(out, path.with_suffix(".json"))
        if storage == "int4":
            return int4_math(load_unet(path, path.with_suffix(".json"), dtype=dtype))
        return load_unet(path, path.with_suffix(".json"), dtype=dtype, quantization=quantization)
    return make


def full_maker(storage: str) -> nn.Module:
    dtype, quantization = STORAGES[storage]
    if storage == "int4":
        return int4_math(random_unet("1.5", "cpu", dtype))
    return quantize_unet(random_unet("1.5", "cpu", dtype), quantization)


def run_model(name: str, make, frames: int, latent: int, storages: list[str]) -> list[dict]:
    sample, audio = inputs(frames, latent)
    rows, reference = [], None
    for storage in ["fp32", *(s for s in storages if s != "fp32")]:  # the reference first
        dtype = STORAGES[storage][0]
        started = time.perf_counter()
        try:
            unet = make(storage)
        except Exception as exc:  # noqa: BLE001 -- a storage that does not run here is a row saying why
            rows.append({"model": name, "storage": storage, "error": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        made = time.perf_counter() - started
        out, seconds = one_call(unet, dtype, sample, audio)
        if reference is None:
            reference = out
        row = {"model": name, "storage": storage, "compute": str(dtype).removeprefix("torch."),
               "weight_bytes": None if storage == "int4" else weight_bytes(unet),
               "relative_l2": float((out - reference).norm() / reference.norm()),
               "max_abs": float((out - reference).abs().max()),
               "seconds_per_call": None if storage == "int4" else round(seconds, 3), "seconds_to_make": round(made, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        del unet
    return rows


LEVELS = {"level 0 (full resolution)": ("down_blocks.0.", "up_blocks.3."),
          "level 1": ("down_blocks.1.", "up_blocks.2."), "level 2": ("down_blocks.2.", "up_blocks.1."),
          "level 3 and the middle": ("down_blocks.3.", "up_blocks.0.", "mid_block.")}


def sensitivity(frames: int) -> None:
    """The full-size UNet's output error with Q4_0 on the Linear and Conv2d weights of one level at a time."""
    from latentsync.unet.packed import PackedLayer, pack

    sample, audio = inputs(frames, 32)
    reference, _ = one_call(random_unet("1.5", "cpu", torch.float32), torch.float32, sample, audio)
    for level, prefixes in LEVELS.items():
        unet, weights = random_unet("1.5", "cpu", torch.float32), 0
        for prefix, parent in list(unet.named_modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, (nn.Linear, nn.Conv2d)) and f"{prefix}.{name}".startswith(prefixes):
                    setattr(parent, name, PackedLayer(child, pack(child.weight, "Q4_0")))
                    weights += child.weight.numel()
        out, _ = one_call(unet, torch.float32, sample, audio)
        print(f"{level}: {weights / 1e6:.0f} M weights in Q4_0, relative L2 error "
              f"{float((out - reference).norm() / reference.norm()):.4f}", flush=True)


def random_blocks(layer: nn.Module, kind: str, name: str) -> nn.Module:
    """A `PackedLayer` of `layer`'s shape holding random bytes in the format `pack` would choose, with finite
    fp16 scales (the bytes at each block's scale offsets set to small values)."""
    from latentsync.unet import ggml
    from latentsync.unet.packed import Packed, PackedLayer, layer_kind, stored_kind

    shape = tuple(layer.weight.shape)
    choice = stored_kind(layer.weight.numel(), layer_kind(name, kind))
    if choice not in ggml.FORMATS:
        return PackedLayer(layer, Packed(choice, torch.zeros(2 * layer.weight.numel(), dtype=torch.uint8), shape))
    fmt = ggml.FORMATS[choice]
    raw = torch.randint(0, 256, (layer.weight.numel() // fmt.block, fmt.size), dtype=torch.uint8)
    scale = torch.full((len(raw), 1), 1e-3, dtype=torch.float16).view(torch.uint8)
    for offset in {"Q8_0": (0,), "Q4_0": (0,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}[choice]:
        raw[:, offset:offset + 2] = scale
    return PackedLayer(layer, Packed(choice, raw, shape))


def speed(frames: int) -> None:
    """Seconds per call of the full-size UNet for each storage, in one process, one after the other."""
    sample, audio = inputs(frames, 32)
    for storage in ("fp32", "int8", "fp8_e4m3fn", *GGUF):
        unet = random_unet("1.5", "cpu", torch.float32)
        if storage in GGUF:
            for prefix, parent in list(unet.named_modules()):
                for name, child in list(parent.named_children()):
                    if isinstance(child, (nn.Linear, nn.Conv2d)):
                        key = f"{prefix}.{name}.weight" if prefix else f"{name}.weight"
                        setattr(parent, name, random_blocks(child, storage, key))
        else:
            unet = quantize_unet(unet, STORAGES[storage][1])
        one_call(unet, torch.float32, sample[:, :, :2], audio[:2])  # warm-up on 2 frames
        _, seconds = one_call(unet, torch.float32, sample, audio)
        print(f"{storage}: {seconds:.1f} s per call, weights {weight_bytes(unet) / 2**30:.2f} GiB", flush=True)
        del unet


def goals(rows: list[dict]) -> list[str]:
    lines = []
    for model in dict.fromkeys(row["model"] for row in rows):
        by = {row["storage"]: row for row in rows if row["model"] == model and "error" not in row}
        failed = [row["storage"] for row in rows if row["model"] == model and "error" in row]
        if {"Q4_K", "bf16", "int4"} <= set(by):
            ratio = by["Q4_K"]["weight_bytes"] / by["bf16"]["weight_bytes"]
            lines.append(f"{model}: Q4_K weights {ratio:.3f}x bf16 (goal <= 0.3); error {by['Q4_K']['relative_l2']:.4f}"
                         f" vs int4 {by['int4']['relative_l2']:.4f} (goal: no larger)")
        if {"Q8_0", "int8"} <= set(by):
            ratio = by["Q8_0"]["relative_l2"] / by["int8"]["relative_l2"]
            lines.append(f"{model}: Q8_0 error {ratio:.2f}x int8's (goal <= 2)")
        lines.append(f"{model}: storages that did not run: {', '.join(failed) or 'none'}")
    return lines


def table(rows: list[dict]) -> str:
    lines = ["| model | storage | weights MB | vs bf16 | relative L2 | max abs | s/call |", "| --- " * 7 + "|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['storage']} | did not run: {row['error'][:80]} | | | | |")
            continue
        bf16 = next((r["weight_bytes"] for r in rows if r["model"] == row["model"] and r["storage"] == "bf16"), None)
        size = row["weight_bytes"]
        lines.append(f"| {row['model']} | {row['storage']} | {'' if size is None else f'{size / 2**20:.1f}'} | "
                     f"{'' if size is None or not bf16 else f'{size / bf16:.3f}'} | {row['relative_l2']:.4f} | "
                     f"{row['max_abs']:.4f} | {row['seconds_per_call'] or '(CUDA only)'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny-only", action="store_true", help="the golden tiny UNet only")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--storages", default=",".join(STORAGES), help="comma-separated; fp32 always runs first")
    parser.add_argument("--out", default=None, help="JSON file for the README table")
    parser.add_argument("--sensitivity", action="store_true", help="Q4_0 on one level of the full-size UNet at a time")
    parser.add_argument("--speed", action="store_true", help="seconds per call of each storage, full size")
    args = parser.parse_args()
    if args.sensitivity:
        sensitivity(args.frames)
        return
    if args.speed:
        speed(args.frames)
        return
    storages = args.storages.split(",")
    unknown = [s for s in storages if s not in STORAGES]
    if unknown:
        parser.error(f"unknown storages {unknown}; known: {', '.join(STORAGES)}")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        rows += run_model("golden tiny UNet", golden_maker(Path(folder)), args.frames, 8, storages)
    if not args.tiny_only:
        rows += run_model("full-size random 1.5 UNet", full_maker, args.frames, 32, storages)
    print(table(rows))
    for line in goals(rows):
        print(line)
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                              "threads": torch.get_num_threads(), "rows": rows,
                                              "goals": goals(rows)}, indent=1))


if __name__ == "__main__":
    main()
