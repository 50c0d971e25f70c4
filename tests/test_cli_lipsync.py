"""Specification of `python -m latentsync lipsync` (latentsync/cli_lipsync.py, video_io.py).

Runs the whole command on a 0.32 s, 360x640 cut of the shared clip with its own 44.1 kHz stereo soundtrack,
with random-weight models in the official file formats (tiny UNet with a config asking for 64 px crops,
whisper tiny, the full-size SD VAE). Checks what a user sees: frame count and rate as the input, the
original audio's rate and channels (not LatentSync's 16 kHz mono), and a still image turned into a clip as
long as the audio.
"""
from __future__ import annotations

import argparse
import json

import av
import pytest
from conftest import shared_path
from sampler_fixtures import CLIP, RESOLUTION, decode_clip

from latentsync.cli.lipsync import add_lipsync_parser
from latentsync.media.video import read_frames, write_video

pytestmark = pytest.mark.usefixtures("needs_diffusers", "one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from scripts.model_files import write_tiny_unet, write_whisper_checkpoint
    from scripts.vae_files import session_sd_vae

    folder = tmp_path_factory.mktemp("models")
    config = json.loads(shared_path("reference/latentsync/unet_tiny_config.json").read_text())["unet_config"]
    unet = write_tiny_unet(folder / "latentsync_unet.pt", config, resolution=RESOLUTION)
    return {"unet": unet, "whisper": write_whisper_checkpoint(folder / "tiny.pt"),
            "vae": session_sd_vae(tmp_path_factory)}


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    """8 frames at 25 fps with the clip's own AAC soundtrack cut to the same 0.32 s."""
    frames = decode_clip(shared_path(CLIP), 8)
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, 25.0, audio=shared_path(CLIP))


def run_cli(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    add_lipsync_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["lipsync", *argv])
    return args.run(args)


def probe(path) -> dict:
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        frames = sum(1 for _ in container.decode(video))
        return {"frames": frames, "fps": float(video.average_rate), "audio_rate": audio.rate,
                "audio_channels": audio.layout.nb_channels, "codec": video.codec_context.name}


def test_video_in_mp4_out_with_the_original_audio(models, short_clip, tmp_path):
    out = tmp_path / "out.mp4"
    summary = run_cli("--video", str(short_clip), "--audio", str(short_clip), "--out", str(out),
                      "--unet", str(models["unet"]), "--whisper", str(models["whisper"]), "--vae", str(models["vae"]),
                      "--steps", "2", "--quiet")
    assert summary["frames"] == 8 and summary["generated_frames"] == 8 and summary["resolution"] == RESOLUTION
    info = probe(out)
    assert info["frames"] == 8 and info["fps"] == 25.0 and info["codec"] == "h264"
    assert (info["audio_rate"], info["audio_channels"]) == (44100, 2)
    frames, _ = read_frames(out)
    assert frames.shape == (8, 640, 360, 3)


def test_still_image_becomes_a_clip_as_long_as_the_audio(models, short_clip, tmp_path):
    from PIL import Image

    image = tmp_path / "face.png"
    first, _ = read_frames(short_clip, max_frames=1)
    Image.fromarray(first[0].numpy()).save(image)
    out = tmp_path / "still.mp4"
    summary = run_cli("--video", str(image), "--audio", str(short_clip), "--out", str(out),
                      "--unet", str(models["unet"]), "--whisper", str(models["whisper"]), "--vae", str(models["vae"]),
                      "--steps", "1", "--fps", "25", "--quiet")
    assert summary["still_image"] and summary["input_frames"] == 1 and summary["frames"] == 8
    assert probe(out)["frames"] == 8


def test_missing_model_files_are_named(models, short_clip, tmp_path):
    with pytest.raises(FileNotFoundError, match="sd-vae-ft-mse-original"):
        run_cli("--video", str(short_clip), "--audio", str(short_clip), "--out", str(tmp_path / "x.mp4"),
                "--unet", str(models["unet"]), "--whisper", str(models["whisper"]),
                "--vae", str(tmp_path / "nothing.safetensors"), "--quiet")


def test_a_log_file_gets_one_line_per_window_with_the_time_left_and_no_third_party_warnings(models, short_clip,
                                                                                             tmp_path):
    """stderr to a file (no terminal): whole lines only, no carriage-return runs; one progress line per window."""
    import re
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "out.mp4"
    run = subprocess.run([sys.executable, "-m", "latentsync", "lipsync", "--video", str(short_clip), "--audio",
                          str(short_clip), "--out", str(out), "--unet", str(models["unet"]), "--whisper",
                          str(models["whisper"]), "--vae", str(models["vae"]), "--steps", "2", "--window", "4"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "\r" not in run.stderr
    lines = run.stderr.splitlines()
    assert all(line.startswith("lipsync: ") for line in lines), lines  # nothing from a dependency
    windows = [line for line in lines if " done, " in line]
    assert [re.sub(r"\d+:\d\d left", "T left", line) for line in windows] == \
        ["lipsync: window 1/2 done, T left", "lipsync: window 2/2 done, T left"], lines
    assert windows[1] == "lipsync: window 2/2 done, 0:00 left", lines
    assert not any("step " in line for line in lines), lines
