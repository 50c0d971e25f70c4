"""A streamed lipsync's windows spread over a Ray cluster (optional: `pip install ray`, the pack's `ray` extra).

The driver does what needs the whole clip, once: the face pass, the voice's features and the frame plan. The
plan's segments are cut into contiguous groups of about equal work, preferably at pauses, more groups than
workers and the largest first, so every worker stays busy. Each worker is a Ray actor (one GPU each on CUDA,
one CPU here) that loads the models once, reads the frames of its group from the input file, runs the windows
through the same `WindowRunner` as a single process and returns the encoded segments; the driver keeps them in
the partial output as they arrive and joins them. No window depends on another (see `WindowRunner`), so where
the cuts fall changes nothing: the output equals a single process's. A worker that dies is restarted and its
group made again; a group that fails for good fails the job, the finished segments kept for `--resume`.

The input video and the model files are read by the workers at the driver's paths: on a cluster of several
machines they must be on a filesystem every node mounts at the same path. The segments travel back through Ray.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.errors import error_line
from ..core.process_state import contained
from ..media.frame_reader import RetimedFrames, VideoFrames
from ..media.segments import write_segment
from ..face.blend import Blend
from ..prepared import open_prepared
from ..sample.progress import StepInfo, StepProgress
from ..sample.sampler import WindowRunner
from ..sample.stream import run_segments
from .pipeline import ModelSet, UNetSpec


@dataclass
class WindowJob:
    """Everything a worker needs to make any segment of one run (sent once to each worker)."""

    video: str
    retime: np.ndarray | None  # the constant-rate view of a variable-rate video (`RetimedFrames`), if any
    unet: UNetSpec
    vae: str
    settings: object  # SamplerSettings
    plan: object  # FramePlan
    features: object  # AudioFeatures
    faces: object  # ClipFaces
    resolution: int
    device: str
    dtype: str
    fps: float
    crf: int
    pts: np.ndarray  # the input frames' timestamps, from the driver's face pass
    blend: Blend = Blend()  # what is pasted back (`job.streamed_blend`)
    prepared: str | None = None  # a prepared video's folder (checked by the driver): its latents are read, not made


def group_segments(segments: list, groups: int) -> list[list]:
    """Contiguous groups of the segments, about equal in work (a window's frames times its steps; a frame that
    passes through counts as one step), each cut preferably just after a pause (a segment that passes through),
    largest first."""
    if not segments:
        return []
    cost = np.array([len(s) * (s.window.steps if s.window is not None else 1) for s in segments], float)
    target = cost.sum() / max(1, min(groups, len(segments)))
    out, current, acc = [], [], 0.0
    for index, segment in enumerate(segments):
        current.append(segment)
        acc += cost[index]
        rest = segments[index + 1:]
        at_pause = segment.window is None or (rest and rest[0].window is None)
        if rest and (acc >= target or (at_pause and acc >= 0.6 * target)):
            out.append(current)
            current, acc = [], 0.0
    if current:
        out.append(current)
    return sorted(out, key=lambda group: -sum(cost[segments.index(s)] for s in group))


def _make_worker_class(ray, device: str):
    resources = {"num_gpus": 1} if device.startswith("cuda") else {"num_cpus": 1}

    @ray.remote(max_restarts=3, max_task_retries=3, **resources)
    class SegmentWorker:
        """Loads the models of `job` once; makes groups of its segments and returns them encoded."""

        def __init__(self, job: WindowJob, steps=None):
            self.job = job
            dtype = getattr(torch, job.dtype)  # "float32", "float16", "bfloat16"
            models = ModelSet(torch.device(job.device), dtype)
            unet, _, _ = models.unet(job.unet)
            frames = VideoFrames(job.video)
            frames.restore(job.pts)
            self.frames = frames if job.retime is None else RetimedFrames(frames, job.retime)
            self.source = frames
            self.runner = WindowRunner(unet, models.vae(job.vae), job.settings, job.plan, job.features, job.resolution,
                                       torch.device(job.device), dtype, torch.uint8)
            self.runner.blend = job.blend
            if steps is not None:  # each UNet step told to the driver: (window, step, steps)
                self.runner.progress = _StepsTo(steps)
            if job.prepared is not None:
                self.runner.latents = open_prepared(job.prepared)

        def pid(self) -> int:
            return os.getpid()

        def make(self, segments: list) -> tuple[list[tuple[str, bytes]], float]:
            """The segments encoded, `(name, mp4 bytes)` each, and the seconds this took here."""
            started = time.perf_counter()
            made: list[tuple[str, bytes]] = []
            with tempfile.TemporaryDirectory() as folder:
                def keep(segment, images) -> None:
                    path = write_segment(Path(folder) / f"{segment.name}.mp4", images, self.job.fps, self.job.crf)
                    made.append((segment.name, path.read_bytes()))
                    path.unlink()

                with self.source:
                    run_segments(self.frames, self.job.faces, self.runner, segments, keep, overlap=False)
            return made, time.perf_counter() - started

    return SegmentWorker


class _StepsTo(StepProgress):
    """A worker's steps sent to the driver through a Ray queue, a small tuple each (no latents)."""

    def __init__(self, queue):
        self.queue = queue

    def step(self, info: StepInfo) -> None:
        self.queue.put_nowait((info.window, info.step, info.steps))


