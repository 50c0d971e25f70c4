"""Whisper-tiny features and per-frame chunks: golden match with LatentSync (commit a229c39), any fps,
silence during non-speech, seam-free long audio, checkpoint errors.

Golden data: shared/reference/latentsync/audio_golden.safetensors (random whisper-tiny weights; see its
README). Tolerance: atol 1e-4, the README's suggestion for float32 re-implementations (observed ~3e-5).
"""
from __future__ import annotations

import argparse
import json
import wave
from fractions import Fraction

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import shared_path
from scripts.model_files import TINY_DIMS, decoder_placeholders
from latentsync.audio.features import (
    extract_features, frame_feature_rows, log_mel_spectrogram, reference_frame_count, seam_discontinuity,
    step_ratios, span_plan, span_seams)
from latentsync.cli.features import add_features_parser
from latentsync.sample.frame_plan import speech_weights
from latentsync.audio.vad import SpeechSegments
from latentsync.audio.whisper import WhisperCheckpointError, load_whisper_encoder, sinusoids

ATOL = 1e-4
@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(shared_path("reference/latentsync/audio_golden.safetensors")))


@pytest.fixture(scope="module")
def official_state(golden) -> dict[str, torch.Tensor]:
    state = {k[len("weights."):]: v.float() for k, v in golden.items() if k.startswith("weights.encoder.")}
    state["encoder.positional_embedding"] = sinusoids(1500, 384)
    return {**state, **decoder_placeholders()}


@pytest.fixture(scope="module")
def whisper_checkpoint(official_state, tmp_path_factory):
    """The golden encoder rebuilt as an official openai-whisper `tiny.pt`, decoder included."""
    path = tmp_path_factory.mktemp("whisper") / "tiny.pt"
    torch.save({"dims": TINY_DIMS, "model_state_dict": official_state}, path)
    return path


@pytest.fixture(scope="module")
def encoder(whisper_checkpoint):
    return load_whisper_encoder(whisper_checkpoint)


def golden_audio(golden, name: str) -> torch.Tensor:
    return golden[f"inputs.audio_{name}_int16"].float() / 32768  # what the reference reads via ffmpeg


@pytest.fixture(scope="module")
def short(golden, encoder):
    return extract_features(golden_audio(golden, "3s2"), 16000, encoder, fps=25)


@pytest.fixture(scope="module")
def long_reference(golden, encoder):
    return extract_features(golden_audio(golden, "31s"), 16000, encoder, fps=25)


# --- golden -------------------------------------------------------------------------------------------

def test_log_mel_matches_reference(golden):
    mel = log_mel_spectrogram(golden_audio(golden, "3s2"))
    assert mel.shape == (80, 320)
    torch.testing.assert_close(mel, golden["outputs.mel_3s2"], atol=ATOL, rtol=0)


def test_short_clip_features_chunks_and_unet_batches_match_reference(short, golden):
    torch.testing.assert_close(short.features, golden["outputs.whisper_features_3s2"], atol=ATOL, rtol=0)
    assert short.frames == 82 == reference_frame_count(160, 25)  # floor(L/2) + 2
    np.testing.assert_array_equal(short.rows, golden["outputs.chunk_source_index_3s2"].numpy())
    assert short.chunks.shape == (82, 50, 384)
    torch.testing.assert_close(short.chunks[0:16], golden["outputs.unet_audio_batch0_3s2"], atol=ATOL, rtol=0)
    torch.testing.assert_close(short.chunks[80:82], golden["outputs.unet_audio_batch5_3s2"], atol=ATOL, rtol=0)
    assert short.speech_mask.all() and short.speech is None


def test_31s_clip_crossing_the_30s_span_matches_reference(long_reference, golden):
    assert long_reference.features.shape == (1550, 5, 384)
    assert long_reference.frames == 777
    for lo, hi in ((0, 10), (1490, 1510), (1540, 1550)):
        torch.testing.assert_close(long_reference.features[lo:hi],
                                   golden[f"outputs.whisper_features_31s_rows_{lo}_{hi}"], atol=ATOL, rtol=0)


# --- frame rates ----------------------------------------------------------------------------------------

def reference_chunk_count(num_rows: int, fps: float) -> int:
    """LatentSync's feature2chunks loop, transcribed as a specification."""
    i = count = 0
    while True:
        start = int(i * 50.0 / fps)
        count += 1
        i += 1
        if start > num_rows:
            return count


def test_25fps_rows_are_the_reference_rule():
    rows = frame_feature_rows(160, 25, 90)
    i = np.arange(90)[:, None]
    np.testing.assert_array_equal(rows, np.clip(2 * i - 4 + np.arange(10), 0, 159))


