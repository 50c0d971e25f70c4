"""Specification of the LatentSync sampler (latentsync/sample/: sampler.py, denoise.py, frame_plan.py; unet/deepcache.py).

Reference: bytedance/LatentSync @ a229c39 `LipsyncPipeline` (DOSSIER.md §1.6-1.10). Golden: the tiny UNet of
shared/reference/latentsync/unet_tiny_golden.safetensors, whose stored input is the pipeline's 13-channel CFG
batch; our layout must rebuild it exactly and one guided DDIM step must match within 1e-4 (the golden's
suggested float32 tolerance). Behaviour is checked with a random tiny UNet (scripts/model_files.py), the
`PoolVAE` stand-in and a real clip at 360x640 with 64 px face crops (see sampler_fixtures.py); the full-size
SD VAE runs end to end in test_vae.py.
"""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import shared_path
from sampler_fixtures import (CLIP, RESOLUTION, PoolVAE, RecordingUNet, decode_clip, face_boxes, fake_features,
                              outside_boxes)

from latentsync.unet.deepcache import DeepCache
from latentsync.sample.denoise import LATENT_SCALE, audio_context, denoise, guided_noise, unet_input
from latentsync.face.align import align
from latentsync.face.detect import FaceTrack, detect_faces
from latentsync.sample.schedulers import make_scheduler
from latentsync.sample.sampler import SamplerSettings, lipsync, plan_lipsync
from latentsync.unet.model import build_unet
from latentsync.unet.loading import load_unet
from latentsync.audio.vad import SpeechSegments
from latentsync.sample.frame_plan import ping_pong, plan_frames, plan_length, speech_weights

pytestmark = pytest.mark.usefixtures("one_thread")

REFERENCE = "reference/latentsync"


@pytest.fixture(scope="module")
def tiny_config() -> dict:
    return json.loads(shared_path(f"{REFERENCE}/unet_tiny_config.json").read_text())["unet_config"]


@pytest.fixture(scope="module")
def unet(tiny_config, tmp_path_factory):
    from scripts.model_files import write_tiny_unet

    path = write_tiny_unet(tmp_path_factory.mktemp("unet") / "latentsync_unet.pt", tiny_config)
    return load_unet(path, tiny_config)


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    return decode_clip(shared_path(CLIP), 40)


@pytest.fixture(scope="module")
def track(clip) -> FaceTrack:
    found = detect_faces(clip)
    assert found.valid.all()
    return found


def settings(**changes) -> SamplerSettings:
    return SamplerSettings(**{"steps": 3, **changes})


def run(unet, clip, track, features, frames=None, **options):
    frames = round(features.duration * features.fps) if frames is None else frames
    kwargs = {"faces": track.subset(slice(0, frames)), "resolution": RESOLUTION, **options}
    config = kwargs.pop("settings", settings())
    features = features.with_speech(kwargs.pop("speech", None))
    return lipsync(clip[:frames], features, unet, PoolVAE(), config, **kwargs)


def assert_background_unchanged(result, inputs):
    """Outside each output frame's face footprint, every pixel equals its input frame's, bit for bit."""
    for j, box in enumerate(face_boxes(result.faces)):
        keep = outside_boxes(tuple(inputs.shape[1:3]), box)
        assert torch.equal(result.frames[j][keep], inputs[result.source_index[j]][keep]), j


# --- the reference's layout -----------------------------------------------------------------------------

