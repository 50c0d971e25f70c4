"""The streamed lip-sync (sample/stream.py, media/frame_reader.py, media/segments.py, media/partial.py,
`run/stream.lipsync_video_file`, `python -m latentsync lipsync`).

Frames read from the file window by window must give exactly the in-memory sampler's frames, for the ping-pong
loop (reads that go back) and for skip's pass-through stretches and fades; any window redone alone must give
what it gave in the whole run; a run stopped by a full disk, Ctrl-C or SIGKILL continues with --resume to the
output of an uninterrupted run; a partial output is never lost or reused with other settings.
Models: the tiny UNet with random weights, a VAE stand-in with posterior noise (library tests) and a narrow
random SD VAE file (file-level tests); 360x640 cuts of a shared clip with 64 px face crops.
"""
from __future__ import annotations

import errno
import json
from fractions import Fraction
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import REPO, shared_path
from sampler_fixtures import CLIP, RESOLUTION, PoolVAE, decode_clip, fake_features

from latentsync.face.detect import detect_faces
from latentsync.face.window_crops import faces_from_track
from latentsync.media.frame_reader import VideoFrames
from latentsync.media.partial import ResumeRefused
from latentsync.media.segments import DiskFull
from latentsync.media.video import read_frames, write_video
from latentsync.sample.sampler import Output, SamplerSettings, WindowRunner, lipsync, plan_lipsync
from latentsync.sample.stream import plan_segments, run_segments
from latentsync.unet.loading import load_unet

pytestmark = pytest.mark.usefixtures("one_thread")


class NoisyPoolVAE(PoolVAE):
    """PoolVAE whose encoder adds posterior noise from a generator the sampler reseeds, as the SD VAE does."""

    def __init__(self):
        self.reseed(0)

    def reseed(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(int(seed))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        latents = super().encode(images)
        return latents + 0.5 * torch.randn(latents.shape, generator=self.generator)


@pytest.fixture(scope="module")
def tiny_config() -> dict:
    return json.loads(shared_path("reference/latentsync/unet_tiny_config.json").read_text())["unet_config"]


@pytest.fixture(scope="module")
def models(tiny_config, tmp_path_factory):
    from scripts.model_files import write_tiny_unet, write_whisper_checkpoint
    from scripts.vae_files import NARROW_WIDTHS, write_sd_vae

    folder = tmp_path_factory.mktemp("models")
    return {"unet": write_tiny_unet(folder / "latentsync_unet.pt", tiny_config, resolution=RESOLUTION),
            "whisper": write_whisper_checkpoint(folder / "tiny.pt"),
            "vae": write_sd_vae(folder / "vae.safetensors", widths=NARROW_WIDTHS)}


@pytest.fixture(scope="module")
def unet(models, tiny_config):
    return load_unet(models["unet"], tiny_config)


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    """24 frames (0.96 s) at 360x640 with the clip's own soundtrack, as an mp4 with one key frame."""
    frames = decode_clip(shared_path(CLIP), 24)
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, 25.0, audio=shared_path(CLIP))


@pytest.fixture(scope="module")
def decoded(clip_file):
    frames, _ = read_frames(clip_file)
    track = detect_faces(frames)
    assert track.valid.all()
    return frames, track


def streamed(path, features, unet, settings, track, cache_bytes, done=frozenset()):
    """{segment name: frames} of a streamed run, the plan and the segments."""
    reader, faces, runner = runner_for(path, track, unet, settings, features, cache_bytes)
    segments = plan_segments(runner.plan, settings.window)
    out = {}
    with reader:
        run_segments(reader, faces, runner, segments, lambda s, f: out.__setitem__(s.name, f), done)
    return out, runner.plan, segments


def runner_for(clip_file, track, unet, settings, features, cache_bytes=1 << 30):
    """A scanned reader of the clip, its faces, and a `WindowRunner` of the plan (VAE: `NoisyPoolVAE`)."""
    reader = VideoFrames(clip_file, cache_bytes=cache_bytes)
    for _ in reader.scan():
        pass
    faces = faces_from_track(track, reader.frame_hw, RESOLUTION)
    plan = plan_lipsync(len(reader), features, faces.valid, settings)
    return reader, faces, WindowRunner(unet, NoisyPoolVAE(), settings, plan, features, RESOLUTION,
                                       torch.device("cpu"), torch.float32, torch.uint8)