def _tell_steps(steps, on_step) -> None:
    """Hand the steps the workers have sent so far to `on_step`."""
    while steps is not None and steps.qsize():
        for told in steps.get_nowait_batch(steps.qsize()):
            on_step(*told)


def _import_ray():
    """Ray, the one optional import here (the pack's `ray` extra), imported when a cluster is first joined."""
    import ray

    return ray


def _cause(exc: Exception) -> str:
    """The worker's own error in a Ray error (its first line), else Ray's."""
    cause = getattr(exc, "cause", None)
    return error_line(cause) if isinstance(cause, BaseException) else str(exc).strip().splitlines()[0]


@functools.cache  # one for the life of the process, removed when it ends
def _ray_home() -> tempfile.TemporaryDirectory:
    """The folder a local cluster's processes start in as their HOME.

    Ray's head always starts its usage-statistics module, which reads `~/ray_bootstrap_config.yaml` before it
    looks at whether statistics are on, and asks the cloud metadata servers (169.254.169.254,
    metadata.google.internal) where it runs when the file is missing. This folder holds that file, naming a local
    cluster, so nothing is asked. Ray also makes the cluster's token in `~/.ray/auth_token` on the first
    `ray.init`: it is made here, so the user's home is left as it was. One folder for the life of the process,
    because Ray's driver keeps the first token it read for every later cluster it starts."""
    home = tempfile.TemporaryDirectory(prefix="latentsync-ray-")
    (Path(home.name) / "ray_bootstrap_config.yaml").write_text(
        "# a cluster of this machine, started by ray.init for latentsync runs\n"
        "cluster_name: latentsync-local\nprovider:\n  type: local\n")
    return home