@pytest.mark.parametrize("fps", [24, 25, 29.97, float(Fraction(30000, 1001)), 30, 60])
def test_each_frames_chunk_is_centred_on_the_frame_at_any_fps(fps):
    frames = int(60 * fps)
    rows = frame_feature_rows(100_000, fps, frames)  # long audio: nothing clamped past the first frames
    first = rows[:, 0]
    unclamped = first > 0
    assert (np.diff(rows, axis=1) == 1)[unclamped].all()
    centre_s = (first + 5) / 50.0  # the 10-row chunk covers [first, first + 10) rows of 20 ms
    frame_centre_s = (np.arange(frames) + 0.5) / fps
    # The reference (25 fps) centres each chunk exactly on the frame; elsewhere within half a row (10 ms).
    assert np.abs(centre_s - frame_centre_s)[unclamped].max() <= 0.01 + 1e-9
    assert (np.diff(first) >= 0).all()
    for num_rows in (1, 159, 160, 1550):
        assert reference_frame_count(num_rows, fps) == reference_chunk_count(num_rows, fps)


def test_30fps_chunk_time_equals_the_reference_rule_time():
    # Reference rule at 25 fps: frame i's chunk is centred at (2i - 4 + 5) / 50 s = (i + 0.5) / 25 s,
    # the middle of the frame. At 30 fps the middle of frame i is (i + 0.5) / 30 s.
    rows = frame_feature_rows(10_000, 30, 300)
    centre_s = (rows[:, 0] + 5) / 50.0
    expected = (np.arange(300) + 0.5) / 30
    np.testing.assert_allclose(centre_s[3:], expected[3:], atol=0.01 + 1e-9)  # frames 0-2 start clamped at row 0
    np.testing.assert_array_equal(rows[3:8, 0], [1, 3, 4, 6, 8])


def test_video_longer_than_audio_repeats_the_last_row(short, encoder, golden):
    rows = frame_feature_rows(160, 25, 100)
    assert (rows[85:] == 159).all()
    longer = extract_features(golden_audio(golden, "3s2")[:16000], 16000, encoder, fps=30, frames=45)
    assert longer.chunks.shape == (45, 50, 384)
    last = longer.features[-1].reshape(1, -1)
    torch.testing.assert_close(longer.chunks[-1], last.expand(10, -1).reshape(50, 384))


# --- speech and silence --------------------------------------------------------------------------------

def test_features_carry_the_speech_mask_and_silence_the_sampler_blends(short, golden, encoder):
    audio = golden_audio(golden, "3s2")  # silent 1.0-1.4 s; frames 25-34 have their centres there
    segments = SpeechSegments(duration=3.2, speech=((0.0, 1.0), (1.4, 3.2)))
    with_speech = extract_features(audio, 16000, encoder, fps=25, segments=segments)
    silence = extract_features(torch.zeros_like(audio), 16000, encoder, fps=25)
    mask = with_speech.speech_mask.numpy()
    np.testing.assert_array_equal(mask, segments.speech_mask(25, 82))
    assert not mask[25:35].any() and not mask[80:].any() and mask[:25].all() and mask[35:80].all()
    assert with_speech.speech is segments and with_speech.summary()["speech_segments"] is True
    # The chunks stay the audio's own; silence's chunks come along, from the same rows.
    torch.testing.assert_close(with_speech.chunks, short.chunks, atol=0, rtol=0)
    torch.testing.assert_close(with_speech.silence_chunks(), silence.chunks, atol=1e-6, rtol=0)
    torch.testing.assert_close(short.silence_chunks(), silence.chunks, atol=1e-6, rtol=0)  # without segments too
    # What the frame plan's "silence" policy asks of them: a blend, exact where the weight is 1.
    weight = speech_weights(mask, crossfade_frames=2)
    frames = np.arange(82)
    mixed = with_speech.mixed_chunks(frames, weight)
    torch.testing.assert_close(mixed[27:33], silence.chunks[27:33], atol=1e-6, rtol=0)
    assert torch.equal(mixed[mask], short.chunks[mask])
    torch.testing.assert_close(mixed[25], (2 * short.chunks[25] + silence.chunks[25]) / 3, atol=1e-5, rtol=0)
    assert torch.equal(with_speech.mixed_chunks(frames[:5], np.ones(5)), short.chunks[:5])


def test_feature_extraction_checks_its_inputs(golden, encoder):
    audio = golden_audio(golden, "3s2")
    with pytest.raises(ValueError, match="fps must be a positive number"):
        extract_features(audio, 16000, encoder, fps=0)
    with pytest.raises(ValueError, match="frames must be positive"):
        extract_features(audio, 16000, encoder, frames=0)
    with pytest.raises(ValueError, match="same audio"):
        extract_features(audio, 16000, encoder, segments=SpeechSegments(duration=9.0, speech=()))