LOOP = dict(vad_policy="off", audio_longer="loop")  # 40 frames of audio for 24 of video: forward, back, forward
SKIP = dict(vad_policy="skip", crossfade_frames=2, min_silence_s=0.2)


@pytest.mark.parametrize("options", [LOOP, SKIP], ids=["ping-pong loop", "skip with fades"])
def test_streamed_frames_equal_the_in_memory_run(clip_file, decoded, unet, options):
    frames, track = decoded
    speech = np.ones(40, bool)
    speech[10:22] = False  # a 0.48 s pause: skip leaves it out, fading at its edges
    features = fake_features(40, speech_mask=speech)
    settings = SamplerSettings(steps=2, window=6, seed=3, **options)
    whole = lipsync(frames, features, unet, NoisyPoolVAE(), settings, faces=track, resolution=RESOLUTION,
                    output=Output(torch.uint8))
    # A cache of 3 frames: the loop's backward windows seek and decode again.
    out, plan, segments = streamed(clip_file, features, unet, settings, track, cache_bytes=3 * 640 * 360 * 3)
    joined = np.concatenate([out[s.name] for s in segments])
    assert joined.shape == tuple(whole.frames.shape)
    assert np.array_equal(joined, whole.frames.numpy())
    assert whole.generated.any()
    if options is LOOP:
        assert (np.diff(plan.source_index) < 0).any()  # the file was read backwards
    else:
        assert any(s.window is None for s in segments)  # frames passed through between windows
        assert ((plan.output_weight > 0) & (plan.output_weight < 1)).any()  # and faded in and out


def test_a_window_redone_alone_gives_what_it_gave_in_the_whole_run(clip_file, decoded, unet):
    frames, track = decoded
    features = fake_features(24)
    settings = SamplerSettings(steps=2, window=6, seed=3)
    first, _, segments = streamed(clip_file, features, unet, settings, track, cache_bytes=1 << 30)
    windows = [s for s in segments if s.window is not None]
    assert len(windows) == 4
    redo = windows[2]
    again, _, _ = streamed(clip_file, features, unet, settings, track, cache_bytes=1 << 30,
                           done=frozenset(s.name for s in segments if s != redo))
    assert list(again) == [redo.name]
    assert np.array_equal(again[redo.name], first[redo.name])
    other, _, _ = streamed(clip_file, features, unet, SamplerSettings(steps=2, window=6, seed=4), track,
                           cache_bytes=1 << 30)
    assert not np.array_equal(other[redo.name], first[redo.name])  # the seed does reach the window


def test_the_reader_gives_any_frame_again_within_its_cache(clip_file, decoded):
    frames, _ = decoded
    reader = VideoFrames(clip_file, cache_bytes=4 * 640 * 360 * 3)
    assert sum(1 for _ in reader.scan()) == 24 and reader.fps == 25.0
    with reader:
        order = [20, 21, 5, 6, 23, 0, 12, 12, 3]
        assert np.array_equal(reader.read(order), frames[order].numpy())
        assert len(reader._cache) <= 4


def test_the_next_window_is_read_while_the_current_one_samples(clip_file, decoded):
    from scripts.stand_ins import SleepingUNet

    _, track = decoded
    settings = SamplerSettings(steps=2, window=6)
    reader, faces, runner = runner_for(clip_file, track, SleepingUNet(0.05), settings, fake_features(24))
    times: dict[str, list] = {"read": [], "sampled": []}
    read = reader.read

    def timed_read(indices):
        times["read"].append(time.perf_counter())
        return read(indices)

    reader.read = timed_read
    segments = plan_segments(runner.plan, settings.window)
    written = []
    with reader:
        run_segments(reader, faces, runner, segments, lambda s, f: written.append(s.name),
                     on_window=lambda s, crops: times["sampled"].append(time.perf_counter()))
    assert written == [s.name for s in segments] and len(segments) == 4
    # Reading window k + 1 began before window k finished sampling: the stages overlap.
    assert all(times["read"][k + 1] < times["sampled"][k] for k in range(3)), times


