"""Specification of the LatentSync UNet (latentsync/unet*.py) and its strict loader.

Reference: bytedance/LatentSync @ a229c39, `UNet3DConditionModel`, through the data in
shared/reference/latentsync/ (see its README): a tiny UNet with the stage2 block layout whose outputs we
must reproduce within atol 1e-4, rtol 1e-4 in float32, and the key manifests of the full 1.5/1.6 models.
"""
from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
from conftest import shared_path

from latentsync.unet.model import LatentSyncUNet, build_unet
from latentsync.unet.blocks import sinusoidal_table
from latentsync.unet.config import UNetConfig, resolve_unet_config
from latentsync.unet.loading import UNetCheckpointError, load_unet

pytestmark = pytest.mark.usefixtures("one_thread")

REFERENCE = "reference/latentsync"
FULL_PARAMETERS = 1_267_099_844


def reference_dict(config: UNetConfig) -> dict:
    """A config as the reference's JSON holds it (lists, not tuples)."""
    return json.loads(json.dumps(asdict(config)))


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(shared_path(f"{REFERENCE}/unet_tiny_golden.safetensors"))


@pytest.fixture(scope="module")
def tiny_config_path():
    return shared_path(f"{REFERENCE}/unet_tiny_config.json")


@pytest.fixture(scope="module")
def golden_unet(golden, tiny_config_path) -> LatentSyncUNet:
    weights = {name[len("weights."):]: tensor.float() for name, tensor in golden.items() if name.startswith("weights.")}
    unet = build_unet(tiny_config_path)
    unet.load_state_dict(weights, strict=True, assign=True)
    return unet


@pytest.mark.parametrize("call", ["a", "b", "c"])
def test_reproduces_reference_outputs(golden, golden_unet, call):
    """a, b: the CFG-shaped batch (zero-audio half + audio half) at t=951 and t=451; c: batch 1 at t=1."""
    sample, audio = golden["inputs.sample"], golden["inputs.encoder_hidden_states"]
    if call == "c":
        sample, audio = sample[1:2], audio[16:32]
    with torch.no_grad():
        out = golden_unet(sample, golden[f"inputs.timestep_{call}"], audio)
    torch.testing.assert_close(out, golden[f"outputs.sample_{call}"], atol=1e-4, rtol=1e-4)


def test_position_tables_match_reference(golden):
    # Rebuilt when a checkpoint lacks them; the reference's torch build rounds exp() slightly differently.
    tables = {name: tensor for name, tensor in golden.items() if name.endswith(".pos_encoder.pe")}
    assert len(tables) == 40
    for name, table in tables.items():
        torch.testing.assert_close(sinusoidal_table(table.shape[1], table.shape[2])[None], table, atol=2e-6, rtol=0)


@pytest.mark.parametrize("version, manifest", [("1.5", "unet_keys_stage2.json"), ("1.6", "unet_keys_stage2_512.json")])
def test_full_architecture_has_reference_keys_and_shapes(version, manifest):
    reference = json.loads(shared_path(f"{REFERENCE}/{manifest}").read_text())
    unet = build_unet(version)  # meta device: no memory
    ours = {name: [list(tensor.shape), str(tensor.dtype).removeprefix("torch.")]
            for name, tensor in unet.state_dict().items()}
    assert ours == reference["state_dict"]
    assert list(ours) == list(reference["state_dict"])  # same order, so saved files list keys alike
    assert sum(p.numel() for p in unet.parameters()) == FULL_PARAMETERS == reference["total_parameters"]
    assert sum(b.numel() for b in unet.buffers()) == reference["total_buffer_elements"]
    assert reference_dict(resolve_unet_config(version)) == reference["model_config"]
    assert resolve_unet_config(reference["model_config"]) == UNetConfig()


# --- loading -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def random_tiny(tiny_config_path):
    """A tiny UNet with random weights, its state dict, and one forward pass to compare against."""
    torch.manual_seed(0)
    unet = build_unet(tiny_config_path, device="cpu")
    for module in unet.modules():  # move norms off 1/0 so that a swapped weight would show
        if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
            torch.nn.init.normal_(module.weight, 1.0, 0.1)
            torch.nn.init.normal_(module.bias, 0.0, 0.1)
    sample, audio = torch.randn(1, 13, 4, 16, 16), torch.randn(4, 50, 384)
    with torch.no_grad():
        out = unet(sample, 500, audio)
    return unet.state_dict(), (sample, audio), out