class RayCluster:
    """Workers on a Ray cluster: `address` "local" starts a cluster of this machine for the run, "auto" joins the
    one `ray start` runs on this machine, any other address that cluster. `workers` actors (default: one per GPU,
    else per CPU)."""

    def __init__(self, address: str = "auto", workers: int | None = None):
        if importlib.util.find_spec("ray") is None:
            raise ImportError("--ray needs Ray: pip install ray (the pack's `ray` extra)")
        if not address:
            raise ValueError("--ray needs local, auto or a cluster's address")
        self.address, self.workers = address, workers

    def _connect(self, device: str) -> int:
        """Join or start the cluster (inside `process_state.contained`: what Ray sets in this process is undone
        afterwards). A local cluster starts without the dashboard and, unless the user chose otherwise, with Ray's
        usage statistics off and in a private home (see `_private_home`)."""
        ray = self.ray = _import_ray()
        package = str(Path(__file__).resolve().parents[1])  # latentsync/, which the workers import
        runtime_env = {"py_modules": [package]}
        options = dict(include_dashboard=False, configure_logging=False, log_to_driver=False)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # read by the cluster processes ray.init starts
        if self.address == "local":
            quiet = os.environ["RAY_USAGE_STATS_ENABLED"].strip().lower() in ("0", "false")
            home = os.environ.get("HOME")
            if quiet:
                runtime_env["env_vars"] = self._private_home()
            try:
                ray.init(num_cpus=self.workers or os.cpu_count() or 1, runtime_env=runtime_env, **options)
            finally:  # the cluster's processes have started with the private home; this one goes back to its own
                if home is None:
                    os.environ.pop("HOME", None)
                else:
                    os.environ["HOME"] = home
        else:  # "auto": the cluster `ray start` runs on this machine; else its address
            ray.init(address=self.address, runtime_env=runtime_env, **options)
        resources = ray.cluster_resources()
        slots = int(resources.get("GPU" if device.startswith("cuda") else "CPU", 1))
        return max(1, min(self.workers or slots, slots))

    def _private_home(self) -> dict:
        """Point HOME at this process's private Ray home (`_ray_home`) while `ray.init` starts a local cluster;
        return the variables that give the workers their own home back and tell them where the token is."""
        folder = Path(_ray_home().name)
        env_vars = {"HOME": os.path.expanduser("~")}
        token_given = "RAY_AUTH_TOKEN" in os.environ or "RAY_AUTH_TOKEN_PATH" in os.environ
        if not token_given and os.environ.get("RAY_AUTH_MODE", "").lower() != "disabled":
            env_vars["RAY_AUTH_TOKEN_PATH"] = str(folder / ".ray" / "auth_token")
        os.environ["HOME"] = str(folder)
        return env_vars

    def _disconnect(self) -> None:
        self.ray.shutdown()

    def run(self, job: WindowJob, todo: list, keep, on_window=None, on_workers=None, on_step=None) -> int:
        """Make the segments `todo` of `job` on the cluster; `keep(name, data)`
        stores each encoded segment as it arrives;
        `on_window(segment)` after each window, `on_workers(actors)` once they exist (tests kill one),
        `on_step(window, step, steps)` as the workers' UNet steps are told (within a fifth of a second; a group
        made again after a worker died tells its steps again). Returns
        how many segments were made; `timings` then holds the seconds to connect and to start the workers (models
        loaded), and over all groups the workers' own seconds ("compute") and the rest of each group's round trip
        ("overhead")."""
        with contained():  # Ray sets variables (RAY_AUTH_MODE, PYTHONBREAKPOINT ...) and loggers in this process
            return self._run(job, todo, keep, on_window, on_workers, on_step)

    def _run(self, job: WindowJob, todo: list, keep, on_window, on_workers, on_step) -> int:
        started = time.perf_counter()
        count = self._connect(job.device)
        ray = self.ray
        self.timings = {"connect": time.perf_counter() - started, "workers": count, "groups": 0, "compute": 0.0,
                        "overhead": 0.0}
        try:
            worker_class = _make_worker_class(ray, job.device)
            job_ref = ray.put(job)
            steps = None
            if on_step is not None:
                from ray.util.queue import Queue

                steps = Queue(actor_options={"num_cpus": 0})
            actors = [worker_class.remote(job_ref, steps) for _ in range(count)]
            if on_workers is not None:
                on_workers(actors)
            try:
                ray.get([actor.pid.remote() for actor in actors])  # the models are loaded
            except ray.exceptions.RayError as exc:
                raise RuntimeError(f"the Ray workers could not start: {_cause(exc)}") from None
            self.timings["start"] = time.perf_counter() - started
            groups = group_segments(todo, 3 * count)
            by_name = {s.name: s for s in todo}
            pending, idle, made = {}, list(actors), 0
            queue = list(groups)
            while queue or pending:
                while queue and idle:
                    actor = idle.pop(0)
                    group = queue.pop(0)
                    pending[actor.make.remote(group)] = (actor, group, time.perf_counter())
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=None if steps is None else 0.2)
                _tell_steps(steps, on_step)
                if not ready:
                    continue
                actor, group, sent = pending.pop(ready[0])
                try:
                    results, compute = ray.get(ready[0])
                except ray.exceptions.RayError as exc:
                    first, last = group[0].start, group[-1].stop - 1
                    raise RuntimeError(f"output frames {first}-{last} failed on a Ray worker: {_cause(exc)}; the "
                                       f"segments finished before are kept for --resume") from None
                # What a group cost beyond its own work: scheduling, sending the segments back (and a retry).
                self.timings["groups"] += 1
                self.timings["compute"] += compute
                self.timings["overhead"] += time.perf_counter() - sent - compute
                for name, data in results:
                    keep(name, data)
                    made += 1
                    if on_window is not None and by_name[name].window is not None:
                        on_window(by_name[name])
                idle.append(actor)
            _tell_steps(steps, on_step)  # the last ones, sent before their group came back
            return made
        finally:
            self._disconnect()

    def map(self, function, items: list[tuple], device: str, on_result) -> None:
        """Run `function(*item)` for every item as a Ray task (one GPU or one CPU each; a task whose worker dies is
        run again), calling `on_result(index, result)` here as each finishes."""
        with contained():
            count = self._connect(device)
            ray = self.ray
            try:
                resources = {"num_gpus": 1} if device.startswith("cuda") else {"num_cpus": 1}
                task = ray.remote(max_retries=3, **resources)(function)
                queue = list(enumerate(items))
                pending: dict = {}
                while queue or pending:
                    while queue and len(pending) < count:
                        index, item = queue.pop(0)
                        pending[task.remote(*item)] = index
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    index = pending.pop(ready[0])
                    on_result(index, ray.get(ready[0]))
            finally:
                self._disconnect()