def test_a_cancel_stops_after_the_window_under_way_and_keeps_the_finished_ones(clip_file, decoded, unet):
    _, track = decoded
    settings = SamplerSettings(steps=2, window=6)
    reader, faces, runner = runner_for(clip_file, track, unet, settings, fake_features(24))

    def cancel_in_window_three(done, total):
        if done == 5:
            raise InterruptedError("cancelled")

    runner.progress = cancel_in_window_three
    segments = plan_segments(runner.plan, settings.window)
    written = []
    with reader, pytest.raises(InterruptedError):
        run_segments(reader, faces, runner, segments, lambda s, f: written.append(s.name))
    assert written == [s.name for s in segments[:2]]


def test_a_failing_read_stops_the_run_with_its_own_error(clip_file, decoded, unet):
    _, track = decoded
    settings = SamplerSettings(steps=2, window=6)
    reader, faces, runner = runner_for(clip_file, track, unet, settings, fake_features(24))
    read, calls = reader.read, []

    def fails_third(indices):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("the disk went away")
        return read(indices)

    reader.read = fails_third
    written = []
    with reader, pytest.raises(OSError, match="went away"):
        run_segments(reader, faces, runner, plan_segments(runner.plan, 6), lambda s, f: written.append(s.name))
    assert len(written) == 2


# ----------------------------------------------------------------------------------- files, resume, bad input


def run_file(models, clip, out, settings=None, resume=False, audio=None, smoothing=True):
    from latentsync.face.detect import make_detector
    from latentsync.run.job import FaceChoice, Job
    from latentsync.run.pipeline import ModelSet, UNetSpec
    from latentsync.run.stream import lipsync_video_file

    job = Job(clip, audio or clip, out, UNetSpec(models["unet"]), models["whisper"], models["vae"],
              FaceChoice(make_detector("dlib"), smoothing=smoothing), settings or SamplerSettings(steps=2, window=8),
              resume=resume)
    return lipsync_video_file(job, ModelSet(torch.device("cpu")))


