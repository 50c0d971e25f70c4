"""Benchmark: the lipsync's windows on a local Ray cluster, measured in one run on this machine.

The shared clip (cut to `--seconds`, 360x640, its own voice) with the tiny random-weight UNet (64 px faces) and a
narrow random SD VAE, on the CPU: one process without Ray, then Ray with 1 and with 2 workers (one CPU thread
each). Printed per run: the windows' wall time; for Ray, the one-time start (cluster + workers loading the
models), the workers' own seconds and the time lost per segment to scheduling and sending the segment back, as
a share of a segment's compute (goal <= 5 %), and the join's seconds per segment.

    python -m bench.distributed [--seconds 6] [--steps 20] [--window 16]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from latentsync.run.cluster import RayCluster
from latentsync.face.detect import make_detector
from latentsync.run.job import FaceChoice, Job
from latentsync.run.pipeline import ModelSet, UNetSpec
from latentsync.run.stream import lipsync_video_file
from latentsync.sample.settings import SamplerSettings

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CLIP = SHARED / "media" / "latentsync_demo1_video.mp4"


def cut_clip(out: Path, frames: int) -> Path:
    """The first `frames` frames of the shared clip at 360x640, with its audio cut to the same length."""
    import av
    import numpy as np

    from latentsync.media.video import write_video

    images = []
    with av.open(str(CLIP)) as container:
        for frame in container.decode(container.streams.video[0]):
            images.append(frame.to_ndarray(format="rgb24", width=360, height=640))
            if len(images) == frames:
                break
    return write_video(out, torch.from_numpy(np.stack(images)), 25.0, audio=CLIP)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--window", type=int, default=16)
    args = parser.parse_args()
    from scripts.model_files import write_tiny_unet, write_whisper_checkpoint
    from scripts.vae_files import NARROW_WIDTHS, write_sd_vae

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        config = json.loads((SHARED / "reference/latentsync/unet_tiny_config.json").read_text())["unet_config"]
        unet = UNetSpec(write_tiny_unet(folder / "latentsync_unet.pt", config, resolution=64))
        whisper, vae = write_whisper_checkpoint(folder / "tiny.pt"), write_sd_vae(folder / "vae.st", widths=NARROW_WIDTHS)
        clip = cut_clip(folder / "clip.mp4", int(args.seconds * 25))
        settings = SamplerSettings(steps=args.steps, window=args.window)
        print(f"{args.seconds:g} s of the shared clip at 360x640, 64 px faces, tiny random UNet, narrow random SD VAE, "
              f"{args.steps} steps, windows of {args.window}; CPU, one thread a process")

        def run(name: str, cluster=None) -> dict:
            out = folder / f"{name}.mp4"
            job = Job(clip, clip, out, unet, whisper, vae, FaceChoice(make_detector("dlib")), settings)
            return lipsync_video_file(job, ModelSet(torch.device("cpu")), cluster=cluster)

        single = run("single")
        windows = single["stage_seconds"]["windows"]
        segments = single["segments"]
        print(f"one process: windows {windows:.1f} s ({segments} segments, {windows / segments:.2f} s each), join "
              f"{single['stage_seconds']['join']:.2f} s")
        for workers in (1, 2):
            cluster = RayCluster("local", workers=workers)
            summary = run(f"ray{workers}", cluster)
            t = cluster.timings
            per_segment = t["compute"] / segments
            lost = t["overhead"] / segments
            print(f"Ray, {workers} worker(s): windows {summary['stage_seconds']['windows']:.1f} s "
                  f"({windows / summary['stage_seconds']['windows']:.2f}x the one process), of which start "
                  f"{t['start']:.1f} s (connect {t['connect']:.1f} s); workers' own {t['compute']:.1f} s in "
                  f"{t['groups']} groups; lost per segment {1000 * lost:.0f} ms = {100 * lost / per_segment:.1f} % "
                  f"of a segment's {per_segment:.2f} s (goal <= 5 %: {'met' if lost <= 0.05 * per_segment else 'MISSED'}); "
                  f"join {1000 * summary['stage_seconds']['join'] / segments:.0f} ms a segment")


if __name__ == "__main__":
    main()
