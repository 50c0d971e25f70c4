"""Model files from strangers never run code: every loader of the pack, through the library, the CLI and ComfyUI.

Each loader gets a TorchScript archive whose `__setstate__` overwrites a file and pickles whose `__reduce__`
truncates it, under every extension model files come with; the file must keep its bytes and the answer must be
one line that says what the file is and that nothing was loaded.
"""
from __future__ import annotations

import importlib.util
import os
import pickle
import re
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

from conftest import REPO, missing, shared_path
from hostile_files import EXTENSIONS, KINDS, intact, make_target, write_hostile
from latentsync.checkpoint import CheckpointError, describe, file_format, read_checkpoint


def _pyannote_loader(path):
    # find_spec, not an import: importing pyannote here would change this process's environment (Lightning sets
    # variables) for every later test; the loader imports it inside its own containment.
    if importlib.util.find_spec("pyannote") is None:
        missing("pyannote.audio (the optional pyannote extra)")
    from latentsync.audio.vad_pyannote import load_segmentation

    return load_segmentation(path)


def _loaders() -> dict:
    from latentsync.score.s3fd import load_s3fd
    from latentsync.score.syncnet import load_syncnet
    from latentsync.unet.loading import load_unet
    from latentsync.upscale.models import load_upscale_model
    from latentsync.sample.vae import read_vae_file
    from latentsync.audio.whisper import load_whisper_encoder

    return {"unet": lambda p: load_unet(p, "1.5"), "whisper": load_whisper_encoder, "vae": read_vae_file,
            "syncnet": load_syncnet, "s3fd": load_s3fd, "upscaler": load_upscale_model,
            "pyannote": _pyannote_loader}


def test_the_hostile_files_do_harm_when_opened_unsafely(tmp_path):
    """The fixtures are real: opened the way the pack must never open them, each changes its target."""
    for kind in KINDS:
        target = make_target(tmp_path / f"{kind}.target")
        path = write_hostile(tmp_path / f"{kind}.pt", kind, target)
        assert intact(target)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "torchscript":
                torch.jit.load(str(path))
            elif kind == "pickle":
                with open(path, "rb") as file:
                    pickle.load(file)
            else:
                torch.load(path, weights_only=False)
        assert not intact(target), kind


@pytest.mark.parametrize("loader", ["unet", "whisper", "vae", "syncnet", "s3fd", "upscaler", "pyannote"])
def test_every_loader_refuses_hostile_files_in_one_line(tmp_path, loader):
    load = _loaders()[loader]
    target = make_target(tmp_path / "target.bin")
    for kind in KINDS:
        for extension in EXTENSIONS:
            path = write_hostile(tmp_path / f"{kind}{extension}", kind, target)
            with pytest.raises(CheckpointError) as caught:
                load(path)
            message = str(caught.value)
            assert intact(target), (loader, kind, extension)
            assert "\n" not in message and str(path) in message and "nothing was loaded" in message, message
            what = "TorchScript archive" if kind == "torchscript" else "pickle"
            assert what in message, message


def test_insightface_models_are_never_handed_to_onnxruntime_unless_they_are_onnx(tmp_path):
    from latentsync.face.detect import FaceModelMissing
    from latentsync.face.insightface import FILES, InsightFaceDetector

    target = make_target(tmp_path / "target.bin")
    for kind in KINDS:
        folder = tmp_path / kind
        folder.mkdir()
        for name in FILES:
            write_hostile(folder / name, kind, target)
        with pytest.raises(FaceModelMissing) as caught:
            InsightFaceDetector(folder)
        message = str(caught.value)
        assert intact(target) and "\n" not in message and "not an ONNX model" in message, message


def test_file_format_and_plain_checkpoints(tmp_path):
    target = make_target(tmp_path / "target.bin")
    assert file_format(write_hostile(tmp_path / "a.pt", "torchscript", target)) == "torchscript"
    assert file_format(write_hostile(tmp_path / "b.pt", "pickle-in-zip", target)) == "torch-zip"
    assert file_format(write_hostile(tmp_path / "c.pt", "pickle", target)) == "pickle"
    (tmp_path / "empty.pt").write_bytes(b"")
    assert file_format(tmp_path / "empty.pt") == "empty"
    state = {"encoder.conv1.weight": torch.ones(2), "quant_conv.weight": torch.ones(1)}
    torch.save(state, tmp_path / "plain.pt")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "plain.safetensors"))
    for name in ("plain.pt", "legacy.pt", "plain.safetensors"):
        loaded = read_checkpoint(tmp_path / name, "a test file")
        assert torch.equal(loaded["encoder.conv1.weight"], torch.ones(2)), name
        assert describe(loaded).startswith("a VAE (autoencoder)"), describe(loaded)
    with pytest.raises(CheckpointError, match=r"empty\.pt is empty .*nothing was loaded; expected a test file"):
        read_checkpoint(tmp_path / "empty.pt", "a test file")
    with pytest.raises(FileNotFoundError, match="nowhere.pt not found; expected a test file. get it there"):
        read_checkpoint(tmp_path / "nowhere.pt", "a test file", "get it there")


# --- through the CLI ----------------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "latentsync", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600, cwd=REPO)


@pytest.fixture(scope="module")
def cli_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile_cli")
    clip = folder / "clip.mp4"
    from media import cut_clip

    cut_clip(shared_path("media/latentsync_demo1_video.mp4"), clip, 4, 256)
    return folder, clip, shared_path("media/latentsync_demo1_audio.wav")


