"""One table of model files (latentsync/catalogue.py) behind every "where to get it" message, the demo's downloads,
the experiment's default paths and the ComfyUI model folders."""
import pytest

from latentsync.catalogue import CATALOGUE, MODEL_FOLDERS

COMFYUI_OWN_FOLDERS = {"vae", "upscale_models"}


def test_every_file_has_a_source_a_licence_and_a_registered_folder():
    for model in CATALOGUE.values():
        assert model.url.startswith("https://") and model.source_file and model.licence and model.what, model.key
        assert model.folder in MODEL_FOLDERS or model.folder in COMFYUI_OWN_FOLDERS, model.key
        assert model.path in model.where_to_get() and model.url in model.where_to_get()


@pytest.mark.parametrize("key, load", [
    ("vae", lambda path: __import__("latentsync.sample.vae", fromlist=["x"]).load_vae(path)),
    ("whisper", lambda path: __import__("latentsync.audio.whisper", fromlist=["x"]).load_whisper_encoder(path)),
    ("syncnet", lambda path: __import__("latentsync.score.syncnet", fromlist=["x"]).load_syncnet(path)),
    ("s3fd", lambda path: __import__("latentsync.score.s3fd", fromlist=["x"]).load_s3fd(path)),
])
def test_a_missing_file_is_explained_from_the_table(tmp_path, key, load):
    with pytest.raises(FileNotFoundError) as caught:
        load(tmp_path / "missing.bin")
    message = str(caught.value)
    assert "missing.bin" in message and CATALOGUE[key].where_to_get() in message


def test_the_experiment_and_the_demo_take_their_paths_from_the_table():
    from latentsync.run.experiment import MODEL_DEFAULTS
    from latentsync.unet.files import OFFICIAL

    for key in ("unet_1.5", "unet_1.6", "whisper", "vae", "syncnet"):
        assert MODEL_DEFAULTS[key] == CATALOGUE[key].path
    assert OFFICIAL["1.6"][:2] == (CATALOGUE["unet_1.6"].source, CATALOGUE["unet_1.6"].source_file)
    import demo  # scripts/, on the path from conftest

    assert demo.WEIGHTS == {CATALOGUE[k].path: (CATALOGUE[k].source, CATALOGUE[k].source_file)
                            for k in ("unet_1.5", "whisper", "vae")}
