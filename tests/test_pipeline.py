"""latentsync/run/pipeline.py: the one path from files to a lip-synced clip that the lipsync and experiment
commands (and bench/sampler.py) take."""
import pytest
import torch

from conftest import shared_path
from latentsync.run.pipeline import ModelFiles, ModelSet, UNetSpec, lipsync_files, read_clip, resolve_device, resolve_dtype
from latentsync.sample.settings import SamplerSettings


def test_device_and_precision():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16  # a choice, not a CUDA call
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be one of auto, fp32, fp16, bf16"):
        resolve_dtype("fp8", torch.device("cpu"))


def test_a_model_set_loads_once_and_keeps_one_unet(tmp_path, tiny_unet_config):
    from scripts.model_files import write_tiny_unet, write_whisper_checkpoint

    models = ModelSet(torch.device("cpu"))
    first = write_tiny_unet(tmp_path / "a" / "latentsync_unet.pt", tiny_unet_config)
    second = write_tiny_unet(tmp_path / "b" / "latentsync_unet.pt", tiny_unet_config, seed=1, resolution=512)
    unet, resolution, source = models.unet(UNetSpec(first))
    assert models.unet(UNetSpec(first))[0] is unet and resolution == 256 and "latentsync_unet.json" in source
    other, resolution, _ = models.unet(UNetSpec(second))
    assert resolution == 512 and other is not unet
    assert sum(key[0] == "unet" for key in models._loaded) == 1  # the first one was let go
    whisper = write_whisper_checkpoint(tmp_path / "tiny.pt")
    assert models.whisper(whisper) is models.whisper(whisper)


def test_every_model_loads_before_the_faces_and_the_sampler(tmp_path, tiny_unet_config):
    """A missing VAE is reported before a face is looked for (the voice, cheaper, comes first)."""
    from media import cut_clip, cut_voice
    from scripts.model_files import write_tiny_unet, write_whisper_checkpoint

    clip = read_clip(cut_clip(shared_path("media/latentsync_demo1_video.mp4"), tmp_path / "v.mp4", 2, 128),
                     cut_voice(shared_path("media/latentsync_demo1_audio.wav"), tmp_path / "a.wav", 0.08))
    looked_for_faces = []
    with pytest.raises(FileNotFoundError, match="missing_vae.safetensors.*sd-vae-ft-mse-original"):
        files = ModelFiles(UNetSpec(write_tiny_unet(tmp_path / "unet.pt", tiny_unet_config)),
                           write_whisper_checkpoint(tmp_path / "tiny.pt"), tmp_path / "missing_vae.safetensors")
        lipsync_files(clip, ModelSet(torch.device("cpu")), files, SamplerSettings(steps=1),
                      track=looked_for_faces.append)
    assert not looked_for_faces and [k for k in clip.cache if k[0] == "features"]
