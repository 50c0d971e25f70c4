"""`python -m latentsync vad`: the library path without ComfyUI, printing JSON."""
import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, shared_path
from latentsync.audio import load_audio
from latentsync.vad import detect_speech


def run_cli(*args, offline=False):
    cmd = [sys.executable, "-m", "latentsync", *map(str, args)]
    if offline:  # a fresh network namespace with no interfaces: any download attempt would fail
        cmd = [shutil.which("unshare"), "-rn", *cmd]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("backend", ["jit", "onnx"])
def test_vad_cli_prints_the_library_segments_offline(backend):
    wav = shared_path("media/latentsync_demo1_audio.wav")
    out = run_cli("vad", wav, "--backend", backend, "--threshold", "0.45", offline=bool(shutil.which("unshare")))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    expected = detect_speech(*load_audio(wav), threshold=0.45, backend=backend).to_json()
    assert result == expected
    assert set(result) == {"duration", "speech"} and result["duration"] == pytest.approx(9.6, abs=0.01)


def test_vad_cli_reads_the_audio_of_a_video():
    out = run_cli("vad", shared_path("media/latentsync_demo1_video.mp4"), "--min-silence-ms", "300")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["duration"] == pytest.approx(10.0, abs=0.1) and result["speech"]


def test_vad_cli_errors_are_one_clear_line(tmp_path):
    out = run_cli("vad", tmp_path / "missing.wav")
    assert out.returncode == 2 and "missing.wav" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("vad", shared_path("media/latentsync_demo1_audio.wav"), "--threshold", "2")
    assert out.returncode == 2 and "threshold" in out.stderr