# --- long audio -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_rows", [1, 1500, 1501, 1550, 3000, 3001, 5000, 10_000])
@pytest.mark.parametrize("context_rows", [0, 100, 250, 500])
def test_span_plan_covers_every_row_with_weights_summing_to_one(num_rows, context_rows):
    for seamless in (False, True):
        total = np.zeros(num_rows)
        for start, lo, hi, weights in span_plan(num_rows, seamless=seamless, context_rows=context_rows):
            assert start <= lo <= hi <= start + 1500
            total[lo:hi] += weights
        np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_seamless_spans_remove_the_30s_jump(long_reference, golden, encoder, short):
    seamless = extract_features(golden_audio(golden, "31s"), 16000, encoder, fps=25, seamless=True)
    assert seamless.features.shape == long_reference.features.shape and seamless.frames == 777
    assert span_seams(1550) == [1500]
    reference_jump = seam_discontinuity(long_reference.features, 1500)
    seamless_jump = seam_discontinuity(seamless.features, 1500)
    worst_row = int(step_ratios(seamless.features).argmax())
    worst = float(step_ratios(seamless.features).max())
    print(f"\nstep at the 30 s boundary vs the local median step: reference {reference_jump:.2f}, "
          f"seamless {seamless_jump:.2f}; largest anywhere in seamless {worst:.2f} (row {worst_row})")
    # Robust whatever the weights: a new reference span restarts the positional embedding at 0.
    assert reference_jump > 2.0
    assert seamless_jump < 1.5
    # Before the first cross-fade the two modes read the same span.
    torch.testing.assert_close(seamless.features[:1125], long_reference.features[:1125], atol=0, rtol=0)
    # Up to 30 s there is a single span: seamless changes nothing.
    one_span = extract_features(golden_audio(golden, "3s2"), 16000, encoder, fps=25, seamless=True)
    torch.testing.assert_close(one_span.chunks, short.chunks, atol=0, rtol=0)
    with pytest.raises(ValueError, match="seamless context"):
        extract_features(golden_audio(golden, "3s2"), 16000, encoder, seamless=True, context_s=12)


# --- checkpoints ----------------------------------------------------------------------------------------

def test_missing_checkpoint_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError,
                       match=r"nowhere\.pt.*whisper/tiny\.pt from https://huggingface\.co/ByteDance/LatentSync-1\.5"):
        load_whisper_encoder(tmp_path / "nowhere.pt")


def test_wrong_checkpoints_are_named(tmp_path, official_state):
    cases = {
        "unet.pt": ({"state_dict": {"conv_in.weight": torch.zeros(8, 13, 3, 3),
                                    "down_blocks.0.motion_modules.0.x": torch.zeros(1)},
                     "global_step": 10}, "a LatentSync UNet .*under 'state_dict'"),
        "sd_unet.pt": ({"conv_in.weight": torch.zeros(8, 4, 3, 3), "down_blocks.0.x": torch.zeros(1),
                        "up_blocks.0.x": torch.zeros(1), "time_embedding.linear_1.weight": torch.zeros(1)},
                       "a Stable Diffusion-style UNet"),
        "vae.pt": ({"encoder.down_blocks.0.w": torch.zeros(1), "quant_conv.weight": torch.zeros(1)}, "VAE"),
        "hf.pt": ({"model.encoder.layers.0.self_attn.k_proj.weight": torch.zeros(1)}, "Hugging Face"),
        "other.pt": ({"foo": torch.zeros(1)}, r"unknown network with 1 tensors \(keys like foo\)"),
        "list.pt": ([torch.zeros(1)], "holds a list"),
        "no_encoder.pt": ({"dims": TINY_DIMS, "model_state_dict": decoder_placeholders()}, "no encoder"),
    }
    for name, (content, message) in cases.items():
        torch.save(content, tmp_path / name)
        with pytest.raises(WhisperCheckpointError, match=message):
            load_whisper_encoder(tmp_path / name)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(WhisperCheckpointError, match="neither a safetensors nor a PyTorch checkpoint"):
        load_whisper_encoder(tmp_path / "text.pt")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "enc.safetensors"))
    with pytest.raises(WhisperCheckpointError, match=r"keys like x\), not an openai-whisper checkpoint"):
        load_whisper_encoder(tmp_path / "enc.safetensors")


def test_encoder_tensors_must_match_exactly(tmp_path, official_state):
    broken = dict(official_state)
    del broken["encoder.blocks.0.attn.key.weight"]
    broken["encoder.blocks.9.attn.key.weight"] = torch.zeros(384, 384)
    broken["encoder.conv1.weight"] = torch.zeros(384, 128, 3)
    torch.save({"dims": TINY_DIMS, "model_state_dict": broken}, tmp_path / "broken.pt")
    with pytest.raises(WhisperCheckpointError) as error:
        load_whisper_encoder(tmp_path / "broken.pt")
    text = str(error.value)
    assert "missing: encoder.blocks.0.attn.key.weight" in text
    assert "unexpected: encoder.blocks.9.attn.key.weight" in text
    assert "wrong shape: encoder.conv1.weight (384, 128, 3) (expected (384, 80, 3))" in text
    torch.save({"dims": {"n_mels": 80}, "model_state_dict": official_state}, tmp_path / "dims.pt")
    with pytest.raises(WhisperCheckpointError, match="'dims' lacks"):
        load_whisper_encoder(tmp_path / "dims.pt")


