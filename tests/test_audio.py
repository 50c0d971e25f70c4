"""latentsync.media.audio: decoding and the 16 kHz mono front end every audio node shares."""
import wave

import numpy as np
import pytest
import torch

from conftest import VOICES, shared_path
from latentsync.media.audio import AudioError, load_audio, to_mono_16k


def tone(freq: float, seconds: float, rate: int) -> torch.Tensor:
    return 0.5 * torch.sin(2 * torch.pi * freq * torch.arange(int(seconds * rate), dtype=torch.float64) / rate)


def dominant_frequency(x: torch.Tensor, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.numpy() * np.hanning(x.numel())))
    return float(np.argmax(spectrum) * rate / x.numel())


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_keeps_pitch_length_and_level(rate):
    stereo = torch.stack([tone(440, 2.0, rate), tone(440, 2.0, rate)]).float()[None]  # ComfyUI [1, C, T]
    out = to_mono_16k(stereo, rate)
    assert out.dtype == torch.float32 and out.ndim == 1
    assert out.numel() == 32000
    assert abs(dominant_frequency(out, 16000) - 440) < 1.0
    middle = out[2000:-2000]
    assert abs(float(middle.abs().max()) - 0.5) < 0.01


def test_channels_are_averaged():
    left, right = tone(300, 1.0, 16000).float(), torch.zeros(16000)
    out = to_mono_16k(torch.stack([left, right]), 16000)
    torch.testing.assert_close(out, left / 2)


@pytest.mark.parametrize("waveform, rate, message", [
    (torch.zeros(0), 16000, "empty"),
    (torch.zeros(1, 1, 400), 16000, "at least 32 ms"),
    (torch.zeros(1, 1, 1000), 44100, "at least 32 ms"),
    (torch.tensor([0.0, float("nan")] * 1000), 16000, "NaN or infinite"),
    (torch.tensor([0.0, float("inf")] * 1000), 16000, "NaN or infinite"),
    (torch.zeros(2, 1, 16000), 16000, "batch of 2"),
    (torch.zeros(16000), 0, "sample rate"),
    (torch.zeros(16000), 22050.5, "sample rate"),
])
def test_bad_audio_gets_a_clear_error(waveform, rate, message):
    with pytest.raises(AudioError, match=message):
        to_mono_16k(waveform, rate)


def test_load_audio_reads_what_was_written(tmp_path):
    samples = (tone(1000, 0.5, 48000).numpy() * 32767).astype(np.int16)
    stereo = np.stack([samples, -samples], axis=1)
    path = tmp_path / "stereo48k.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2), out.setsampwidth(2), out.setframerate(48000)
        out.writeframes(stereo.tobytes())
    waveform, rate = load_audio(path)
    assert rate == 48000 and waveform.shape == (2, 24000)
    np.testing.assert_allclose(waveform[0].numpy(), samples / 32768, atol=1e-6)
    np.testing.assert_allclose(waveform[1].numpy(), -samples / 32768, atol=1e-6)


@pytest.mark.parametrize("name", VOICES)
def test_load_audio_on_shared_voice_tracks(name):
    waveform, rate = load_audio(shared_path(f"media/{name}"))
    assert rate == 16000 and waveform.shape[0] == 1 and waveform.shape[1] > 9 * 16000
    assert torch.isfinite(waveform).all() and 0.05 < float(waveform.abs().max()) <= 1.0


def test_load_audio_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.wav"):
        load_audio(tmp_path / "nowhere.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all" * 10)
    with pytest.raises(AudioError, match="cannot decode"):
        load_audio(junk)
