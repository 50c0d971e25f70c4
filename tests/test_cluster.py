"""The lipsync's windows on a local Ray cluster (latentsync/cluster.py): the same output as one process, also when a
worker is killed mid-run and when the cuts land in speech. Ray runs on this machine's CPUs only (no dashboard)."""
from __future__ import annotations

import json
import os
import signal

import pytest
import ray
import torch
from conftest import shared_path
from sampler_fixtures import CLIP, RESOLUTION, decode_clip

from latentsync.media.video import read_frames, write_video
from latentsync.sample.frame_plan import FramePlan, Window
from latentsync.sample.sampler import SamplerSettings
from latentsync.sample.stream import Segment, plan_segments


pytestmark = pytest.mark.usefixtures("one_thread")
SETTINGS = dict(steps=2, window=4, seed=5)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from scripts.model_files import write_tiny_unet, write_whisper_checkpoint
    from scripts.vae_files import NARROW_WIDTHS, write_sd_vae

    config = json.loads(shared_path("reference/latentsync/unet_tiny_config.json").read_text())["unet_config"]
    folder = tmp_path_factory.mktemp("models")
    return {"unet": write_tiny_unet(folder / "latentsync_unet.pt", config, resolution=RESOLUTION),
            "whisper": write_whisper_checkpoint(folder / "tiny.pt"),
            "vae": write_sd_vae(folder / "vae.safetensors", widths=NARROW_WIDTHS)}


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    frames = decode_clip(shared_path(CLIP), 24)
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, 25.0, audio=shared_path(CLIP))


def run_file(models, clip, out, cluster=None):
    from latentsync.face.detect import make_detector
    from latentsync.pipeline import ModelSet, UNetSpec, lipsync_video_file

    return lipsync_video_file(clip, clip, out, ModelSet(torch.device("cpu")), UNetSpec(models["unet"]),
                              models["whisper"], models["vae"], SamplerSettings(**SETTINGS),
                              detector=make_detector("dlib"), cluster=cluster)


@pytest.fixture(scope="module")
def single(models, clip_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "out.mp4"
    run_file(models, clip_file, out)
    return read_frames(out)[0]


def test_two_workers_make_the_single_process_output(models, clip_file, single, tmp_path):
    from latentsync.cluster import RayCluster

    environment = dict(os.environ)
    summary = run_file(models, clip_file, tmp_path / "out.mp4", RayCluster("local", workers=2))
    # 6 windows of 4 frames, one a group: the cuts land in speech too (the voice starts at 0.45 s).
    assert summary["segments"] == 6 and summary["made_segments"] == 6
    assert torch.equal(read_frames(tmp_path / "out.mp4")[0], single)
    assert not ray.is_initialized()  # the driver let go of the cluster
    assert dict(os.environ) == environment


def test_a_killed_worker_is_replaced_and_the_output_is_the_same(models, clip_file, single, tmp_path):
    from latentsync.cluster import RayCluster

    class KillOne(RayCluster):
        """Kills every worker process when the first segment comes back: the other worker is mid-segment."""

        def run(self, job, todo, keep, on_window=None, on_workers=None):
            pids, killed = [], []

            def note(actors):
                pids.extend(ray.get([actor.pid.remote() for actor in actors]))

            def keep_then_kill(name, data):
                keep(name, data)
                if not killed:
                    killed.extend(pids)
                    for pid in pids:
                        os.kill(pid, signal.SIGKILL)

            made = super().run(job, todo, keep_then_kill, on_window, note)
            assert len(killed) == 2
            return made

    summary = run_file(models, clip_file, tmp_path / "out.mp4", KillOne("local", workers=2))
    assert summary["made_segments"] == 6
    assert torch.equal(read_frames(tmp_path / "out.mp4")[0], single)


def test_a_group_that_fails_for_good_fails_the_job_with_its_frames_and_keeps_the_rest(models, clip_file, tmp_path):
    """The input turns to garbage once the workers have started: every group's read fails; the job stops with
    the group's output frames and the worker's own message, and the partial output stays for --resume."""
    import shutil

    from latentsync.cluster import RayCluster

    clip = shutil.copy(clip_file, tmp_path / "clip.mp4")

    class SpoilsTheInput(RayCluster):
        def run(self, job, todo, keep, on_window=None, on_workers=None):
            def spoil(actors):
                ray.get([actor.pid.remote() for actor in actors])
                (tmp_path / "clip.mp4").write_bytes(b"not a video any more" * 100)

            return super().run(job, todo, keep, on_window, spoil)

    with pytest.raises(RuntimeError, match=r"output frames \d+-\d+ failed on a Ray worker: .*clip.mp4.*kept for "
                                           r"--resume"):
        run_file(models, clip, tmp_path / "out.mp4", SpoilsTheInput("local", workers=2))
    assert (tmp_path / "out.mp4.partial" / "job.json").is_file() and not (tmp_path / "out.mp4").exists()


def test_groups_are_contiguous_balanced_and_cut_at_pauses_first():
    from latentsync.cluster import group_segments

    windows = [Window(0, 16, 20), Window(16, 32, 20), Window(48, 64, 20), Window(64, 80, 20), Window(80, 96, 20)]
    plan = FramePlan(source_index=torch.arange(96).numpy(), audio_frames=96, chunk_weight=None,
                     output_weight=None, windows=windows)
    segments = plan_segments(plan, 16)
    assert [s.window is None for s in segments] == [False, False, True, False, False, False]
    groups = group_segments(segments, 2)
    assert sorted(s.name for g in groups for s in g) == sorted(s.name for s in segments)  # each once
    for group in groups:  # contiguous
        assert all(a.stop == b.start for a, b in zip(group, group[1:]))
    (cut,) = sorted(g[-1].stop for g in groups)[:-1]
    assert cut in (32, 48)  # at an edge of the pause (frames 32-47), not inside the speech
    assert group_segments([Segment(0, 4, Window(0, 4, 2))], 8) == [[Segment(0, 4, Window(0, 4, 2))]]

