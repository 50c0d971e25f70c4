"""Which config a UNet checkpoint gets: a JSON beside it, the user's choice, or its path."""
import json

import pytest

from latentsync.unet_files import choose_config, download_official


def test_config_file_beside_the_checkpoint_wins(tmp_path):
    ckpt = tmp_path / "1.6" / "latentsync_unet.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"")
    ckpt.with_suffix(".json").write_text(json.dumps({"unet_config": {"sample_size": 64}}))
    choice = choose_config(ckpt, "1.5")
    assert choice.config == {"sample_size": 64} and choice.resolution == 512 and "latentsync_unet.json" in choice.source
    ckpt.with_suffix(".json").unlink()
    (ckpt.parent / "config.json").write_text(json.dumps({"sample_size": 32, "resolution": 320}))
    assert choose_config(ckpt).resolution == 320


@pytest.mark.parametrize("name, version, resolution", [
    ("latentsync_unet.pt", "1.5", 256), ("LatentSync-1.6/latentsync_unet.pt", "1.6", 512),
    ("unet_512.safetensors", "1.6", 512), ("1.5/latentsync_unet.pt", "1.5", 256),
])
def test_auto_version_from_the_path(tmp_path, name, version, resolution):
    choice = choose_config(tmp_path / name)
    assert (choice.config, choice.resolution) == (version, resolution) and "guessed" in choice.source


def test_explicit_version_overrides_the_path(tmp_path):
    assert choose_config(tmp_path / "unet_512.pt", "1.5").config == "1.5"
    with pytest.raises(ValueError, match="version must be one of"):
        choose_config(tmp_path / "x.pt", "2.0")


def test_download_offline_says_where_to_put_the_file(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once, at its import
    with pytest.raises(RuntimeError, match=r"huggingface.co/ByteDance/LatentSync-1.5 and put it in .*1.5"):
        download_official("1.5", tmp_path)
    assert not any(tmp_path.rglob("*.pt"))