@pytest.fixture(scope="module")
def uninterrupted(models, clip_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "out.mp4"
    summary = run_file(models, clip_file, out)
    assert summary["frames"] == 24 and summary["segments"] == 3 and summary["resumed_segments"] == 0
    assert not out.with_name("out.mp4.partial").exists()
    return read_frames(out)[0]


def test_a_full_disk_stops_the_run_and_resume_finishes_it(models, clip_file, uninterrupted, tmp_path, monkeypatch):
    import latentsync.media.segments as segments

    out = tmp_path / "out.mp4"
    calls, encode = [], segments.encode_frames

    def fills_the_disk(*args):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return encode(*args)

    monkeypatch.setattr(segments, "encode_frames", fills_the_disk)
    with pytest.raises(DiskFull, match="disk is full.*00000008-00000016.mp4.*kept"):
        run_file(models, clip_file, out)
    monkeypatch.setattr(segments, "encode_frames", encode)
    partial = tmp_path / "out.mp4.partial"
    assert sorted(p.name for p in partial.iterdir()) == ["00000000-00000008.mp4", "faces.npz", "job.json"]
    assert not out.exists()

    with pytest.raises(ResumeRefused, match="--resume"):  # not continued, and not thrown away, unasked
        run_file(models, clip_file, out)
    with pytest.raises(ResumeRefused, match="settings.steps: 2 then, 3 now"):
        run_file(models, clip_file, out, SamplerSettings(steps=3, window=8), resume=True)
    with pytest.raises(ResumeRefused, match="face.smoothing: True then, False now"):  # other crops: not mixed
        run_file(models, clip_file, out, resume=True, smoothing=False)
    assert partial.is_dir()

    summary = run_file(models, clip_file, out, resume=True)
    assert (summary["resumed_segments"], summary["made_segments"]) == (1, 2)
    assert not partial.exists()
    assert torch.equal(read_frames(out)[0], uninterrupted)


def test_a_killed_process_resumes_to_the_uninterrupted_output(models, clip_file, uninterrupted, tmp_path):
    """`python -m latentsync lipsync` killed with SIGKILL after its first window, then run again with --resume."""
    out = tmp_path / "out.mp4"
    argv = [sys.executable, "-m", "latentsync", "lipsync", "--video", str(clip_file), "--audio", str(clip_file),
            "--out", str(out), "--unet", str(models["unet"]), "--whisper", str(models["whisper"]),
            "--vae", str(models["vae"]), "--steps", "2", "--window", "8", "--dtype", "fp32", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = tmp_path / "out.mp4.partial"
    deadline = time.monotonic() + 300
    while not list(partial.glob("0*.mp4")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    assert not out.exists() and len(list(partial.glob("0*.mp4"))) in (1, 2)

    done = subprocess.run(argv + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["resumed_segments"] >= 1 and summary["frames"] == 24
    assert torch.equal(read_frames(out)[0], uninterrupted)


def test_a_truncated_video_is_lip_synced_up_to_where_it_stops(models, clip_file, tmp_path):
    from test_bad_input import write_faststart_mp4

    frames = (decode_clip(shared_path(CLIP), 10) * 255).to(torch.uint8).numpy()
    whole = write_faststart_mp4(tmp_path / "whole.mp4", frames, 25).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: int(len(whole) * 0.6)])
    summary = run_file(models, cut, tmp_path / "out.mp4", audio=clip_file,
                       settings=SamplerSettings(steps=2, window=8, audio_longer="freeze"))
    kept = summary["input_frames"]
    assert 0 < kept < 10
    (warning,) = summary["warnings"]
    assert "cut.mp4" in warning and f"after {kept} frames" in warning
    assert read_frames(tmp_path / "out.mp4")[0].shape[0] == summary["frames"]


def write_variable_rate_clip(path, frames: np.ndarray, gaps: list[int]):
    """An mp4 on a 1/50 s clock whose frame k is shown `gaps[k]` ticks after frame k - 1."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.time_base = Fraction(1, 50)
        pts = 0
        for image, gap in zip(frames, gaps):
            pts += gap
            picture = av.VideoFrame.from_ndarray(image, format="rgb24")
            picture.pts, picture.time_base = pts, stream.codec_context.time_base
            container.mux(stream.encode(picture))
        container.mux(stream.encode(None))
    return path


def test_a_variable_frame_rate_is_retimed_by_timestamps(models, clip_file, tmp_path):
    """12 frames at 25 fps, then 6 at 12.5 fps (a phone that dropped its rate): shown at a constant rate, each
    slow frame covers two ticks, so the mouth keeps time with the voice."""
    frames = (decode_clip(shared_path(CLIP), 18) * 255).to(torch.uint8).numpy()
    video = write_variable_rate_clip(tmp_path / "vfr.mp4", frames, [0] + [2] * 11 + [4] * 6)
    reader = VideoFrames(video)
    assert sum(1 for _ in reader.scan()) == 18
    index = reader.constant_rate_index(25.0)
    assert index is not None and list(index[:12]) == list(range(12)) and list(index[12:16]) == [11, 12, 12, 13]
    even = VideoFrames(clip_file)
    for _ in even.scan():
        pass
    assert even.constant_rate_index(25.0) is None
    summary = run_file(models, video, tmp_path / "out.mp4", audio=clip_file,
                       settings=SamplerSettings(steps=2, window=8, audio_longer="freeze", audio_shorter="keep"))
    assert summary["input_frames"] == 18 and any("frame rate varies" in w for w in summary["warnings"])
    assert summary["frames"] == len(reader.constant_rate_index(summary["fps"]))


def test_audio_a_minute_longer_than_the_video_loops_it_without_holding_frames(models, clip_file, tmp_path):
    """0.96 s of video, 60 s of audio (the clip's voice, then silence): the output follows the audio, looping the
    clip forward and back, and the skipped silence passes through in segments of a window."""
    from latentsync.media.audio import load_audio, write_wav

    voice, rate = load_audio(clip_file)
    long = torch.zeros(voice.shape[0], 60 * rate)
    long[:, :voice.shape[1]] = voice
    audio = write_wav(tmp_path / "long.wav", long, rate)
    summary = run_file(models, clip_file, tmp_path / "out.mp4", audio=audio,
                       settings=SamplerSettings(steps=2, window=8, vad_policy="skip"))
    assert summary["input_frames"] == 24 and summary["frames"] == 1500
    assert 0 < summary["generated_frames"] < 48 and summary["segments"] >= 1500 // 8
    frames, fps = read_frames(tmp_path / "out.mp4")
    assert (len(frames), fps) == (1500, 25.0)
    original, _ = read_frames(clip_file)
    # Frame 30 is past the voice: passed through, the clip played backwards from its end (ping-pong).
    assert (frames[30].float() - original[24 - 1 - (30 - 24)].float()).abs().mean() < 3