def test_unet_input_layout_and_one_guided_ddim_step_match_reference():
    from safetensors.torch import load_file

    golden = load_file(shared_path(f"{REFERENCE}/unet_tiny_golden.safetensors"))
    weights = {k[len("weights."):]: v.float() for k, v in golden.items() if k.startswith("weights.")}
    model = build_unet(shared_path(f"{REFERENCE}/unet_tiny_config.json"))
    model.load_state_dict(weights, strict=True, assign=True)
    stored, context = golden["inputs.sample"], golden["inputs.encoder_hidden_states"]
    latents, conditioning, chunks = stored[1:2, :4], stored[1:2, 4:], context[16:]
    assert torch.equal(unet_input(latents, conditioning, guided=True), stored)
    assert torch.equal(audio_context(chunks, guided=True), context)

    with torch.no_grad():
        eps = guided_noise(model, latents, golden["inputs.timestep_a"], conditioning, context, guidance=1.5)
    uncond, cond = golden["outputs.sample_a"].chunk(2)
    torch.testing.assert_close(eps, uncond + 1.5 * (cond - uncond), atol=1e-4, rtol=1e-4)

    scheduler = make_scheduler("ddim", 20)
    assert int(scheduler.timesteps[0]) == int(golden["inputs.timestep_a"])  # 951
    alpha_bar = scheduler.alpha_bars[:2].astype(np.float64)
    x0 = (latents.double() - np.sqrt(1 - alpha_bar[0]) * eps.double()) / np.sqrt(alpha_bar[0])
    expected = np.sqrt(alpha_bar[1]) * x0 + np.sqrt(1 - alpha_bar[1]) * eps.double()
    torch.testing.assert_close(scheduler.step(eps, 0, latents).double(), expected, atol=1e-5, rtol=1e-5)


