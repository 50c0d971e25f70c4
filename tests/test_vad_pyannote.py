"""The pyannote.audio VAD backend (optional extra): a local segmentation checkpoint, offline, safely loaded."""
import collections
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import REPO, VOICES, shared_path
from latentsync.media.audio import load_audio
from latentsync.audio.vad import detect_speech

pytest.importorskip("pyannote.audio", reason="the pyannote extra is not installed") if os.environ.get("CI") != "true" else None


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory):
    from scripts.model_files import write_pyannote_segmentation

    return write_pyannote_segmentation(tmp_path_factory.mktemp("pyannote") / "segmentation-3.0" / "pytorch_model.bin")


@pytest.mark.parametrize("voice", VOICES)
def test_segments_are_valid_on_the_shared_voices(segmentation, voice):
    waveform, rate = load_audio(shared_path(f"media/{voice}"))
    segments = detect_speech(waveform, rate, backend="pyannote", model_path=segmentation, min_speech_ms=100)
    times = [t for span in segments.speech for t in span]
    assert times == sorted(times) and all(s < e for s, e in segments.speech)  # sorted, non-overlapping
    assert times[0] >= 0 and times[-1] <= segments.duration == pytest.approx(waveform.shape[1] / rate)


def test_folder_or_file_and_padding(segmentation):
    waveform, rate = load_audio(shared_path("media/latentsync_demo1_audio.wav"))
    by_file = detect_speech(waveform, rate, backend="pyannote", model_path=segmentation, padding_ms=0)
    by_folder = detect_speech(waveform, rate, backend="pyannote", model_path=segmentation.parent, padding_ms=0)
    assert by_file.speech == by_folder.speech
    assert by_file.speech, "the random model found no speech at all; the test would prove nothing"
    padded = detect_speech(waveform, rate, backend="pyannote", model_path=segmentation, padding_ms=200)
    assert padded.speech_seconds >= by_file.speech_seconds


def test_telemetry_is_off_during_calls_and_the_environment_is_restored(segmentation, monkeypatch):
    monkeypatch.setenv("PYANNOTE_METRICS_ENABLED", "true")  # a user who opted in elsewhere keeps that
    seen = []
    detect_speech(torch.zeros(16000 * 3), 16000, backend="pyannote", model_path=segmentation,
                  progress=lambda done, total: seen.append(os.environ.get("PYANNOTE_METRICS_ENABLED")))
    assert seen and set(seen) == {"false"}
    assert os.environ["PYANNOTE_METRICS_ENABLED"] == "true"
    monkeypatch.delenv("PYANNOTE_METRICS_ENABLED")
    detect_speech(torch.zeros(16000 * 3), 16000, backend="pyannote", model_path=segmentation)
    assert "PYANNOTE_METRICS_ENABLED" not in os.environ


class NotAModel:  # a pickled class that weights_only loading must refuse to construct
    pass


def test_bad_checkpoints_get_clear_errors(tmp_path, segmentation):
    from scripts.model_files import write_whisper_checkpoint

    audio = torch.zeros(16000)
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin"):
        detect_speech(audio, 16000, backend="pyannote", model_path=tmp_path / "nothing_here")
    with pytest.raises(ValueError, match="needs model_path"):
        detect_speech(audio, 16000, backend="pyannote")
    whisper = write_whisper_checkpoint(tmp_path / "tiny.pt")
    with pytest.raises(ValueError, match="not a pyannote.audio checkpoint"):
        detect_speech(audio, 16000, backend="pyannote", model_path=whisper)
    evil = tmp_path / "evil.bin"
    torch.save({"state_dict": {}, "payload": NotAModel(), "counts": collections.Counter("ab")}, evil)
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        detect_speech(audio, 16000, backend="pyannote", model_path=evil)
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(segmentation.read_bytes()[:5000])
    with pytest.raises(ValueError, match="truncated.bin cannot be read: it looks truncated or corrupt.*nothing was loaded"):
        detect_speech(audio, 16000, backend="pyannote", model_path=truncated)


def test_cli_runs_offline(segmentation):
    cmd = [sys.executable, "-m", "latentsync", "vad", str(shared_path("media/latentsync_demo1_audio.wav")),
           "--backend", "pyannote", "--model", str(segmentation)]
    if shutil.which("unshare"):
        cmd = ["unshare", "-rn", *cmd]  # no network at all: nothing may reach a hub
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert set(json.loads(out.stdout)) == {"duration", "speech"}


def test_without_the_extra_the_backend_says_what_to_install():
    code = ("import sys; sys.modules['pyannote'] = None\n"  # as if the extra were not installed
            "import torch\n"
            "from latentsync.audio.vad import detect_speech\n"
            "try:\n"
            "    detect_speech(torch.zeros(16000), 16000, backend='pyannote', model_path='segmentation.bin')\n"
            "except ImportError as exc:\n"
            "    print(exc)\n"
            "print(detect_speech(torch.zeros(16000), 16000).speech)\n")  # silero still works
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert "pyannote.audio is not installed" in out.stdout and "pip install" in out.stdout
    assert out.stdout.strip().endswith("()")