@pytest.fixture
def official_pt(random_tiny, tmp_path):
    path = tmp_path / "latentsync_unet.pt"
    torch.save({"state_dict": random_tiny[0], "global_step": 1234}, path)
    return path


def _output(unet, inputs):
    with torch.no_grad():
        return unet(inputs[0], 500, inputs[1])


@pytest.mark.parametrize("layout", ["official .pt", "bare .pt", "safetensors"])
def test_round_trip_gives_identical_outputs(random_tiny, tiny_config_path, tmp_path, layout):
    from safetensors.torch import save_file

    state_dict, inputs, expected = random_tiny
    path = tmp_path / ("unet.safetensors" if layout == "safetensors" else "unet.pt")
    if layout == "official .pt":
        torch.save({"state_dict": state_dict, "global_step": 1234}, path)
    elif layout == "bare .pt":
        torch.save(state_dict, path)
    else:
        save_file(state_dict, path)
    unet = load_unet(path, tiny_config_path)
    assert not any(p.requires_grad or p.is_meta for p in unet.parameters())
    assert torch.equal(_output(unet, inputs), expected)


def test_config_may_be_a_dict_and_dtype_is_applied(random_tiny, official_pt, tiny_config_path):
    config = json.loads(tiny_config_path.read_text())["unet_config"]
    unet = load_unet(official_pt, config, dtype=torch.bfloat16)
    assert {p.dtype for p in unet.state_dict().values()} == {torch.bfloat16}
    out, expected = _output(unet, random_tiny[1]).float(), random_tiny[2]
    assert out.dtype == torch.float32 and (out - expected).norm() / expected.norm() < 0.05


def test_missing_position_tables_are_missing_keys(random_tiny, tiny_config_path, tmp_path):
    state_dict, inputs, expected = random_tiny
    path = tmp_path / "no_pe.pt"
    torch.save({k: v for k, v in state_dict.items() if not k.endswith(".pos_encoder.pe")}, path)
    with pytest.raises(UNetCheckpointError, match=r"40 expected tensors are missing \(e.g. .*pos_encoder.pe"):
        load_unet(path, tiny_config_path)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "latentsync_unet.pt"
    with pytest.raises(FileNotFoundError) as error:
        load_unet(path, "1.5")
    assert str(path) in str(error.value)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_file_is_reported_as_such(random_tiny, tiny_config_path, tmp_path, suffix):
    from safetensors.torch import save_file

    path = tmp_path / f"unet{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": random_tiny[0], "global_step": 1}, path)
    else:
        save_file(random_tiny[0], path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UNetCheckpointError, match="truncated or corrupt"):
        load_unet(path, tiny_config_path)


def test_empty_file(tmp_path):
    path = tmp_path / "latentsync_unet.pt"
    path.write_bytes(b"")
    with pytest.raises(UNetCheckpointError, match="is empty"):
        load_unet(path, "1.5")


def test_stable_diffusion_unet_is_recognised(tmp_path):
    path = tmp_path / "sd15_unet.pt"
    torch.save({
        "conv_in.weight": torch.zeros(320, 4, 3, 3),
        "conv_in.bias": torch.zeros(320),
        "down_blocks.0.resnets.0.conv1.weight": torch.zeros(320, 320, 3, 3),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": torch.zeros(320, 768),
    }, path)
    with pytest.raises(UNetCheckpointError) as error:
        load_unet(path, "1.5")
    message = str(error.value)
    assert "looks like a Stable Diffusion 1.x UNet" in message
    assert "4 input channels, cross-attention width 768, no motion modules" in message
    assert "Expected a UNet with block widths (320, 640, 1280, 1280), 13 input channels" in message
    assert "conv_in.weight is [320, 4, 3, 3] in the file, [320, 13, 3, 3] expected" in message
    assert "Nothing was loaded" in message


def test_whisper_checkpoint_is_recognised(tmp_path):
    path = tmp_path / "tiny.pt"
    dims = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384}
    torch.save({"dims": dims, "model_state_dict": {"encoder.conv1.weight": torch.zeros(384, 80, 3)}}, path)
    with pytest.raises(UNetCheckpointError, match=r"is a whisper checkpoint .* expected the LatentSync UNet"):
        load_unet(path, "1.5")


