"""Benchmark: what a prepared video (`lipsync --prepared DIR`) saves on the second voice, measured in one run.

One video lip-synced to two voices through the `lipsync` command's own code (its argparse command, called in
this process; the models load per run as they do from the shell), after an untimed warm-up run on 4 frames (the
process's first calls): (1) first: voice A with `--prepared DIR`, which makes DIR (face track, alignment and
the VAE moments of every face); (2) baseline: voice B without `--prepared`; (3) prepared: voice B with the same
DIR, which is read. The goal's ratio is (3) / (2), the same run without and with the prepared data;
(3) / (1) is the second voice against the first. The outputs of (2) and (3) must be equal frame for frame
(`equal`). RTF = a run's wall seconds / the output's seconds (below 1: faster than real time).

Input: the first `--seconds` of the shared clip at `--height` px high (its own 1920 by default: the faces pass
costs what it costs on the real clip), voice A the shared voice, voice B the same reversed. Models: random
weights in the official formats: the tiny UNet of the golden config with `--resolution` px faces (256, as 1.5)
or the full-size 1.5 UNet (`--unet-version 1.5`), whisper tiny, and the real-size SD VAE (`--tiny-vae`: the
narrow one, a quick check). Goal on the CPU with the tiny UNet and the real-size VAE: prepared <= 0.5x
baseline.

    python -m bench.prepared [--seconds S] [--out F] [--preset P[,P...]] [--device cuda] [--tiny-vae]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LATENTSYNC_SHARED", REPO.parent / "shared"))
CLIP = SHARED / "media" / "latentsync_demo1_video.mp4"
VOICE = SHARED / "media" / "latentsync_demo1_audio.wav"
CONFIG = SHARED / "reference" / "latentsync" / "unet_tiny_config.json"
STAGES = ("setup", "prepare", "faces", "read", "encode", "unet", "decode", "paste", "write", "windows", "join")


def write_clip(path: Path, seconds: float, height: int) -> int:
    """The first `seconds` of the shared clip at `height` px high (x264, crf 18). Returns the frame count."""
    import av

    from latentsync.media.video import read_frames

    frames, fps = read_frames(CLIP, max_frames=int(round(seconds * 25)))
    width = round(frames.shape[2] * height / frames.shape[1] / 2) * 2
    images = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2).float(), size=(height, width), mode="area")
    images = images.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=round(fps or 25))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18"}
        for image in images:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return len(images)


def write_voices(folder: Path, seconds: float) -> tuple[Path, Path]:
    """Voice A: the shared voice's first `seconds` (16 kHz mono); voice B: the same played backwards."""
    from latentsync.media.audio import load_audio, to_mono_16k, write_wav

    voice = to_mono_16k(*load_audio(VOICE))[: int(seconds * 16000)]
    a, b = folder / "voice_a.wav", folder / "voice_b.wav"
    write_wav(a, voice, 16000)
    write_wav(b, voice.flip(0).contiguous(), 16000)
    return a, b


def write_models(folder: Path, args: argparse.Namespace) -> dict:
    from scripts.model_files import write_tiny_unet, write_whisper_checkpoint
    from scripts.vae_files import NARROW_WIDTHS, WIDTHS, write_sd_vae

    if args.unet_version == "tiny":
        config = json.loads(CONFIG.read_text())["unet_config"]
        unet, version = write_tiny_unet(folder / "latentsync_unet.pt", config, resolution=args.resolution), "auto"
    else:  # the full-size 1.5 architecture, random weights (`bench/unet.py`)
        from bench.unet import random_unet

        unet, version = folder / "latentsync_unet.pt", "1.5"
        torch.save({"state_dict": random_unet("1.5", "cpu", torch.float32).state_dict(), "global_step": 1}, unet)
    return {"unet": str(unet), "config": version, "whisper": str(write_whisper_checkpoint(folder / "tiny.pt")),
            "vae": str(write_sd_vae(folder / "vae.safetensors", widths=NARROW_WIDTHS if args.tiny_vae else WIDTHS))}


def lipsync(video: Path, audio: Path, out: Path, models: dict, args: argparse.Namespace,
            prepared: Path | None) -> dict:
    """One `python -m latentsync lipsync ...` in this process; its JSON summary with `wall` (s) added."""
    from latentsync.cli.main import build_parser

    argv = ["lipsync", "--video", str(video), "--audio", str(audio), "--out", str(out), "--unet", models["unet"],
            "--config", models["config"], "--whisper", models["whisper"], "--vae", models["vae"],
            "--device", args.device, "--quiet"]
    argv += ["--preset", args.preset] if args.preset else []
    argv += ["--steps", str(args.steps)] if args.steps else []
    argv += ["--prepared", str(prepared)] if prepared is not None else []
    parsed = build_parser().parse_args(argv)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    summary = parsed.run(parsed)
    summary["wall"] = time.perf_counter() - started
    return summary


