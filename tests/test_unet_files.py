"""Which config a UNet checkpoint gets (a JSON beside it, the user's choice, or its path), and what "download"
does with a file already at the official file's place."""
import json
from pathlib import Path

import pytest

from conftest import shared_path
from latentsync.unet.files import choose_config, download_official


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
    ("1.6/latentsync_unet.pt", "1.6", 512), ("latentsync_1_6.pt", "1.6", 512),
    ("models--ByteDance--LatentSync-1.6/snapshots/0a1b/latentsync_unet.pt", "1.6", 512),
    # a number inside a longer one is not the model's
    ("run-160/models/latentsync_unet.pt", "1.5", 256), ("v2160/latentsync_unet.pt", "1.5", 256),
    ("unet_5120.pt", "1.5", 256), ("v1.16/latentsync_unet.pt", "1.5", 256),
])
def test_auto_version_from_the_path(name, version, resolution):
    # A fixed folder: a temporary one's name holds a counter ("pytest-160") that must not decide the case.
    choice = choose_config(Path("/models-here") / name)
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


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once, at its import


def test_official_size_range_matches_the_reference_key_list():
    import math

    from latentsync.unet.files import OFFICIAL_SIZE_RANGE

    for name in ("unet_keys_stage2.json", "unet_keys_stage2_512.json"):  # 1.5 and 1.6
        keys = json.loads(shared_path(f"reference/latentsync/{name}").read_text())
        tensor_bytes = sum(4 * math.prod(shape) for shape, dtype in keys["state_dict"].values())
        assert {dtype for _, dtype in keys["state_dict"].values()} == {"float32"}
        assert OFFICIAL_SIZE_RANGE[0] <= tensor_bytes <= OFFICIAL_SIZE_RANGE[1] - 2**20


def test_download_refuses_a_wrong_size_file_already_at_the_target(tmp_path, offline):
    stale = tmp_path / "1.5" / "latentsync_unet.pt"
    stale.parent.mkdir()
    stale.write_bytes(b"PK\x03\x04" + bytes(4096))  # an interrupted copy
    with pytest.raises(ValueError, match=r"latentsync_unet.pt is 4,100 bytes.*5.07 GB.*delete it and pick "
                                         r"'download 1.5' again"):
        download_official("1.5", tmp_path)
    assert stale.stat().st_size == 4100  # refused, not deleted or replaced behind the user's back


def test_download_says_it_used_the_file_already_there(tmp_path, offline, caplog):
    from latentsync.unet.files import OFFICIAL_SIZE_RANGE

    present = tmp_path / "1.6" / "latentsync_unet.pt"
    present.parent.mkdir()
    with present.open("wb") as out:  # sparse: the official size without writing 5 GB
        out.truncate(OFFICIAL_SIZE_RANGE[0] + 12345)
    with caplog.at_level("INFO", logger="latentsync.unet.files"):
        found = download_official("1.6", tmp_path)
    assert found.path == present and "used the file already at" in found.note and "5.07 GB" in found.note
    assert found.note in caplog.text
