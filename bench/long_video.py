"""Benchmark: the streamed lipsync on long clips, measured in one run on this machine.

(1) Memory: the shared 1080x1920 clip looped (forward, back, ...) to `--short` and to `--long` seconds, with a
voice that speaks for `--speech` seconds and is silent after, run with `--vad-policy skip` (the diffusion stays
short; the run is about the stream: decode, faces, paste, encode). Each run is a fresh process running
`run/stream.lipsync_video_file` (the `lipsync` command's code) with the tiny random-weight UNet and the full-size
SD VAE architecture on the CPU; it reports its own peak RSS and seconds per frame of each stage. Goal: peak RSS
of the long run <= 1.1x the short one's.

(2) Overlap: the short clip with every frame diffused, the device stood in for by a UNet and a VAE that sleep a
fixed time per call (the GIL released, as CUDA calls leave the CPU free): reading + aligning, sampling (device
time + paste-back) and writing run on three threads. Printed: the wall time of the windows, each stage's own
time, the slowest stage and the sum. Goal: wall <= 1.2x the slowest stage.

    python -m bench.long_video [--short 20] [--long 120] [--speech 1] [--stub-seconds 0.05] [--cases memory overlap]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CLIP = SHARED / "media" / "latentsync_demo1_video.mp4"
VOICE = SHARED / "media" / "latentsync_demo1_audio.wav"
SAMPLING = ("encode", "unet", "decode", "paste")


def write_looped_clip(path: Path, seconds: float) -> int:
    """The shared clip played forward, back, forward ... for `seconds` at its 25 fps (x264 ultrafast: the input
    only has to exist). Returns the frame count."""
    import av

    from latentsync.media.frame_reader import VideoFrames

    source = VideoFrames(CLIP)
    frames = np.stack(list(source.scan()))
    count = int(round(seconds * 25))
    period = np.concatenate([np.arange(len(frames)), np.arange(len(frames))[::-1]])
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18"}
        for index in period[np.arange(count) % len(period)]:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frames[index], format="rgb24")))
        container.mux(stream.encode(None))
    return count


def write_voice(path: Path, seconds: float, speech: float) -> None:
    """16 kHz mono: the shared voice for `speech` seconds, then silence to `seconds`."""
    from latentsync.media.audio import load_audio, to_mono_16k, write_wav

    voice = to_mono_16k(*load_audio(VOICE))
    samples = torch.zeros(int(seconds * 16000))
    samples[: int(speech * 16000)] = voice[: int(speech * 16000)]
    write_wav(path, samples, 16000)


def worker(job: dict) -> dict:
    """One run in this process: the `lipsync` command's pipeline, with the device stood in for if asked."""
    from latentsync.face.detect import make_detector
    from latentsync.run.job import FaceChoice, Job
    from latentsync.run.pipeline import ModelSet, UNetSpec
    from latentsync.run.stream import lipsync_video_file
    from latentsync.sample.settings import SamplerSettings
    from scripts.stand_ins import SleepingUNet, SleepingVAE

    torch.set_num_threads(job["threads"])
    models = ModelSet(torch.device("cpu"))
    if job.get("stub_seconds"):
        unet, vae = SleepingUNet(job["stub_seconds"]), SleepingVAE(job["stub_seconds"] / 4)
        models.unet = lambda spec, *args: (unet, 256, "stand-in")
        models.vae = lambda path, *args, **options: vae
    started = time.perf_counter()
    run = Job(job["video"], job["audio"], job["out"], UNetSpec(Path(job["unet"])), job["whisper"], job["vae"],
              FaceChoice(make_detector("dlib")), SamplerSettings(**job["settings"]))
    summary = lipsync_video_file(run, models)
    summary["wall"] = time.perf_counter() - started
    summary["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return summary


def run_worker(job: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.long_video", "--worker", json.dumps(job)], cwd=REPO,
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"worker failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def per_frame(summary: dict) -> str:
    stages = summary["stage_seconds"]
    frames = summary["frames"]
    keys = ("faces", "read", *SAMPLING, "write", "join")
    return "  ".join(f"{k} {1000 * stages.get(k, 0) / frames:.1f}" for k in keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", type=float, default=20.0)
    parser.add_argument("--long", type=float, default=120.0)
    parser.add_argument("--speech", type=float, default=1.0, help="seconds of voice at the start; silence after")
    parser.add_argument("--stub-seconds", type=float, default=0.05, help="the stand-in UNet's seconds per call")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", nargs="+", default=["memory", "overlap"], choices=["memory", "overlap"])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    from scripts.model_files import write_tiny_unet, write_whisper_checkpoint
    from scripts.vae_files import write_sd_vae

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        config = json.loads((SHARED / "reference/latentsync/unet_tiny_config.json").read_text())["unet_config"]
        models = {"unet": str(write_tiny_unet(folder / "latentsync_unet.pt", config, resolution=256)),
                  "whisper": str(write_whisper_checkpoint(folder / "tiny.pt")),
                  "vae": str(write_sd_vae(folder / "vae.safetensors"))}
        print(f"inputs: {CLIP.name} (1080x1920, 25 fps) looped; voice for {args.speech:g} s then silence; CPU, "
              f"{args.threads} torch threads; tiny random UNet, full-size SD VAE (random), {args.steps} steps")
        lengths = {"short": args.short, "long": args.long} if "memory" in args.cases else {"short": args.short}
        clips = {}
        for name, seconds in lengths.items():
            video, audio = folder / f"{name}.mp4", folder / f"{name}.wav"
            frames = write_looped_clip(video, seconds)
            write_voice(audio, seconds, args.speech)
            clips[name] = (str(video), str(audio), frames)
        base = {"threads": args.threads, **models}
        if "memory" in args.cases:
            runs = {}
            for name, (video, audio, frames) in clips.items():
                settings = {"steps": args.steps, "vad_policy": "skip"}
                runs[name] = run_worker({**base, "video": video, "audio": audio, "out": str(folder / f"{name}_out.mp4"),
                                         "settings": settings})
                s = runs[name]
                print(f"{name:5} {lengths[name]:6.0f} s {s['frames']:5d} frames ({s['generated_frames']} diffused): "
                      f"peak RSS {s['peak_rss_mb']:7.0f} MB, wall {s['wall']:7.1f} s; ms per frame: {per_frame(s)}")
            ratio = runs["long"]["peak_rss_mb"] / runs["short"]["peak_rss_mb"]
            print(f"peak RSS long / short: {ratio:.3f} (goal <= 1.1: {'met' if ratio <= 1.1 else 'MISSED'})")
        if "overlap" in args.cases:
            video, audio, frames = clips["short"]
            s = run_worker({**base, "video": video, "audio": audio, "out": str(folder / "overlap_out.mp4"),
                            "settings": {"steps": args.steps, "vad_policy": "off"}, "stub_seconds": args.stub_seconds})
            stages = s["stage_seconds"]
            own = {"read + align": stages["read"], "sample (device stand-in + paste)": sum(stages[k] for k in SAMPLING),
                   "write (x264)": stages["write"]}
            slowest = max(own.values())
            print(f"overlap, {frames} frames all diffused, stand-in UNet {args.stub_seconds:g} s a call: windows took "
                  f"{stages['windows']:.1f} s; stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in own.items()))
            print(f"wall / slowest stage: {stages['windows'] / slowest:.3f} (goal <= 1.2: "
                  f"{'met' if stages['windows'] <= 1.2 * slowest else 'MISSED'}); wall / sum of stages: "
                  f"{stages['windows'] / sum(own.values()):.3f}")


if __name__ == "__main__":
    main()