def row(summary: dict) -> dict:
    duration = summary["frames"] / summary["fps"]
    return {"wall_s": round(summary["wall"], 3), "rtf": round(summary["wall"] / duration, 4),
            "frames": summary["frames"], "generated_frames": summary["generated_frames"],
            "output_s": round(duration, 3), "prepared": summary.get("prepared"),
            "stage_seconds": summary["stage_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the clip cut (s)")
    parser.add_argument("--height", type=int, default=1920, help="the cut's height in px (the clip's: 1920)")
    parser.add_argument("--resolution", type=int, default=256, help="the tiny UNet's face crops (px)")
    parser.add_argument("--unet-version", choices=("tiny", "1.5"), default="tiny",
                        help="tiny: the golden config; 1.5: the full-size architecture (256 px)")
    parser.add_argument("--tiny-vae", action="store_true", help="the narrow VAE: a quick check, not a measurement")
    parser.add_argument("--preset", default=None, help="the lipsync command's --preset, or several: fast,quality "
                                                       "(default: none)")
    parser.add_argument("--steps", type=int, default=None, help="the lipsync command's --steps (default: its own)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: torch's choice)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    presets = args.preset.split(",") if args.preset else [None]
    reports = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = write_models(folder, args)  # once for every preset (the full-size UNet is gigabytes)
        video = folder / "clip.mp4"
        count = write_clip(video, args.seconds, args.height)
        voices = write_voices(folder, args.seconds)
        (folder / "warm").mkdir()
        warm, warm_voice = folder / "warm" / "clip.mp4", write_voices(folder / "warm", 4 / 25)[0]
        write_clip(warm, 4 / 25, args.height)
        for preset in presets:
            args.preset = preset
            lipsync(warm, warm_voice, folder / "warm" / f"{preset}.mp4", models, args,
                    folder / "warm" / f"{preset}.prepared")  # untimed: the first calls of this preset's models
            reports[preset or "none"] = measure(folder / f"{preset}", video, voices, models, args, count)
    text = json.dumps(reports[presets[0] or "none"] if len(presets) == 1 else {"presets": reports}, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


def measure(folder: Path, video: Path, voices: tuple[Path, Path], models: dict, args: argparse.Namespace,
            count: int) -> dict:
    """The three runs of one preset (see the module's docstring), printed as lines; returns the report."""
    from latentsync.media.video import read_frames

    folder.mkdir()
    (voice_a, voice_b), prepared = voices, folder / "clip.prepared"
    runs = {"cold_voice_a": lipsync(video, voice_a, folder / "cold_a.mp4", models, args, prepared),
            "baseline_voice_b": lipsync(video, voice_b, folder / "baseline_b.mp4", models, args, None),
            "prepared_voice_b": lipsync(video, voice_b, folder / "prepared_b.mp4", models, args, prepared)}
    equal = torch.equal(read_frames(folder / "baseline_b.mp4")[0], read_frames(folder / "prepared_b.mp4")[0])
    prepared_bytes = sum(p.stat().st_size for p in prepared.rglob("*") if p.is_file())
    rows = {name: row(summary) for name, summary in runs.items()}
    ratio = rows["prepared_voice_b"]["wall_s"] / rows["baseline_voice_b"]["wall_s"]
    second = rows["prepared_voice_b"]["wall_s"] / rows["cold_voice_a"]["wall_s"]
    first = runs["cold_voice_a"]
    for name, r in rows.items():
        stages = "  ".join(f"{k} {r['stage_seconds'][k]:.2f}" for k in STAGES if k in r["stage_seconds"])
        print(f"{name:17} {args.preset or 'none':9} wall {r['wall_s']:7.2f} s  rtf {r['rtf']:6.2f}  stages (s): "
              f"{stages}")
    print(f"prepared / baseline (voice B), {args.preset or 'no'} preset: {ratio:.3f} (goal <= 0.5: "
          f"{'met' if ratio <= 0.5 else 'MISSED'}); outputs equal: {equal}")
    return {
        "clip": f"{CLIP.name}: first {args.seconds:g} s ({count} frames) at {first['width']}x{first['height']}",
        "unet": args.unet_version, "resolution": first["resolution"],
        "vae": "narrow (NARROW_WIDTHS)" if args.tiny_vae else "real-size SD VAE (random weights)",
        "device": args.device, "threads": torch.get_num_threads(), "preset": args.preset,
        "steps": first["settings"]["steps"], "prepared_bytes": prepared_bytes, "runs": rows,
        "ratio_prepared_vs_baseline": round(ratio, 4), "goal_met": ratio <= 0.5, "equal": equal,
        "ratio_second_voice_vs_first": round(second, 4),
        "rtf_cold": rows["baseline_voice_b"]["rtf"], "rtf_prepared": rows["prepared_voice_b"]["rtf"],
        "rtf_first_with_prepare": rows["cold_voice_a"]["rtf"]}

if __name__ == "__main__":
    main()