@pytest.mark.parametrize("kind, extension, command", [
    ("torchscript", ".pt", "upscale"),
    ("pickle-in-zip", ".pth", "upscale"),
    ("torchscript", ".model", "score"),
    ("pickle", ".pt", "features"),
    ("torchscript", ".bin", "vad"),
    ("pickle-in-zip", ".ckpt", "lipsync"),
])
def test_the_cli_refuses_hostile_files_in_one_line(cli_inputs, kind, extension, command):
    folder, clip, voice = cli_inputs
    target = make_target(folder / f"{command}{kind}.target")
    bad = write_hostile(folder / f"{command}-{kind}{extension}", kind, target)
    args = {
        "upscale": ["upscale", clip, "--out", folder / "up.mp4", "--model", bad],
        "score": ["score", clip, "--audio", voice, "--syncnet", bad],
        "features": ["features", voice, "--whisper", bad, "--out", folder / "f.safetensors"],
        "vad": ["vad", voice, "--backend", "pyannote", "--model", bad],
        "lipsync": ["lipsync", "--video", clip, "--audio", voice, "--out", folder / "out.mp4", "--unet", bad,
                    "--whisper", bad, "--vae", bad],
    }[command]
    result = _cli(*args)
    assert intact(target)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert bad.name in lines[0] and "nothing was loaded" in lines[0] and "Traceback" not in result.stderr


# --- through ComfyUI's POST /prompt -------------------------------------------------------------------------------

@pytest.mark.comfyui
def test_comfyui_refuses_hostile_files_and_keeps_serving(comfy_server):
    models = comfy_server.dir("models")
    target = make_target(comfy_server.base / "hostile.target")
    shutil.copy(shared_path("media/latentsync_demo1_audio.wav"), comfy_server.dir("input") / "hostile_voice.wav")
    audio = {"1": {"class_type": "LoadAudio", "inputs": {"audio": "hostile_voice.wav"}}}
    cases = {  # model folder: (file name, kind, the node that loads it)
        "latentsync": ("hostile_unet.pt", "torchscript", {"2": {"class_type": "LatentSyncUNetLoader", "inputs": {
            "unet_name": "hostile_unet.pt", "version": "1.5", "dtype": "auto", "quantization": "none"}}}),
        "whisper": ("hostile_whisper.pt", "pickle-in-zip", {**audio, "2": {
            "class_type": "LatentSyncWhisperEncode", "inputs": {
                "audio": ["1", 0], "whisper_model": "hostile_whisper.pt", "fps": 25.0, "frames": 0,
                "seamless": False, "precision": "auto"}}}),
        "upscale_models": ("hostile_up.pth", "torchscript", {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 0}},
            "2": {"class_type": "LatentSyncUpscale", "inputs": {
                "images": ["1", 0], "method": "model", "model_name": "hostile_up.pth", "scale": 2.0, "width": 0,
                "height": 0, "tile": 512, "overlap": 32, "chunk": 8, "precision": "auto"}},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}),
        "pyannote": ("hostile_segmentation.bin", "pickle", {**audio, "2": {"class_type": "LatentSyncVAD", "inputs": {
            "audio": ["1", 0], "threshold": 0.5, "min_speech_ms": 250, "min_silence_ms": 100, "padding_ms": 30,
            "backend": "pyannote", "pyannote_model": "hostile_segmentation.bin"}}}),
    }
    frames = {"3": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 8, "color": 0}}}
    for name, kind, crops in (("hostile_syncnet.model", "pickle", "pack"), ("hostile_sfd.pth", "torchscript", "s3fd")):
        syncnet = "hostile_syncnet.model" if crops == "pack" else "syncnet_ok.model"
        cases[f"syncnet/{crops}"] = (name, kind, {**audio, **frames, "2": {"class_type": "LatentSyncSyncNetScore", "inputs": {
            "images": ["3", 0], "audio": ["1", 0], "fps": 25.0, "syncnet_model": syncnet, "crops": crops,
            "s3fd_model": name if crops == "s3fd" else "none", "min_track": 5}}})
    from syncnet_model_files import write_syncnet_file

    (models / "syncnet").mkdir(parents=True, exist_ok=True)
    write_syncnet_file(models / "syncnet" / "syncnet_ok.model")
    for folder, (name, kind, prompt) in cases.items():
        folder = folder.split("/")[0]
        (models / folder).mkdir(parents=True, exist_ok=True)
        write_hostile(models / folder / name, kind, target)
        history = comfy_server.run(prompt)
        errors = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
        assert errors, (folder, history["status"])
        message = errors[0]["exception_message"].strip()
        assert intact(target), folder
        assert "\n" not in message and name in message and "nothing was loaded" in message, message
    assert comfy_server.get("/system_stats")["system"]  # still serving


def test_model_files_are_opened_in_one_module_only():
    """latentsync/checkpoint.py is the only reader of model files; nothing else may unpickle or run one."""
    readers = re.compile(r"torch\.load\(|torch\.jit\.load\(|safe_open\(|load_file\(|load_state_dict_from_file\(|"
                         r"pickle\.loads?\(|ModelLoader\([^)]*\)\.load\(")
    sources = [*(REPO / "latentsync").rglob("*.py"), *(REPO / "nodes").rglob("*.py"), REPO / "__init__.py"]
    offenders = []
    for path in sources:
        if path.name == "checkpoint.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = re.sub(r"`[^`]*`", "", line.split("#")[0])  # docs quote calls in backticks
            if readers.search(code):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == [], offenders