# --- command line ---------------------------------------------------------------------------------------

def test_features_command_writes_safetensors(tmp_path, golden, whisper_checkpoint, short):
    wav = tmp_path / "clip.wav"
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(golden["inputs.audio_3s2_int16"].numpy().tobytes())
    parser = argparse.ArgumentParser()
    add_features_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["features", str(wav), "--whisper", str(whisper_checkpoint), "--fps", "30000/1001",
                              "--frames", "96", "--out", str(tmp_path / "out" / "feat.safetensors")])
    summary = args.run(args)
    json.dumps(summary)
    assert summary["frames"] == 96 and summary["chunks"] == [96, 50, 384] and summary["features"] == [160, 5, 384]
    assert summary["fps"] == pytest.approx(29.97003, abs=1e-5)
    written = load_file(summary["out"])
    torch.testing.assert_close(written["features"], short.features, atol=1e-6, rtol=0)
    assert written["chunks"].shape == (96, 50, 384) and written["speech_mask"].dtype == torch.bool
    assert summary["speech_policy"] == "keep" and written["speech_weight"].eq(1).all()

    # --speech-policy silence: the file holds the chunks the frame plan's "silence" policy would give.
    args = parser.parse_args(["features", str(wav), "--whisper", str(whisper_checkpoint), "--speech-policy",
                              "silence", "--crossfade-frames", "2", "--out", str(tmp_path / "silence.safetensors")])
    summary = args.run(args)
    written = load_file(summary["out"])
    assert summary["speech_policy"] == "silence" and "speech" in summary and summary["frames"] == 82
    mask = written["speech_mask"].numpy()
    np.testing.assert_array_equal(written["speech_weight"].numpy(), speech_weights(mask, 2))
    assert torch.equal(written["chunks"][mask], short.chunks[mask])
    quiet = written["speech_weight"] == 0
    assert quiet.any()  # the VAD finds the pause at 1.0-1.4 s
    torch.testing.assert_close(written["chunks"][quiet], short.silence_chunks()[quiet], atol=1e-6, rtol=0)


# --- memory ---------------------------------------------------------------------------------------------

def test_features_hold_rows_not_a_chunk_per_frame(golden, encoder, short):
    """200,000 frames (over two hours at 25 fps) of chunks would be 15 GB; the features hold their rows and
    gather a window's chunks when asked."""
    many = extract_features(golden_audio(golden, "3s2"), 16000, encoder, fps=25, frames=200_000)
    held = sum(v.numel() * v.element_size() if isinstance(v, torch.Tensor) else getattr(v, "nbytes", 0)
               for v in vars(many).values())
    assert many.frames == 200_000 and held < 20 * 2**20
    assert many.summary()["chunks"] == [200_000, 50, 384]
    window = many.mixed_chunks(np.arange(16), np.ones(16))
    assert torch.equal(window, short.chunks[:16])
    last = many.mixed_chunks(np.arange(199_984, 200_000), np.ones(16))  # past the audio: its last row, repeated
    assert torch.equal(last, short.features[-1].reshape(1, -1).expand(10, -1).reshape(1, 50, 384).expand(16, -1, -1))


def test_a_frame_count_beyond_memory_is_refused_before_encoding(golden, encoder, monkeypatch):
    from latentsync.audio import features as audio_features
    from latentsync.core import memory

    def must_not_encode(*args, **kwargs):
        raise AssertionError("encoded although the features cannot fit")

    monkeypatch.setattr(audio_features, "encode_mel", must_not_encode)
    audio = golden_audio(golden, "3s2")
    # 10**12 frames would be 80 TB of feature row numbers: more than any machine, refused with the numbers.
    with pytest.raises(memory.InsufficientMemoryError,
                       match=r"whisper features of 3 s of audio for 1000000000000 frames needs [\d,.]+ GiB of RAM "
                             r"and only [\d.]+ [GM]iB is available; lower frames"):
        extract_features(audio, 16000, encoder, fps=25, frames=10**12)
    # The count taken from the audio is checked too: here against a machine with 1 MiB free.
    monkeypatch.setattr(memory, "available_ram", lambda: 2**20)
    with pytest.raises(memory.InsufficientMemoryError, match="for 82 frames .* only 1.0 MiB is available"):
        extract_features(audio, 16000, encoder, fps=25)
