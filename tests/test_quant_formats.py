"""fp8 and GGUF storage of the UNet (`unet/ggml.py`, `unet/packed.py`, `unet/gguf_files.py`, `unet/convert.py`).

The block formats are checked byte for byte against the `gguf` package's own reference (numpy) code; the golden
tiny UNet is converted to every target with `python -m latentsync convert` and loaded back through the public
loader, its output within each format's tolerance of fp32 (`bench/quant.py` measured them; the bounds leave
about 40 % room); damaged, foreign and hostile files are one-line errors that never run anything.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import latentsync
from conftest import shared_path
from hostile_files import intact, make_target, write_hostile
from latentsync.unet import ggml
from latentsync.unet.convert import ALIASES, TARGETS, Conversion, convert_unet
from latentsync.unet.files import choose_config
from latentsync.unet.gguf_files import write_unet_gguf
from latentsync.unet.loading import UNetCheckpointError, load_unet
from latentsync.unet.config import resolve_unet_config
from latentsync.unet.packed import PackedLayer, layer_kind, pack, packs, stored_kind
from latentsync.unet.quantize import weight_bytes
from latentsync.sample.presets import preset_unet_file
from latentsync.sample.vram import unet_weight_bytes

REPO = Path(__file__).resolve().parents[1]
# relative L2 error of the golden tiny UNet's output against fp32 (bench/quant.py --tiny-only measured about 0.7x)
TOLERANCE = {"safetensors": 0.0, "fp8": 0.14, "fp8_e4m3fn": 0.14, "fp8_e5m2": 0.28, "gguf-q8_0": 0.04, "gguf-q6_k": 0.045,
             "gguf-q5_k": 0.06, "gguf-q4_k": 0.11, "gguf-q4_0": 0.25}
# relative L2 error of one tensor of N(0, 1) values after a round trip (llama.cpp's formats measure the same)
BLOCK_ERROR = {"Q8_0": 0.006, "Q6_K": 0.02, "Q5_K": 0.04, "Q4_K": 0.08, "Q4_0": 0.09}


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    """The golden tiny UNet as an official checkpoint with its config beside it, its inputs and fp32 output."""
    tensors = load_file(shared_path("reference/latentsync/unet_tiny_golden.safetensors"))
    config = json.loads(shared_path("reference/latentsync/unet_tiny_config.json").read_text())["unet_config"]
    folder = tmp_path_factory.mktemp("quant")
    path = folder / "latentsync_unet.pt"
    torch.save({"state_dict": {k[8:]: v.float() for k, v in tensors.items() if k.startswith("weights.")},
                "global_step": 1}, path)
    path.with_suffix(".json").write_text(json.dumps({"unet_config": config, "resolution": 256}))
    call = (tensors["inputs.sample"], tensors["inputs.timestep_a"], tensors["inputs.encoder_hidden_states"])
    with torch.inference_mode():
        reference = load_unet(path, config)(*call)
    return {"path": path, "config": config, "call": call, "reference": reference}


def relative_error(unet, golden) -> float:
    with torch.inference_mode():
        out = unet(*golden["call"])
    return float((out - golden["reference"]).norm() / golden["reference"].norm())


def blocks_of(kind: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    values = torch.randn(64, 512, generator=generator)
    values[1] = 0  # all-zero blocks
    values[2] = -values[2].abs() - 0.5  # no positive value: the K formats' minimum carries the block
    values[3, :256] = 7.0  # a constant block
    values[4] *= 1e-6  # tiny scales, still in fp16's range
    return values


@pytest.mark.parametrize("kind", list(ggml.FORMATS))
def test_block_formats_are_llama_cpps_bytes(kind):
    from gguf import GGMLQuantizationType, quants

    values = blocks_of(kind)
    raw = ggml.quantize(values, kind)
    assert raw.dtype == torch.uint8 and tuple(raw.shape) == (values.numel() // ggml.FORMATS[kind].block,
                                                            ggml.FORMATS[kind].size)
    ours = ggml.dequantize(raw, kind).view_as(values)
    theirs = quants.dequantize(raw.numpy(), GGMLQuantizationType[kind]).reshape(values.shape)
    np.testing.assert_array_equal(ours.numpy(), theirs)  # our reader decodes the bytes as llama.cpp does
    if kind in ("Q8_0", "Q4_0"):  # the gguf package quantizes these two itself: the same bytes
        np.testing.assert_array_equal(raw.numpy(), quants.quantize(values.numpy(), GGMLQuantizationType[kind])
                                      .reshape(raw.shape))
    assert torch.equal(ours[1], torch.zeros(512)) and torch.allclose(ours[3, :256], torch.full((256,), 7.0), rtol=1e-2)
    gaussian = torch.randn(256, 1024, generator=torch.Generator().manual_seed(5))
    back = ggml.dequantize(ggml.quantize(gaussian, kind), kind).view_as(gaussian)
    error = float((back - gaussian).norm() / gaussian.norm())
    assert error < BLOCK_ERROR[kind], error
    assert ggml.dequantize(raw, kind, torch.bfloat16).dtype == torch.bfloat16


def test_the_k_formats_search_beats_a_plain_min_max_grid():
    """The scale search (llama.cpp's make_qkx2_quants) lowers the error below the plain min-max grid's."""
    values = torch.randn(128, 256, generator=torch.Generator().manual_seed(7)) ** 3  # heavy tails
    searched = ggml.dequantize(ggml.quantize(values, "Q4_K"), "Q4_K").view_as(values)
    low, high = values.view(-1, 32).amin(1, keepdim=True), values.view(-1, 32).amax(1, keepdim=True)
    step = (high - low.clamp(max=0)) / 15
    plain = (torch.round((values.view(-1, 32) - low.clamp(max=0)) / step) * step + low.clamp(max=0)).view_as(values)
    assert (searched - values).norm() < 0.9 * (plain - values).norm()


def test_the_finest_levels_are_stored_finer():
    assert layer_kind("down_blocks.0.resnets.0.conv1.weight", "Q4_K") == "Q6_K"
    assert layer_kind("up_blocks.2.attentions.0.proj_in.weight", "Q4_K") == "Q5_K"
    assert layer_kind("down_blocks.2.resnets.0.conv1.weight", "Q4_K") == "Q4_K"
    assert layer_kind("up_blocks.3.resnets.0.conv1.weight", "Q6_K") == "Q8_0" == layer_kind("mid_block.x.weight", "Q8_0")
    assert layer_kind("down_blocks.0.resnets.0.conv1.weight", "fp8_e4m3fn") == "fp8_e4m3fn"
    assert pack(torch.randn(64, 256), "Q4_0", "up_blocks.3.attentions.0.proj_in.weight").kind == "Q5_K"


def test_packing_covers_linear_and_conv_weights_and_falls_back_by_size():
    assert packs("a.to_q.weight", torch.zeros(4, 4)) and packs("conv_in.weight", torch.zeros(4, 13, 3, 3))
    assert not packs("a.norm.weight", torch.zeros(4)) and not packs("a.to_out.0.bias", torch.zeros(4))
    assert not packs("x.pos_encoder.pe", torch.zeros(1, 24, 64))
    assert pack(torch.randn(320, 13, 3, 3), "Q4_K").kind == "Q8_0"  # 37,440 values: no 256-value blocks
    assert pack(torch.randn(3, 5), "Q4_K").kind == "F16"
    packed = pack(torch.randn(64, 32, 3, 3), "fp8_e4m3fn")
    assert packed.data.dtype == torch.uint8 and packed.scale.shape == (64,)
    conv = torch.nn.Conv2d(32, 64, 3, padding=1)
    layer = PackedLayer(conv, pack(conv.weight, "Q8_0"))
    x = torch.randn(2, 32, 8, 8)
    assert torch.allclose(layer(x), conv(x), atol=0.02) and layer(x.double()).dtype == torch.float64


@pytest.mark.parametrize("target", TARGETS)
def test_convert_and_load_back_stay_within_each_formats_tolerance(golden, target, tmp_path):
    suffix = ".gguf" if target.startswith("gguf-") else ".safetensors"
    out = tmp_path / f"unet{suffix}"
    summary = convert_unet(Conversion(golden["path"], target, out))
    assert summary["check"].startswith("loaded back strictly") and out.is_file()
    assert not out.with_name(out.name + ".part").exists()
    unet = latentsync.load_unet(out, golden["config"])  # dtype optional: the file's own precision
    error = relative_error(unet, golden)
    assert error <= TOLERANCE[target], (target, error)
    full = golden["path"].with_suffix(".json")
    if target == "safetensors":
        assert error == 0 and summary["ratio"] > 0.9
        return
    assert error > 0 and summary["ratio"] < 0.35  # packed: about a quarter of fp32 or less
    kind = target.removeprefix("gguf-").upper() if target.startswith("gguf-") else ALIASES.get(target, target)
    layers = {name: m for name, m in unet.named_modules() if isinstance(m, PackedLayer)}
    assert len(layers) == 521 and sum(m.kind == kind for m in layers.values()) > 200
    for name, layer in layers.items():  # finer at the two finest levels, Q8_0 where blocks do not fit
        assert layer.kind == stored_kind(math.prod(layer.shape), layer_kind(f"{name}.weight", kind)), name
    # quantizing at load gives the very same model as the file; the estimate counts its bytes exactly
    in_memory = load_unet(golden["path"], full, quantization=kind)
    assert relative_error(in_memory, golden) == pytest.approx(error, abs=1e-6)
    assert weight_bytes(unet) == weight_bytes(in_memory) == unet_weight_bytes(golden["config"], "fp32", kind)


def test_the_convert_command_prints_a_summary_and_refuses_to_write_over_its_input(golden, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "latentsync_unet-Q8_0.gguf"
    done = subprocess.run([sys.executable, "-m", "latentsync", "convert", str(golden["path"]), "--to", "gguf-q8_0",
                           "--out", str(out)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["tensors"]["Q8_0"] > 500 and summary["bytes"] == out.stat().st_size
    assert "\r" not in done.stderr and "convert: 100%" in done.stderr  # a pipe gets whole lines
    assert choose_config(out).source == "config from the file's metadata"
    for args, message in ((["--to", "fp8_e4m3fn", "--out", str(golden["path"])], "name the output"),
                          (["--to", "safetensors", "--out", str(golden["path"].with_suffix(".safetensors"))], None),
                          (["--to", "gguf-q3_k", "--out", str(out)], "must be one of")):
        done = subprocess.run([sys.executable, "-m", "latentsync", "convert", str(golden["path"]), *args],
                              capture_output=True, text=True, env=env, cwd=tmp_path)
        if message is None:
            assert done.returncode == 0, done.stderr
            continue
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    link = tmp_path / "same.safetensors"
    link.symlink_to(golden["path"].with_suffix(".safetensors"))
    with pytest.raises(ValueError, match="same file"):
        convert_unet(Conversion(link, "safetensors", golden["path"].with_suffix(".safetensors")))


@pytest.fixture(scope="module")
def q4(golden, tmp_path_factory):
    out = tmp_path_factory.mktemp("q4") / "latentsync_unet-Q4_K.gguf"
    convert_unet(Conversion(golden["path"], "gguf-q4_k", out))
    return out


def test_damaged_foreign_and_mismatched_gguf_files_are_one_line_errors(golden, q4, tmp_path):
    import gguf

    cut = tmp_path / "cut.gguf"
    cut.write_bytes(q4.read_bytes()[: q4.stat().st_size // 2])
    with pytest.raises(UNetCheckpointError, match="truncated or corrupt") as caught:
        load_unet(cut, golden["config"])
    assert "\n" not in str(caught.value)
    llama = tmp_path / "llama.gguf"
    writer = gguf.GGUFWriter(str(llama), "llama")
    writer.add_name("TinyLlama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    for write in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file):
        write()
    writer.close()
    with pytest.raises(UNetCheckpointError, match=r"GGUF file of a llama model \(TinyLlama\) with 1 tensors"):
        load_unet(llama, golden["config"])
    state = torch.load(golden["path"], weights_only=True)["state_dict"]
    for version, config, message in (("1.6", "1.5", "is the LatentSync 1.6 UNet"),
                                     ("custom", "1.5", "not a LatentSync UNet for LatentSync 1.5")):
        path = tmp_path / f"{version}.gguf"
        write_unet_gguf(state, path, "Q8_0", config=resolve_unet_config(golden["config"]), version=version,
                        resolution=512)
        with pytest.raises(UNetCheckpointError, match=message):
            load_unet(path, config)
    with pytest.raises(UNetCheckpointError, match="already holds packed weights"):
        load_unet(q4, golden["config"], quantization="int8")
    with pytest.raises(UNetCheckpointError, match="already holds packed weights"):
        convert_unet(Conversion(q4, "gguf-q8_0", tmp_path / "again.gguf"))


def test_a_gguf_never_runs_code(golden, q4, tmp_path, monkeypatch):
    """A GGUF file is read as data (header, numbers, bytes): no unpickler is ever asked, and a pickle named
    .gguf is refused by its bytes without being opened as one."""
    target = make_target(tmp_path / "precious")
    hostile = write_hostile(tmp_path / "model.pt", "pickle", target).rename(tmp_path / "hostile.gguf")
    with pytest.raises(UNetCheckpointError, match="is a Python pickle named .gguf"):
        load_unet(hostile, golden["config"])
    assert intact(target)

    def refuse(*_, **__):
        raise AssertionError("an unpickler was called while reading a GGUF file")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    unet = load_unet(q4, golden["config"])
    assert relative_error(unet, golden) < TOLERANCE["gguf-q4_k"]


def test_fp8_files_from_other_tools_load_and_stray_scales_are_refused(golden, tmp_path):
    """A checkpoint cast to fp8 without scales (as ComfyUI's weight_dtype does) loads with scale 1."""
    state = torch.load(golden["path"], weights_only=True)["state_dict"]
    cast = {name: (t.to(torch.float8_e4m3fn) if packs(name, t) else t) for name, t in state.items()}
    save_file(cast, tmp_path / "cast.safetensors")
    unet = load_unet(tmp_path / "cast.safetensors", golden["config"])
    assert sum(isinstance(m, PackedLayer) for m in unet.modules()) > 500
    assert relative_error(unet, golden) < 0.5  # plain casts lose small weights to fp8's subnormals
    save_file({**state, "conv_in.scale_weight": torch.ones(1)}, tmp_path / "stray.safetensors")
    with pytest.raises(UNetCheckpointError, match="belong to no fp8 weight"):
        load_unet(tmp_path / "stray.safetensors", golden["config"])


def test_the_low_vram_preset_prefers_a_q5_k_gguf_beside_the_checkpoint(tmp_path):
    checkpoint = tmp_path / "latentsync_unet.pt"
    checkpoint.write_bytes(b"")
    assert preset_unet_file(checkpoint, "low-vram", "int8") == (checkpoint, "int8")
    gguf = tmp_path / "latentsync_unet-Q5_K.gguf"
    gguf.write_bytes(b"")
    assert preset_unet_file(checkpoint, "low-vram", "int8") == (gguf, "none")
    assert preset_unet_file(checkpoint, None, "int8") == (checkpoint, "int8")  # the user's choice
    assert preset_unet_file(checkpoint, "fast", "none") == (checkpoint, "none")
