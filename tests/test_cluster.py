"""The lipsync's windows on a local Ray cluster (latentsync/run/cluster.py): the same output as one process, also when a
worker is killed mid-run and when the cuts land in speech. Ray runs on this machine's CPUs only (no dashboard)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import torch
from conftest import REPO, missing, shared_path
from sampler_fixtures import CLIP, RESOLUTION, decode_clip

from latentsync.media.video import read_frames, write_video
from latentsync.sample.frame_plan import FramePlan, Window
from latentsync.sample.progress import StepProgress
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


def run_file(models, clip, out, cluster=None, prepared=None, hooks=None):
    from latentsync.face.detect import make_detector
    from latentsync.run.job import FaceChoice, Job
    from latentsync.run.pipeline import ModelSet, UNetSpec
    from latentsync.run.stream import Hooks, lipsync_video_file

    job = Job(clip, clip, out, UNetSpec(models["unet"]), models["whisper"], models["vae"],
              FaceChoice(make_detector("dlib")), SamplerSettings(**SETTINGS), prepared=prepared)
    return lipsync_video_file(job, ModelSet(torch.device("cpu")), cluster=cluster, hooks=hooks or Hooks())


@pytest.fixture(scope="module")
def single(models, clip_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "out.mp4"
    run_file(models, clip_file, out)
    return read_frames(out)[0]


def altered_latents(folder) -> None:
    """Scale the prepared video's reference latents, with its manifest's sizes and hashes renewed: data a run
    reads without complaint, and that shows in its output only if the latents are read, not made."""
    from latentsync.prepared.store import MANIFEST, read_checked, write_checked, write_manifest

    manifest = json.loads((folder / MANIFEST).read_text())
    for name in [name for name in manifest["files"] if name.startswith("latents/")]:
        tensors = read_checked(folder, name, manifest["files"][name])
        tensors["reference"] = tensors["reference"] * 0.5
        manifest["files"][name] = write_checked(folder, name, tensors)
    write_manifest(folder, manifest)


class Steps(StepProgress):
    def __init__(self):
        self.calls, self.infos = [], []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append(done)

    def step(self, info) -> None:
        self.infos.append(info)


def test_two_workers_make_the_single_process_output(models, clip_file, single, tmp_path):
    """With a prepared video, read by the workers: latents changed on disk change the cluster's output as they
    change a single process's (a killed worker's test checks the output without one against `single`)."""
    from latentsync.run.cluster import RayCluster
    from latentsync.run.stream import Hooks

    environment = dict(os.environ)
    assert run_file(models, clip_file, tmp_path / "made.mp4", prepared=tmp_path / "p")["prepared"]["made"]
    assert torch.equal(read_frames(tmp_path / "made.mp4")[0], single)
    altered_latents(tmp_path / "p")
    run_file(models, clip_file, tmp_path / "altered.mp4", prepared=tmp_path / "p")
    altered = read_frames(tmp_path / "altered.mp4")[0]
    assert not torch.equal(altered, single)
    steps = Steps()
    summary = run_file(models, clip_file, tmp_path / "cluster.mp4", RayCluster("local", workers=2), tmp_path / "p",
                       Hooks(progress=steps))
    assert not summary["prepared"]["made"] and torch.equal(read_frames(tmp_path / "cluster.mp4")[0], altered)
    # every UNet step of every window reached the driver's progress, window, step and time left told as here
    assert sorted((i.window, i.step) for i in steps.infos) == [(w, s) for w in range(6) for s in (1, 2)]
    assert steps.calls == list(range(1, 13)) and [i.done for i in steps.infos] == steps.calls
    assert all(i.windows == 6 and i.steps == 2 and i.total == 12 and i.latents is None for i in steps.infos)
    # 6 windows of 4 frames, one a group: the cuts land in speech too (the voice starts at 0.45 s).
    assert summary["segments"] == 6 and summary["made_segments"] == 6
    assert not ray.is_initialized()  # the driver let go of the cluster
    assert dict(os.environ) == environment


def test_a_killed_worker_is_replaced_and_the_output_is_the_same(models, clip_file, single, tmp_path):
    from latentsync.run.cluster import RayCluster

    class KillOne(RayCluster):
        """Kills every worker process when the first segment comes back: the other worker is mid-segment."""

        def run(self, job, todo, keep, on_window=None, on_workers=None, on_step=None):
            pids, killed = [], []

            def note(actors):
                pids.extend(ray.get([actor.pid.remote() for actor in actors]))

            def keep_then_kill(name, data):
                keep(name, data)
                if not killed:
                    killed.extend(pids)
                    for pid in pids:
                        os.kill(pid, signal.SIGKILL)

            made = super().run(job, todo, keep_then_kill, on_window, note, on_step)
            assert len(killed) == 2
            return made

    summary = run_file(models, clip_file, tmp_path / "out.mp4", KillOne("local", workers=2))
    assert summary["made_segments"] == 6
    assert torch.equal(read_frames(tmp_path / "out.mp4")[0], single)


def test_a_group_that_fails_for_good_fails_the_job_with_its_frames_and_keeps_the_rest(models, clip_file, tmp_path):
    """The input turns to garbage once the workers have started: every group's read fails; the job stops with
    the group's output frames and the worker's own message, and the partial output stays for --resume."""
    import shutil

    from latentsync.run.cluster import RayCluster

    clip = shutil.copy(clip_file, tmp_path / "clip.mp4")

    class SpoilsTheInput(RayCluster):
        def run(self, job, todo, keep, on_window=None, on_workers=None, on_step=None):
            def spoil(actors):
                ray.get([actor.pid.remote() for actor in actors])
                (tmp_path / "clip.mp4").write_bytes(b"not a video any more" * 100)

            return super().run(job, todo, keep, on_window, spoil, on_step)

    with pytest.raises(RuntimeError, match=r"output frames \d+-\d+ failed on a Ray worker: .*clip.mp4.*kept for "
                                           r"--resume"):
        run_file(models, clip, tmp_path / "out.mp4", SpoilsTheInput("local", workers=2))
    assert (tmp_path / "out.mp4.partial" / "job.json").is_file() and not (tmp_path / "out.mp4").exists()


def test_groups_are_contiguous_balanced_and_cut_at_pauses_first():
    from latentsync.run.cluster import group_segments

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



# Calls that put a packet on the wire. A UDP connect() only picks a route (Ray finds its own address that way,
# toward 8.8.8.8) and is let through; what is then sent on that socket shows its peer in the fd (strace -yy).
SOCKET_CALL = re.compile(r"^\d+ +(connect|sendto|sendmsg|sendmmsg|write|writev|send)\(\d+<(\w+):\[([^\]]*)\]>(.*)")
ADDRESS = re.compile(r'inet_addr\("([0-9.]+)"\)|inet_pton\(AF_INET6, "([0-9a-fA-F:.]+)"')
RUN_ON_RAY = """
import sys, torch
torch.set_num_threads(1)
from latentsync.run.cluster import RayCluster
from latentsync.face.detect import make_detector
from latentsync.run.job import FaceChoice, Job
from latentsync.run.pipeline import ModelSet, UNetSpec
from latentsync.run.stream import lipsync_video_file
from latentsync.sample.progress import StepProgress
from latentsync.sample.sampler import SamplerSettings
clip, out, unet, whisper, vae = sys.argv[1:6]
job = Job(clip, clip, out, UNetSpec(unet), whisper, vae, FaceChoice(make_detector("dlib")),
          SamplerSettings(steps=2, window=4, seed=5))
