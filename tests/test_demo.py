"""The README's main command without weights (a fresh machine offline): it builds its own demo input, says
which weight files to put where, and still runs the VAD preview through ComfyUI."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.comfyui


def test_demo_offline_runs_the_vad_preview_and_names_the_missing_weights(comfyui_dir, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")  # as on a machine that cannot reach the hub
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--comfyui", str(comfyui_dir),
                          "--home", str(tmp_path), "--port", "0"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    segments = json.loads(next(line for line in lines if line.startswith("{")))
    assert segments["speech"] and 5 < segments["duration"] < 30  # espeak's two sentences, with pauses
    assert "[demo] offline: skipping downloads" in lines and "Retry" not in out.stdout + out.stderr
    for name in ("latentsync/1.5/latentsync_unet.pt", "whisper/tiny.pt", "vae/vae-ft-mse-840000-ema-pruned.safetensors"):
        assert str(tmp_path / "demo" / "models" / name) in out.stdout
    assert (tmp_path / "demo" / "input" / "latentsync_demo.mp4").stat().st_size > 10_000  # the astronaut, still
