"""latentsync.audio.vad on signals whose truth is known by construction, and on the shared voice tracks."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.signal import resample_poly

from conftest import REPO, VOICES, espeak, shared_path
from latentsync.media.audio import AudioError, load_audio
from latentsync.audio import vad
from latentsync.audio.vad import SpeechSegments, detect_speech

GAP_BEFORE, GAP_BETWEEN, GAP_AFTER = 0.8, 1.5, 0.7


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    """Two espeak-ng utterances separated by silence; returns (waveform, rate, true speech spans)."""
    tmp = tmp_path_factory.mktemp("voice")
    first, rate = load_audio(espeak("the quick brown fox jumps over the lazy dog", tmp / "a.wav"))
    second, _ = load_audio(espeak("lip sync needs to know when someone is talking", tmp / "b.wav"))

    def voiced(x):  # first and last sample above the noise floor, in seconds
        idx = np.nonzero(np.abs(x[0].numpy()) > 0.01)[0]
        return idx[0] / rate, idx[-1] / rate

    silence = lambda seconds: torch.zeros(1, int(seconds * rate))  # noqa: E731
    waveform = torch.cat([silence(GAP_BEFORE), first, silence(GAP_BETWEEN), second, silence(GAP_AFTER)], dim=1)
    offset_second = GAP_BEFORE + first.shape[1] / rate + GAP_BETWEEN
    truth = [tuple(GAP_BEFORE + t for t in voiced(first)), tuple(offset_second + t for t in voiced(second))]
    return waveform, rate, truth


def assert_matches(segments: SpeechSegments, truth, tolerance=0.25):
    assert len(segments.speech) == len(truth), segments.speech
    for (start, end), (true_start, true_end) in zip(segments.speech, truth):
        assert abs(start - true_start) < tolerance and abs(end - true_end) < tolerance, (segments.speech, truth)


def test_speech_with_gaps_is_found_where_it_was_put(spoken):
    waveform, rate, truth = spoken
    segments = detect_speech(waveform, rate)
    assert_matches(segments, truth)
    assert segments.duration == pytest.approx(waveform.shape[1] / rate, abs=1e-3)


def test_jit_and_onnx_backends_agree(spoken):
    waveform, rate, _ = spoken
    jit, onnx = detect_speech(waveform, rate, backend="jit"), detect_speech(waveform, rate, backend="onnx")
    assert jit.speech == onnx.speech
    np.testing.assert_allclose(jit.frame_probs, onnx.frame_probs, atol=1e-4)


@pytest.mark.parametrize("rate, channels", [(44100, 2), (48000, 2), (8000, 1), (22050, 1)])
def test_any_rate_and_channel_count(spoken, rate, channels):
    waveform, source_rate, truth = spoken
    resampled = torch.from_numpy(resample_poly(waveform[0].numpy(), rate, source_rate)).float()
    stereo = resampled.expand(channels, -1)[None]
    assert_matches(detect_speech(stereo, rate), truth)


@pytest.mark.parametrize("make", [
    lambda t: torch.zeros_like(t),
    lambda t: 0.5 * torch.sin(2 * torch.pi * 440 * t),
    lambda t: 0.5 * torch.sin(2 * torch.pi * 3000 * t),
    lambda t: 0.3 * torch.randn(t.shape, generator=torch.Generator().manual_seed(0)),
], ids=["silence", "tone-440", "tone-3k", "white-noise"])
def test_no_speech_gives_zero_segments(make):
    t = torch.arange(5 * 16000) / 16000
    segments = detect_speech(make(t), 16000)
    assert segments.speech == () and segments.speech_seconds == 0
    assert segments.duration == pytest.approx(5.0)


def test_settings_change_the_segments(spoken):
    waveform, rate, _ = spoken
    base = detect_speech(waveform, rate)
    padded = detect_speech(waveform, rate, padding_ms=200)
    assert padded.speech[0][0] == pytest.approx(base.speech[0][0] - 0.17, abs=0.01)
    merged = detect_speech(waveform, rate, min_silence_ms=2500)
    assert len(merged.speech) == 1
    assert detect_speech(waveform, rate, min_speech_ms=5000).speech == ()


@pytest.mark.parametrize("name", VOICES)
def test_shared_voice_tracks_are_mostly_speech(name):
    waveform, rate = load_audio(shared_path(f"media/{name}"))
    segments = detect_speech(waveform, rate)
    assert 2 <= len(segments.speech) <= 12
    assert 0.6 < segments.speech_seconds / segments.duration < 1.0
    ends = [t for span in segments.speech for t in span]
    assert ends == sorted(ends) and ends[0] >= 0 and ends[-1] <= segments.duration


def test_progress_is_reported_and_can_cancel(spoken):
    waveform, rate, _ = spoken
    calls = []
    detect_speech(waveform, rate, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1] and [c[0] for c in calls] == sorted(c[0] for c in calls)

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        raise Cancelled

    with pytest.raises(Cancelled):
        detect_speech(waveform, rate, progress=cancel)


@pytest.mark.parametrize("kwargs, message", [
    ({"threshold": 1.5}, "threshold"), ({"threshold": 0.0}, "threshold"),
    ({"min_speech_ms": -1}, "min_speech_ms"), ({"padding_ms": -5}, "padding_ms"),
    ({"backend": "pyannote-typo"}, "backend must be one of jit, onnx, pyannote"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        detect_speech(torch.zeros(16000), 16000, **kwargs)


def test_too_short_or_broken_audio():
    with pytest.raises(AudioError, match="32 ms"):
        detect_speech(torch.zeros(100), 16000)
    with pytest.raises(AudioError, match="NaN"):
        detect_speech(torch.full((16000,), float("nan")), 16000)


def test_speech_segments_value():
    segments = SpeechSegments(duration=2.0, speech=((0.1, 0.5), (1.0, 1.96)))
    assert segments.to_json() == {"duration": 2.0, "speech": [[0.1, 0.5], [1.0, 1.96]]}
    assert segments.speech_seconds == pytest.approx(1.36)
    # frame centres at 10 fps: 0.05, 0.15, ..., 1.95
    assert segments.speech_mask(10, 20).nonzero()[0].tolist() == [1, 2, 3, 4, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    for bad in [((0.5, 0.4),), ((0.1, 0.5), (0.4, 0.8)), ((1.0, 2.5),)]:
        with pytest.raises(ValueError, match="sorted, non-overlapping"):
            SpeechSegments(duration=2.0, speech=bad)


def test_importing_silero_keeps_the_callers_thread_count():
    """silero_vad's import sets torch to 1 thread for the whole process; we must put it back."""
    code = (
        "import torch; torch.set_num_threads(2)\n"
        "from latentsync.audio.vad import detect_speech\n"
        "detect_speech(torch.zeros(16000), 16000)\n"
        "import sys; assert 'silero_vad' in sys.modules\n"
        "print(torch.get_num_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2"


@pytest.mark.parametrize("blocked, backend, message", [
    ("silero_vad", "jit", "pip install silero-vad"),
    ("onnxruntime", "onnx", "pip install onnxruntime"),
])
def test_a_missing_dependency_says_what_to_install(blocked, backend, message):
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"  # makes `import` of it fail, as if uninstalled
        "import torch\n"
        "from latentsync.audio.vad import detect_speech\n"
        "try:\n"
        f"    detect_speech(torch.zeros(16000), 16000, backend={backend!r})\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert message in out.stdout


class ThreadRecorder:
    """Stands in for a loaded silero model: calls it, and records torch's thread count at every call."""

    def __init__(self, model):
        self.model, self.threads = model, []

    def reset_states(self):
        self.model.reset_states()

    def __call__(self, frame, rate):
        self.threads.append(torch.get_num_threads())
        return self.model(frame, rate)



@pytest.mark.parametrize("backend", ["jit", "onnx"])
def test_silero_runs_on_one_thread_and_gives_the_callers_threads_back(backend, two_threads, monkeypatch):
    """Issue 20: with two threads each 32 ms frame waits for the other core, 100x slower when it is busy."""
    recorder = ThreadRecorder(vad._silero_model(backend))
    monkeypatch.setitem(vad._MODELS, backend, recorder)
    speech = torch.zeros(16000)
    detect_speech(speech, 16000, backend=backend)
    assert len(recorder.threads) == 32 and set(recorder.threads) == {1}
    assert torch.get_num_threads() == 2

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        raise Cancelled

    recorder.threads.clear()
    with pytest.raises(Cancelled):
        detect_speech(speech, 16000, backend=backend, progress=cancel)
    assert set(recorder.threads) == {1}
    assert torch.get_num_threads() == 2

