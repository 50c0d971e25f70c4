"""Specification of the standalone VAE (latentsync/vae.py) and the sampler end to end with the full-size SD VAE.

The file under test is written by scripts/vae_files.py in the original LDM layout of
`vae-ft-mse-840000-ema-pruned.safetensors` (random weights, keys and shapes described independently of the
product's converter). The end-to-end run uses that VAE with a random tiny UNet and real whisper features
(random-weight whisper tiny) on 8 frames of the shared clip at 360x640 with 64 px crops: the full VAE is about
1 s per frame on one CPU core even at that size.
"""
from __future__ import annotations

import json

import pytest
import torch
from conftest import shared_path
from sampler_fixtures import CLIP, RESOLUTION, VOICE, decode_clip, face_boxes, outside_boxes

from latentsync.sample.vae import VAECheckpointError, load_vae

pytestmark = pytest.mark.usefixtures("needs_diffusers", "one_thread")


@pytest.fixture(scope="module")
def vae_file(tmp_path_factory):
    from scripts.vae_files import session_sd_vae

    return session_sd_vae(tmp_path_factory)


@pytest.fixture(scope="module")
def vae(vae_file):
    return load_vae(vae_file)


def test_ldm_file_loads_into_the_right_modules(vae_file, vae):
    from safetensors.torch import load_file

    stored = load_file(str(vae_file))
    model = vae.model
    pairs = {
        "encoder.down.1.block.0.nin_shortcut.weight": model.encoder.down_blocks[1].resnets[0].conv_shortcut.weight,
        "encoder.down.2.downsample.conv.weight": model.encoder.down_blocks[2].downsamplers[0].conv.weight,
        "encoder.mid.block_2.conv1.weight": model.encoder.mid_block.resnets[1].conv1.weight,
        "decoder.up.3.block.0.conv1.weight": model.decoder.up_blocks[0].resnets[0].conv1.weight,
        "decoder.up.0.block.2.conv2.weight": model.decoder.up_blocks[3].resnets[2].conv2.weight,
        "decoder.up.1.upsample.conv.weight": model.decoder.up_blocks[2].upsamplers[0].conv.weight,
        "post_quant_conv.weight": model.post_quant_conv.weight,
    }
    for key, parameter in pairs.items():
        assert torch.equal(parameter, stored[key].float()), key
    attention = model.decoder.mid_block.attentions[0]
    assert torch.equal(attention.to_q.weight, stored["decoder.mid.attn_1.q.weight"].float()[:, :, 0, 0])
    assert torch.equal(attention.to_out[0].weight, stored["decoder.mid.attn_1.proj_out.weight"].float()[:, :, 0, 0])
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    latents = vae.encode(images)
    assert latents.shape == (2, 4, 4, 4) and vae.decode(latents).shape == (2, 3, 32, 32)
    vae.reseed(5)
    first = vae.encode(images)
    vae.reseed(5)
    assert torch.equal(first, vae.encode(images))  # posterior samples are reproducible per seed


def test_diffusers_layout_loads_too(vae, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({k: v.half() for k, v in vae.model.state_dict().items()}, str(path))
    assert torch.equal(load_vae(path).model.decoder.conv_out.weight, vae.model.decoder.conv_out.weight.half().float())


def test_a_narrower_sd_vae_loads_with_its_own_widths(tmp_path):
    """The tests' cheap stand-in for the library path: the same architecture, four narrower levels."""
    from scripts.vae_files import NARROW_WIDTHS, WIDTHS, write_sd_vae

    narrow = load_vae(write_sd_vae(tmp_path / "narrow.safetensors", widths=NARROW_WIDTHS))
    assert list(narrow.model.config.block_out_channels) == list(NARROW_WIDTHS) != list(WIDTHS)
    latents = narrow.encode(torch.rand(1, 3, 32, 32) * 2 - 1)
    assert latents.shape == (1, 4, 4, 4) and narrow.decode(latents).shape == (1, 3, 32, 32)
    for widths in ((48, 64, 64, 64), (32, 64, 64)):  # not a multiple of the 32 norm groups; three levels (4x down)
        with pytest.raises(VAECheckpointError, match="is not the SD VAE"):
            load_vae(write_sd_vae(tmp_path / f"odd{len(widths)}.safetensors", widths=widths))


def test_wrong_files_are_refused_with_a_clear_message(vae_file, tmp_path):
    from safetensors.torch import load_file, save_file

    with pytest.raises(FileNotFoundError, match="sd-vae-ft-mse-original"):
        load_vae(tmp_path / "missing.safetensors")
    tensors = load_file(str(vae_file))
    del tensors["decoder.mid.attn_1.k.weight"]
    tensors["extra.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken))
    with pytest.raises(VAECheckpointError, match=r"broken.safetensors is not the SD VAE.*missing.*unexpected"):
        load_vae(broken)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(vae_file.read_bytes()[:4096])
    with pytest.raises(VAECheckpointError, match="truncated.safetensors"):
        load_vae(truncated)


def test_lipsync_end_to_end_with_the_full_sd_vae(vae, tmp_path):
    from scripts.model_files import write_tiny_unet, write_whisper_checkpoint

    from latentsync.media.audio import load_audio
    from latentsync.audio.features import extract_features
    from latentsync.sample.sampler import SamplerSettings, lipsync
    from latentsync.unet.loading import load_unet
    from latentsync.audio.whisper import load_whisper_encoder

    frames = decode_clip(shared_path(CLIP), 8)
    waveform, rate = load_audio(shared_path(VOICE))
    waveform = waveform[:, : int(rate * 8 / 25)]  # the voice for these 8 frames
    encoder = load_whisper_encoder(write_whisper_checkpoint(tmp_path / "tiny.pt"))
    features = extract_features(waveform, rate, encoder, fps=25.0)
    config = json.loads(shared_path("reference/latentsync/unet_tiny_config.json").read_text())["unet_config"]
    unet = load_unet(write_tiny_unet(tmp_path / "unet.pt", config), config)
    result = lipsync(frames, features, unet, vae, SamplerSettings(steps=2), faces="dlib", resolution=RESOLUTION)
    assert result.frames.shape == frames.shape and result.generated.all()
    assert torch.isfinite(result.frames).all() and torch.isfinite(result.crops).all()
    for j, box in enumerate(face_boxes(result.faces)):
        keep = outside_boxes(tuple(frames.shape[1:3]), box)
        assert torch.equal(result.frames[j][keep], frames[j][keep])
    mouth = result.faces.mask < 0.5  # the regenerated part of the crop
    assert (result.crops[:, mouth] - result.faces.images()[:, mouth]).abs().mean() > 0.01