def test_sampler_builds_the_reference_unet_batch(unet, clip, track):
    """Channels: one seeded noise tensor repeated over the frames, the latent mouth mask, the VAE latents of
    the masked and of the unmasked crop (x 0.18215); audio: zeros for the unconditional half, then the
    frames' chunks. DDIM visits the reference's timesteps."""
    recorder = RecordingUNet(unet)
    features = fake_features(16)
    lipsync(clip[:16], features, recorder, PoolVAE(), settings(steps=2, seed=7), faces=track.subset(slice(0, 16)),
            resolution=RESOLUTION)
    assert [int(t) for _, t, _ in recorder.calls] == [501, 1]
    sample, _, context = recorder.calls[0]
    assert sample.shape == (2, 13, 16, 8, 8) and torch.equal(sample[0], sample[1])
    noise = torch.randn((1, 4, 1, 8, 8), generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(sample[:1, :4], noise.expand(-1, -1, 16, -1, -1), atol=0, rtol=0)

    faces = align(clip[:16], track.subset(slice(0, 16)), RESOLUTION)
    vae = PoolVAE()
    assert torch.equal(sample[0, 4], faces.latent_mask.expand(16, -1, -1))
    masked = vae.encode(faces.masked_pixel_values()) * LATENT_SCALE
    reference = vae.encode(faces.pixel_values()) * LATENT_SCALE
    torch.testing.assert_close(sample[0, 5:9], masked.transpose(0, 1), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(sample[0, 9:13], reference.transpose(0, 1), atol=1e-6, rtol=1e-6)
    assert context.shape == (32, 50, 384)
    assert not context[:16].any() and torch.equal(context[16:], features.chunks[:16])

    recorder.calls.clear()
    lipsync(clip[:4], fake_features(4), recorder, PoolVAE(), settings(steps=1, guidance=1.0),
            faces=track.subset(slice(0, 4)), resolution=RESOLUTION)
    assert recorder.calls[0][0].shape[0] == 1 and recorder.calls[0][2].shape[0] == 4  # no CFG half


# --- lengths and frames -------------------------------------------------------------------------------------

def test_length_rules():
    assert ping_pong(3, 8).tolist() == [0, 1, 2, 2, 1, 0, 0, 1]
    assert plan_length(3, 8, "freeze").tolist() == [0, 1, 2, 2, 2, 2, 2, 2]
    assert plan_length(5, 3, shorter="stop").tolist() == [0, 1, 2]
    assert plan_length(5, 3, shorter="keep").tolist() == [0, 1, 2, 3, 4]
    assert plan_length(1, 4).tolist() == [0, 0, 0, 0]


def test_equal_lengths_keep_frame_count_fps_and_background(unet, clip, track):
    result = run(unet, clip, track, fake_features(24), frames=24)
    assert result.frames.shape == clip[:24].shape and result.frames.dtype == torch.float32
    assert result.fps == 25.0 and result.generated.all() and result.source_index.tolist() == list(range(24))
    assert result.crops.shape == (24, RESOLUTION, RESOLUTION, 3)
    assert_background_unchanged(result, clip)
    assert not torch.equal(result.frames, clip[:24])


@pytest.mark.parametrize("fps", [30.0, 24.0, 60.0])
def test_other_frame_rates_are_kept(unet, clip, track, fps):
    """At any frame rate output frame j is driven by the audio at its own time: the ten feature rows (50 per
    second) centred on the row boundary nearest to (j + 0.5) / fps, which is not the 25 fps layout 2j - 4 ... 2j + 5."""
    recorder = RecordingUNet(unet)
    features = fake_features(12, fps=fps)
    result = run(recorder, clip, track, features, frames=12)
    assert len(result.frames) == 12 and result.fps == fps
    assert result.generated.all() and result.source_index.tolist() == list(range(12))
    frames, last = np.arange(12), len(features.features) - 1
    centre = np.floor((frames + 0.5) * 50 / fps + 0.5).astype(int)
    rows = np.clip(centre[:, None] - 5 + np.arange(10), 0, last)
    assert not np.array_equal(rows, np.clip(2 * frames[:, None] - 4 + np.arange(10), 0, last))
    expected = features.features[torch.from_numpy(rows)].reshape(12, 50, 384)
    assert len(recorder.calls) == 3  # one window of 12 frames, 3 steps
    for _, _, context in recorder.calls:  # the conditional half, after the unconditional zeros
        assert torch.equal(context[12:], expected)


def test_frames_without_a_face_pass_through(unet, clip, track):
    cut = track.subset(slice(0, 12))
    cut.valid = cut.valid.copy()
    cut.valid[[4, 5]] = False
    result = lipsync(clip[:12], fake_features(12), unet, PoolVAE(), settings(), faces=cut, resolution=RESOLUTION)
    assert result.generated.tolist() == [True] * 4 + [False] * 2 + [True] * 6
    assert torch.equal(result.frames[4:6], clip[4:6]) and not result.faces.valid[4:6].any()
    assert result.stats["windows"] == 2  # windows never span the cut-away


@pytest.mark.parametrize("longer", ["loop", "freeze"])
def test_audio_three_times_the_video(unet, clip, track, longer):
    result = run(unet, clip, track, fake_features(24), frames=8, settings=settings(audio_longer=longer))
    assert len(result.frames) == 24 and result.generated.all()
    expected = ping_pong(8, 24) if longer == "loop" else np.minimum(np.arange(24), 7)
    assert result.source_index.tolist() == expected.tolist()
    assert_background_unchanged(result, clip)


@pytest.mark.parametrize("shorter", ["stop", "keep"])
def test_audio_shorter_than_the_video(unet, clip, track, shorter):
    result = run(unet, clip, track, fake_features(10), frames=16, settings=settings(audio_shorter=shorter))
    assert len(result.frames) == (10 if shorter == "stop" else 16)
    if shorter == "keep":
        assert torch.equal(result.frames[10:], clip[10:16]) and not result.generated[10:].any()


def test_still_image_is_repeated_for_the_audio(unet, clip, track):
    still = (clip[:1] * 255).round().to(torch.uint8)  # uint8 input is accepted too
    result = lipsync(still, fake_features(10), unet, PoolVAE(), settings(), faces=track.subset(slice(0, 1)),
                     resolution=RESOLUTION)
    assert len(result.frames) == 10 and (result.source_index == 0).all() and result.generated.all()
    assert_background_unchanged(result, still.float() / 255)


def test_progress_may_cancel_and_nothing_is_returned(unet, clip, track):
    seen = []

    class Cancelled(Exception):
        pass

    def progress(done, total):
        seen.append((done, total))
        if done == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        run(unet, clip, track, fake_features(20), progress=progress)
    assert seen == [(1, 6), (2, 6)]  # 2 windows (16 + 4 frames) x 3 steps planned


def test_a_step_progress_sees_every_step_of_every_window_with_its_latents_and_the_time_left(unet, clip, track):
    from latentsync.sample.progress import StepClock, StepInfo, StepProgress, format_seconds, step_text

    class Steps(StepProgress):
        def __init__(self):
            self.calls, self.steps = [], []

        def __call__(self, done, total):
            self.calls.append((done, total))

        def step(self, info: StepInfo):
            self.steps.append(info)

    steps = Steps()
    run(unet, clip, track, fake_features(20), progress=steps)
    assert steps.calls == [(i, 6) for i in range(1, 7)]  # still a plain progress(done, total)
    assert [(i.window, i.windows, i.step, i.steps, i.done) for i in steps.steps] == \
        [(w, 2, s, 3, 3 * w + s) for w in range(2) for s in range(1, 4)]
    assert [tuple(i.latents.shape) for i in steps.steps] == [(16, 4, 8, 8)] * 3 + [(4, 4, 8, 8)] * 3
    assert steps.steps[0].seconds_left is None and all(i.seconds_left >= 0 for i in steps.steps[1:])
    assert steps.steps[-1].seconds_left == 0
    times = iter([10.0, 12.0, 14.0])
    clock = StepClock(now=lambda: next(times))
    assert [clock.seconds_left(d, 5) for d in (1, 2, 3)] == [None, 6.0, 4.0]
    assert [format_seconds(s) for s in (None, 9.4, 247, 3909)] == ["?", "0:09", "4:07", "1:05:09"]
    info = replace(steps.steps[1], seconds_left=41)
    assert step_text(info) == "window 1/2, step 2/3, 0:41 left"
    assert step_text(steps.steps[0]) == "window 1/2, step 1/3, estimating time left"


def test_the_step_latents_are_the_prediction_of_the_clean_latents(unet):
    """dpmpp_2m's last step lands on its data prediction: the x0 handed to `on_step` there is the result."""
    torch.manual_seed(0)
    noise, chunks = torch.randn(1, 4, 2, 8, 8), torch.randn(2, 50, 384)
    conditioning = torch.randn(1, 9, 2, 8, 8)
    seen = []
    out = denoise(unet, make_scheduler("dpmpp_2m", 3), noise, conditioning, chunks, 1.5, None,
                  lambda index, x0: seen.append((index, x0)))
    assert [index for index, _ in seen] == [0, 1, 2]
    torch.testing.assert_close(seen[-1][1], out)


# --- VAD policies ------------------------------------------------------------------------------------------

def speech_mask_40() -> np.ndarray:
    """Speech in frames 0-9 and 30-39, a 0.8 s pause in between."""
    return np.r_[np.ones(10, bool), np.zeros(20, bool), np.ones(10, bool)]


def test_speech_weights_ramp_only_outside_speech():
    mask = np.array([0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    weights = speech_weights(mask, crossfade_frames=2)
    np.testing.assert_allclose(weights, [0, 0, 0, 1 / 3, 2 / 3, 1, 1, 1, 2 / 3, 1 / 3, 0, 0, 0, 0], atol=1e-6)
    np.testing.assert_array_equal(speech_weights(mask, 0), mask.astype(np.float32))
    assert not speech_weights(np.zeros(5, bool), 3).any()


def test_windows_follow_speech_for_skip_and_fast():
    valid = np.ones(40, bool)
    # at 25 fps, min_silence_s 0.32 is 8 frames
    skip = plan_frames(40, 40, valid, settings(window=16, steps=4, vad_policy="skip", min_silence_s=0.32,
                                               crossfade_frames=3), fps=25.0, speech_mask=speech_mask_40())
    assert [(w.start, w.stop) for w in skip.windows] == [(0, 13), (27, 40)]
    assert skip.output_weight[10:13].tolist() == pytest.approx([0.75, 0.5, 0.25])
    fast = plan_frames(40, 40, valid, settings(window=16, steps=4, vad_policy="fast", min_silence_s=0.32,
                                               crossfade_frames=3, fast_steps=2), fps=25.0, speech_mask=speech_mask_40())
    assert [(w.start, w.stop, w.steps) for w in fast.windows] == [(0, 10, 4), (10, 20, 2), (20, 30, 2), (30, 40, 4)]
    assert fast.chunk_weight[13:27].max() == 0 and fast.total_steps == 12
    short = plan_frames(40, 40, valid, settings(window=16, steps=4, vad_policy="skip", min_silence_s=1.0),
                        fps=25.0, speech_mask=speech_mask_40())  # the pause is shorter than min_silence: all generated
    assert short.generated.all() and [(w.start, w.stop) for w in short.windows] == [(0, 13), (13, 27), (27, 40)]


def test_skip_leaves_pauses_untouched_and_fades_into_them(unet, clip, track):
    features = fake_features(40, speech_mask=speech_mask_40())
    steps = []
    result = run(unet, clip, track, features, settings=settings(vad_policy="skip", crossfade_frames=3),
                 progress=lambda done, total: steps.append(total))
    assert result.generated.tolist() == [True] * 13 + [False] * 14 + [True] * 13
    assert torch.equal(result.frames[13:27], clip[13:27])
    assert not torch.equal(result.frames[10], clip[10])
    assert steps[-1] == 6 and len(steps) == 6  # 2 windows x 3 steps


def test_fast_and_silence_condition_pauses_on_silence(unet, clip, track):
    features = fake_features(40, speech_mask=speech_mask_40())
    recorder = RecordingUNet(unet)
    result = lipsync(clip[:40], features, recorder, PoolVAE(), settings(vad_policy="fast", fast_steps=1),
                     faces=track.subset(slice(0, 40)), resolution=RESOLUTION)
    assert result.generated.all() and len(recorder.calls) == 3 + 1 + 1 + 3
    pause_context = recorder.calls[3][2]  # frames 10-19: unconditional zeros, then their chunks
    torch.testing.assert_close(pause_context[10 + 3:], features.silence_chunks(np.arange(13, 20)))

    recorder.calls.clear()
    lipsync(clip[:40], features, recorder, PoolVAE(), settings(vad_policy="silence", steps=1),
            faces=track.subset(slice(0, 40)), resolution=RESOLUTION)
    first_window = recorder.calls[0][2][16:]  # frames 0-15 conditioned: speech, ramp, silence
    assert torch.equal(first_window[:10], features.chunks[:10])
    torch.testing.assert_close(first_window[13:], features.silence_chunks(np.arange(13, 16)))


def test_vad_policies_need_speech_information(unet, clip, track):
    plain = fake_features(40)
    with pytest.raises(ValueError, match="where the speech is"):
        run(unet, clip, track, plain, settings=settings(vad_policy="skip"))
    # The speech comes with the features (the VAD into Whisper Encode) or beside them (into the sampler).
    carried = fake_features(40, speech_mask=speech_mask_40())
    valid = np.ones(40, bool)
    for policy in ("silence", "skip", "fast"):
        with_features = plan_lipsync(40, carried, valid, settings(vad_policy=policy))
        beside = plan_lipsync(40, plain, valid, settings(vad_policy=policy), speech=carried.speech)
        assert [(w.start, w.stop, w.steps) for w in with_features.windows] == \
            [(w.start, w.stop, w.steps) for w in beside.windows]
        np.testing.assert_array_equal(with_features.chunk_weight, beside.chunk_weight)
        np.testing.assert_array_equal(with_features.output_weight, beside.output_weight)
    assert plan_lipsync(40, carried, valid, settings(vad_policy="silence")).chunk_weight[13:27].max() == 0


def test_silent_audio(unet, clip, track, tmp_path):
    """Digital silence through the real feature path (random-weight whisper tiny, silero VAD): "off" lip-syncs
    every frame as the reference would; "skip" finds no speech and returns the input untouched."""
    from scripts.model_files import write_whisper_checkpoint

    from latentsync.audio.features import extract_features
    from latentsync.audio.vad import detect_speech
    from latentsync.audio.whisper import load_whisper_encoder

    audio = torch.zeros(int(16000 * 12 / 25))
    speech = detect_speech(audio, 16000)
    assert speech.speech == ()
    encoder = load_whisper_encoder(write_whisper_checkpoint(tmp_path / "tiny.pt"))
    features = extract_features(audio, 16000, encoder, fps=25.0, segments=speech)
    assert run(unet, clip, track, features).generated.all()
    calls = []
    result = run(unet, clip, track, features, settings=settings(vad_policy="skip"), speech=speech,
                 progress=lambda *a: calls.append(a))
    assert len(result.frames) == 12 and torch.equal(result.frames, clip[:12])
    assert not result.generated.any() and not calls


# --- DeepCache -------------------------------------------------------------------------------------------------

def _window_inputs(frames: int = 8):
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(1, 4, 1, 8, 8, generator=generator).expand(-1, -1, frames, -1, -1)
    conditioning = torch.randn(1, 9, frames, 8, 8, generator=generator)
    chunks = torch.randn(frames, 50, 384, generator=generator)
    return noise, conditioning, chunks


def test_deepcache_interval_one_equals_no_cache_exactly(unet):
    noise, conditioning, chunks = _window_inputs()
    with torch.no_grad():
        plain = denoise(unet, make_scheduler("ddim", 4), noise, conditioning, chunks, 1.5)
        cached = denoise(unet, make_scheduler("ddim", 4), noise, conditioning, chunks, 1.5, DeepCache(1))
    assert torch.equal(plain, cached)


def test_deepcache_shallow_pass_reuses_deep_features(unet):
    """With the deep features of the same input, the shallow pass must give the full pass's output."""
    noise, conditioning, chunks = _window_inputs()
    sample, context = unet_input(noise, conditioning, True), audio_context(chunks, True)
    cache = DeepCache(3)
    with torch.no_grad():
        full = unet(sample, torch.tensor(501), context, cache=cache)
        cache.reuse = True
        shallow = unet(sample, torch.tensor(501), context, cache=cache)
    torch.testing.assert_close(shallow, full, atol=1e-5, rtol=1e-5)


def test_deepcache_interval_three_runs_a_third_of_full_passes(unet, clip, track):
    noise, conditioning, chunks = _window_inputs()
    cache = DeepCache(3)
    with torch.no_grad():
        plain = denoise(unet, make_scheduler("ddim", 20), noise, conditioning, chunks, 1.5)
        fast = denoise(unet, make_scheduler("ddim", 20), noise, conditioning, chunks, 1.5, cache)
    assert (cache.full_passes, cache.shallow_passes) == (7, 13)  # steps 0, 3, ..., 18 in full
    assert not torch.equal(plain, fast)
    assert float((plain - fast).norm() / plain.norm()) < 0.5
    result = run(unet, clip, track, fake_features(20), settings=settings(steps=6, deepcache_interval=3))
    assert (result.stats["full_passes"], result.stats["shallow_passes"]) == (4, 8)  # 2 windows x (2 + 4)


def test_settings_are_validated(unet, clip, track):
    for bad, message in (({"scheduler": "plms"}, r"\bscheduler\b.*'plms'"), ({"window": 25}, r"\bwindow\b.*\b25\b"),
                         ({"steps": 0}, r"\bsteps\b.*\b0\b"), ({"vad_policy": "mute"}, r"\bvad_policy\b.*'mute'"),
                         ({"guidance": -1.0}, r"\bguidance\b.*-1\b")):
        with pytest.raises(ValueError, match=message):
            run(unet, clip, track, fake_features(4), settings=settings(**bad))