lipsync_video_file(job, ModelSet(torch.device("cpu")), cluster=RayCluster("local", workers=1))
"""
CONTROL = """
import socket
route = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
route.connect(("203.0.113.9", 9))  # a route look-up: nothing is sent
route.close()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.connect(("203.0.113.9", 9))
udp.send(b"x")  # leaves
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.setblocking(False)
tcp.connect_ex(("203.0.113.9", 9))  # a SYN leaves
"""


def off_machine_packets(trace: str) -> list[str]:
    """The traced calls that send to an address that is not this machine's own (Unix and netlink sockets and
    UDP route look-ups are not)."""
    import ipaddress

    import psutil

    own = {a.address.split("%")[0] for addresses in psutil.net_if_addrs().values() for a in addresses}

    def away(host: str) -> bool:
        address = ipaddress.ip_address(host.strip("[]"))
        address = getattr(address, "ipv4_mapped", None) or address  # ::ffff:a.b.c.d is a.b.c.d
        return not (address.is_loopback or str(address) in own)

    found = []
    for line in trace.splitlines():
        call = SOCKET_CALL.match(line)
        if call is None or not call.group(2).startswith(("TCP", "UDP")):
            continue
        name, kind, ends, rest = call.groups()
        hosts = [a or b for a, b in ADDRESS.findall(rest)]
        if name == "connect" and kind.startswith("UDP"):
            continue
        if "->" in ends:
            hosts.append(ends.split("->")[1].rsplit(":", 1)[0])
        if any(away(host) for host in hosts):
            found.append(line)
    return found


def traced(tmp_path, name: str, *argv: str) -> str:
    strace = shutil.which("strace")
    if strace is None:
        missing("strace (apt-get install strace)")
    trace = tmp_path / f"{name}.trace"
    done = subprocess.run([strace, "-f", "-qq", "-yy", "-e", "trace=connect,sendto,sendmsg,sendmmsg,write,writev",
                           "-o", str(trace), sys.executable, *argv], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr[-3000:]
    return trace.read_text(errors="replace")


def test_a_run_on_a_local_cluster_sends_nothing_off_this_machine(models, clip_file, single, tmp_path):
    """The CLI's path with `--ray local`, every process it and Ray start traced: no packet to another machine (by
    default Ray's head asks cloud metadata servers where it runs), the user's home untouched (Ray keeps a token
    there), the output still the single process's. A control shows the trace would catch a packet."""
    home = Path.home() / ".ray"
    before = sorted(home.rglob("*")) if home.exists() else None
    trace = traced(tmp_path, "ray", "-c", RUN_ON_RAY, str(clip_file), str(tmp_path / "out.mp4"), str(models["unet"]),
                   str(models["whisper"]), str(models["vae"]))
    assert len({line.split()[0] for line in trace.splitlines()}) > 5  # the cluster's processes were traced too
    assert re.search(r"connect\(\d+<TCP", trace)  # and their connections to each other
    assert off_machine_packets(trace) == []
    assert (sorted(home.rglob("*")) if home.exists() else None) == before
    assert torch.equal(read_frames(tmp_path / "out.mp4")[0], single)

    control = off_machine_packets(traced(tmp_path, "control", "-c", CONTROL))
    assert [SOCKET_CALL.match(line).group(1, 2) for line in control] == [("sendto", "UDP"), ("connect", "TCP")]
