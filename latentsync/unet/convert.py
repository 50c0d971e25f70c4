"""Convert a LatentSync UNet checkpoint into another storage, and check that the written file loads.

Targets: GGUF block formats (`gguf-q8_0` ... `gguf-q4_0`, `gguf_files.py`), fp8 safetensors (`fp8_e4m3fn`, also
called `fp8`, and `fp8_e5m2`: layer weights in fp8 with a `<layer>.scale_weight` per output channel, ComfyUI's name for an fp8
weight's scale) and plain `safetensors` (the editor's missing-model dialog fetches only .safetensors). Every
output keeps the official key names and says its version, config and resolution in its metadata. The file is
written beside the output as `<name>.part`, loaded back strictly, and only then given its name.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ..core.options import Option
from ..media.outputs import check_output
from . import ggml
from .config import resolve_unet_config
from .files import choose_config
from .gguf_files import write_unet_gguf
from .loading import UNetCheckpointError, check_keys_and_shapes, load_unet, read_unet_file
from .model import build_unet
from .packed import FP8, Packed, pack, packs

TARGETS = ("safetensors", "fp8", *FP8, *(f"gguf-{name.lower()}" for name in ggml.FORMATS))
ALIASES = {"fp8": "fp8_e4m3fn"}  # ComfyUI's usual fp8
TARGET = Option("to", None, "The storage to write: GGUF (gguf-q8_0 ... gguf-q4_0), fp8 (e4m3fn, e5m2) safetensors, or plain safetensors.",
                choices=TARGETS)


@dataclass(frozen=True)
class Conversion:
    """One conversion: `source` checkpoint, `target` (a `TARGETS` name), `out` file, and the UNet's version
    ("auto", "1.5", "1.6" or a config JSON, as the loader takes it)."""

    source: Path
    target: str
    out: Path
    version: str = "auto"

    def check(self) -> Conversion:
        problem = TARGET.problem(self.target)
        if problem:
            raise ValueError(f"--to {problem}")
        suffix = ".gguf" if self.target.startswith("gguf-") else ".safetensors"
        if Path(self.out).suffix.lower() != suffix:
            raise ValueError(f"{self.target} is written as a {suffix} file (ComfyUI and the loader list files by "
                             f"that suffix); name the output {Path(self.out).with_suffix(suffix).name}")
        check_output(self.out, {"the input": self.source})
        return self


def convert_unet(conversion: Conversion, progress: Callable[[int, int], None] | None = None) -> dict:
    """Write `conversion.out`; returns a summary: sizes, the storage of each tensor, the check's outcome."""
    conversion = conversion.check()
    target = ALIASES.get(conversion.target, conversion.target)
    clock = time.perf_counter()
    choice = choose_config(conversion.source, conversion.version)
    config = resolve_unet_config(choice.config)
    state, what = read_unet_file(conversion.source, choice.config)
    packed = sorted({value.kind for value in state.values() if isinstance(value, Packed)})
    if packed:
        raise UNetCheckpointError(f"{conversion.source} already holds packed weights ({', '.join(packed)}); "
                                  "convert from the original float checkpoint (latentsync_unet.pt)")
    expected = {name: tuple(t.shape) for name, t in build_unet(config, device="meta").state_dict().items()}
    check_keys_and_shapes(conversion.source, what, state, expected, config, "the chosen config")
    state = {name: state[name] for name in expected}
    version = choice.config if isinstance(choice.config, str) else "custom"
    metadata = {"version": version, "config": json.dumps(asdict(config)), "resolution": str(choice.resolution),
                "format": target.removeprefix("gguf-").upper() if target.startswith("gguf-") else target}
    part = conversion.out.with_name(conversion.out.name + ".part")
    try:
        if target.startswith("gguf-"):
            counts = write_unet_gguf(state, part, metadata["format"], config=config, version=version,
                                     resolution=choice.resolution, progress=progress)
        else:
            counts = _write_safetensors(state, part, target, metadata, progress)
        unet = load_unet(part, choice.config)  # strict: every key, shape and block must read back
        del unet
        if progress is not None:
            progress(1, 1)
        os.replace(part, conversion.out)
    finally:
        part.unlink(missing_ok=True)
    source_bytes, out_bytes = conversion.source.stat().st_size, conversion.out.stat().st_size
    return {"out": str(conversion.out), "format": target, "config": choice.source,
            "bytes": out_bytes, "source_bytes": source_bytes, "ratio": round(out_bytes / source_bytes, 4),
            "tensors": counts, "check": f"loaded back strictly ({len(expected)} tensors)",
            "seconds": round(time.perf_counter() - clock, 1)}


def _write_safetensors(state: dict[str, torch.Tensor], path: Path, target: str, metadata: dict[str, str],
                       progress: Callable[[int, int], None] | None) -> dict[str, int]:
    from safetensors.torch import save_file

    tensors, counts = {}, {}
    for number, (name, tensor) in enumerate(state.items()):
        if target in FP8 and packs(name, tensor):
            stored = pack(tensor, target, name)
            tensors[name] = stored.data.view(FP8[target])
            tensors[name.removesuffix("weight") + "scale_weight"] = stored.scale.float()
            kind = target
        else:
            tensors[name] = tensor.detach().contiguous()
            kind = str(tensor.dtype).removeprefix("torch.")
        counts[kind] = counts.get(kind, 0) + 1
        if progress is not None:
            progress(number + 1, 2 * len(state))
    save_file(tensors, str(path), metadata={f"latentsync.{key}": value for key, value in metadata.items()})
    return counts
