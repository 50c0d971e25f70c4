"""Benchmark: what the sampler's VAD policies and DeepCache save, measured in one run on this machine.

Models: the random-weight tiny UNet of the golden config and the full-size SD VAE architecture (random weights,
written in the official LDM layout), both on the CPU; whisper tiny with random weights for the features (the
same compute as the real one). No checkpoint is needed. To keep the run to a few minutes on 2 cores the clip
is cut (default 6 s), decoded at 360x640, and faces are cropped at 32 px instead of the models' 256/512 px, so
the VAE works on 32x32 crops (latents 4x4). The printout says so. Faces are detected once and shared by all
runs (the sampler's own cost starts at the crops).

Cases:
  (a) latentsync_demo1 with its own voice track;
  (b) the same with 40 % of the voice replaced by silence, in pauses of 0.5-2 s (goal: skip <= 0.65x off).
Each runs with VAD off, skip and fast; then (a) with DeepCache interval 3 against none (full UNet passes and
time). Ratios are against the "off" run of the same case.

    python -m bench.sampler [--seconds 6] [--resolution 32] [--steps 20] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from latentsync.media.audio import load_audio, to_mono_16k
from latentsync.audio.features import extract_features
from latentsync.face.detect import detect_faces
from latentsync.sample.sampler import SamplerSettings, lipsync
from latentsync.audio.vad import detect_speech
from latentsync.run.pipeline import ModelSet, UNetSpec
from latentsync.media.video import read_frames
from scripts.model_files import write_tiny_unet, write_whisper_checkpoint
from scripts.vae_files import write_sd_vae

REPO = Path(__file__).resolve().parents[1]

SHARED = REPO.parent / "shared"
CLIP = SHARED / "media" / "latentsync_demo1_video.mp4"
VOICE = SHARED / "media" / "latentsync_demo1_audio.wav"


def decode_clip(path: Path, count: int, size_hw: tuple[int, int] = (640, 360)) -> torch.Tensor:
    """The first `count` frames as a ComfyUI IMAGE `[N, H, W, 3]` float32 0-1, resized to `size_hw`."""
    frames, _ = read_frames(path, max_frames=count)
    images = frames.permute(0, 3, 1, 2).float() / 255.0
    return torch.nn.functional.interpolate(images, size=size_hw, mode="area").permute(0, 2, 3, 1).contiguous()
CONFIG = SHARED / "reference" / "latentsync" / "unet_tiny_config.json"


def silence_pauses(audio: torch.Tensor, fraction: float, seed: int = 0) -> tuple[torch.Tensor, list]:
    """`audio` (16 kHz) with `fraction` of it replaced by silence, in pauses of 0.5-2 s at random places with
    at least 0.3 s of voice between them."""
    rng = np.random.default_rng(seed)
    rate, total = 16000, audio.numel()
    target = fraction * total / rate
    count = max(int(np.ceil(target / 1.25)), 1)
    lengths = rng.uniform(0.8, 1.2, count)
    lengths = np.clip(lengths / lengths.sum() * target, 0.5, 2.0)  # seconds, summing to the target
    gap = 0.3
    spare = total / rate - lengths.sum() - gap * (count + 1)
    if spare < 0:
        raise ValueError(f"{fraction:.0%} of {total / rate:.1f} s cannot be cut into pauses of 0.5-2 s")
    # Random voice stretches between the pauses, each at least `gap` long.
    voice = gap + rng.dirichlet(np.ones(count + 1)) * spare
    out, pauses, at = audio.clone(), [], 0.0
    for length, before in zip(lengths, voice[:-1]):
        at += before
        out[int(at * rate): int((at + length) * rate)] = 0.0
        pauses.append((round(float(at), 2), round(float(at + length), 2)))
        at += length
    return out, pauses


def timed_run(frames, features, unet, vae, track, resolution, speech, **settings) -> dict:
    config = SamplerSettings(**settings)
    start = time.perf_counter()
    result = lipsync(frames, features.with_speech(speech), unet, vae, config, faces=track, resolution=resolution)
    seconds = time.perf_counter() - start
    stats = result.stats
    return {"seconds": seconds, "generated": int(result.generated.sum()), "frames": len(result.frames),
            "unet_steps": stats["unet_steps"], "full_passes": stats["full_passes"],
            "shallow_passes": stats["shallow_passes"], "unet_s": stats["seconds"]["unet"],
            "vae_s": stats["seconds"]["encode"] + stats["seconds"]["decode"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the clip cut (s)")
    parser.add_argument("--resolution", type=int, default=32, help="face crop size (models: 256/512)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fps = 25.0
    count = int(round(args.seconds * fps))
    print(f"clip: {CLIP.name}, first {args.seconds:g} s ({count} frames) decoded at 360x640; face crops at "
          f"{args.resolution} px (the models use 256/512) so the full-size VAE stays affordable on the CPU; "
          f"tiny random UNet, {args.steps} steps, {args.threads} thread(s)")

    with tempfile.TemporaryDirectory() as tmp:  # model files in the official formats, loaded as users' are
        folder = Path(tmp)
        config = json.loads(CONFIG.read_text())["unet_config"]
        models = ModelSet(torch.device("cpu"))
        unet_file = write_tiny_unet(folder / "unet.pt", config)
        unet, _, _ = models.unet(UNetSpec(unet_file, str(unet_file.with_suffix(".json"))))
        vae = models.vae(write_sd_vae(folder / "vae.safetensors"))
        encoder = models.whisper(write_whisper_checkpoint(folder / "tiny.pt"))

    frames = decode_clip(CLIP, count)
    track = detect_faces(frames)
    voice = to_mono_16k(*load_audio(VOICE))[: int(args.seconds * 16000)]
    gapped, pauses = silence_pauses(voice, 0.4)
    cases = {"a: own voice": voice, "b: 40% of the voice silenced": gapped}
    print(f"faces found in {int(track.valid.sum())}/{len(track)} frames; (b) pauses (s): {pauses}")

    # Warm-up: the first VAE and UNet calls of a process pay for allocations the later ones reuse.
    warm = extract_features(voice[:16000], 16000, encoder, fps=fps, frames=16)
    timed_run(frames[:16], warm, unet, vae, track.subset(slice(0, 16)), args.resolution, None, steps=2)

    rows, baseline = [], {}
    for name, audio in cases.items():
        speech = detect_speech(audio, 16000)
        features = extract_features(audio, 16000, encoder, fps=fps, frames=count, segments=speech)
        share = speech.speech_seconds / speech.duration
        for policy in ("off", "skip", "fast"):
            stats = timed_run(frames, features, unet, vae, track, args.resolution, speech, steps=args.steps,
                              vad_policy=policy)
            baseline.setdefault(name, stats["seconds"])
            rows.append((name, f"vad {policy}", stats, stats["seconds"] / baseline[name], share))
        if name.startswith("a"):
            stats = timed_run(frames, features, unet, vae, track, args.resolution, speech, steps=args.steps,
                              deepcache_interval=3)
            rows.append((name, "deepcache 3", stats, stats["seconds"] / baseline[name], share))

    print(f"\n{'case':32} {'run':12} {'time s':>7} {'x off':>6} {'unet s':>7} {'vae s':>6} {'gen':>5} "
          f"{'steps':>5} {'full':>5} {'shallow':>7} {'speech':>6}")
    for name, label, s, ratio, share in rows:
        print(f"{name:32} {label:12} {s['seconds']:7.2f} {ratio:6.2f} {s['unet_s']:7.2f} {s['vae_s']:6.2f} "
              f"{s['generated']:5d} {s['unet_steps']:5d} {s['full_passes']:5d} {s['shallow_passes']:7d} "
              f"{share:6.0%}")
    off_a = next(s for n, l, s, *_ in rows if n.startswith("a") and l == "vad off")
    cached = next(s for n, l, s, *_ in rows if l == "deepcache 3")
    skip_b = next(r for n, l, s, r, _ in rows if n.startswith("b") and l == "vad skip")
    print(f"\nDeepCache 3 vs none (a): full UNet passes {cached['full_passes']}/{off_a['full_passes']} = "
          f"{cached['full_passes'] / off_a['full_passes']:.2f}; UNet time {cached['unet_s'] / off_a['unet_s']:.2f}x; "
          f"total {cached['seconds'] / off_a['seconds']:.2f}x")
    print(f"goal (b) skip <= 0.65x off: {skip_b:.2f}x -> {'met' if skip_b <= 0.65 else 'NOT met'}")
    fast_b = next(s for n, l, s, *_ in rows if n.startswith("b") and l == "vad fast")
    off_b = next(s for n, l, s, *_ in rows if n.startswith("b") and l == "vad off")
    print(f"fast (b) saves UNet steps only ({fast_b['unet_steps']}/{off_b['unet_steps']} = "
          f"{fast_b['unet_steps'] / off_b['unet_steps']:.2f}, UNet time {fast_b['unet_s'] / off_b['unet_s']:.2f}x); "
          "every frame still goes through the VAE, which dominates here with the tiny UNet on a CPU")


if __name__ == "__main__":
    main()