def test_checkpoint_of_another_size_names_both_sizes(official_pt):
    with pytest.raises(UNetCheckpointError) as error:
        load_unet(official_pt, "1.5")
    message = str(error.value)
    assert "for LatentSync 1.5" in message
    assert "a LatentSync-style UNet of another size (block widths (32, 64, 64, 64)" in message
    assert "conv_in.weight is [32, 13, 3, 3] in the file, [320, 13, 3, 3] expected" in message
    assert "2 expected tensors are missing (e.g. down_blocks.2.resnets.0.conv_shortcut.weight" in message


def test_missing_and_extra_keys_are_listed(random_tiny, tiny_config_path, tmp_path):
    state_dict = dict(random_tiny[0])
    del state_dict["conv_out.bias"]
    state_dict["conv_out.extra"] = torch.zeros(1)
    path = tmp_path / "edited.safetensors"
    from safetensors.torch import save_file

    save_file(state_dict, path)
    with pytest.raises(UNetCheckpointError) as error:
        load_unet(path, tiny_config_path)
    assert "1 expected tensors are missing (e.g. conv_out.bias)" in str(error.value)
    assert "1 tensors are not part of this UNet (e.g. conv_out.extra)" in str(error.value)


class _NotATensor:
    pass


def test_pickled_objects_are_not_executed(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "extra": _NotATensor()}, path)
    with pytest.raises(UNetCheckpointError, match=r"names Python code \(test_unet\._NotATensor\).*not unpickled.*nothing was loaded"):
        load_unet(path, "1.5")


def test_unsupported_options_are_refused(official_pt, tiny_config_path):
    with pytest.raises(ValueError, match="unknown UNet quantization 'fp8'"):
        load_unet(official_pt, tiny_config_path, quantization="fp8")
    with pytest.raises(ValueError, match="'2.0'"):
        load_unet(official_pt, "2.0")
    with pytest.raises(ValueError, match="unknown UNet config options .'frobnicate'."):
        resolve_unet_config({**reference_dict(UNetConfig()), "frobnicate": 1})
    with pytest.raises(ValueError, match="use_linear_projection=True"):
        resolve_unet_config({**reference_dict(UNetConfig()), "use_linear_projection": True})


def test_call_shapes_are_checked(golden_unet):
    sample = torch.zeros(1, 13, 25, 8, 8)
    with pytest.raises(ValueError, match="at most 24 frames"), torch.no_grad():
        golden_unet(sample, 1, torch.zeros(25, 50, 384))
    with pytest.raises(ValueError, match=r"encoder_hidden_states must be \[4, tokens, 384\]"):
        golden_unet(torch.zeros(1, 13, 4, 8, 8), 1, torch.zeros(8, 50, 384))


@pytest.fixture(scope="module")
def golden_pt(golden, tmp_path_factory):
    """The golden tiny UNet written as an official checkpoint, for the public loader."""
    weights = {name[len("weights."):]: tensor.float() for name, tensor in golden.items() if name.startswith("weights.")}
    path = tmp_path_factory.mktemp("golden") / "latentsync_unet.pt"
    torch.save({"state_dict": weights, "global_step": 0}, path)
    return path


def test_int8_weight_only_stays_close_to_the_reference_and_shrinks_the_weights(golden, golden_pt, tiny_config_path):
    from latentsync.unet.quantize import Int8Conv2d, weight_bytes

    full = load_unet(golden_pt, tiny_config_path)
    unet = load_unet(golden_pt, tiny_config_path, quantization="int8")
    assert any(isinstance(m, Int8Conv2d) for m in unet.modules())
    assert not any(type(m) is torch.nn.Conv2d for m in unet.modules())
    assert weight_bytes(unet) < 0.35 * weight_bytes(full)
    with torch.inference_mode():  # as ComfyUI runs nodes
        out = unet(golden["inputs.sample"], golden["inputs.timestep_a"], golden["inputs.encoder_hidden_states"])
    expected = golden["outputs.sample_a"]
    assert ((out - expected).norm() / expected.norm()).item() < 0.02


def test_int4_needs_cuda_and_says_so(golden_pt, tiny_config_path):
    with pytest.raises(ValueError, match="int4 needs a CUDA GPU"):
        load_unet(golden_pt, tiny_config_path, quantization="int4")
