"""`python -m latentsync lipsync`: lip-sync a video (or a still image) to an audio file, written as an mp4.

The same library path as the nodes: audio -> (VAD) -> whisper features at the video's own frame rate; frames ->
faces; sampler; one encode of the output with the original soundtrack.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .faces import add_selection_arguments
from .features import parse_fps
from ..face.detect import DETECTORS
from ..pipeline import DTYPES
from ..sample.settings import SETTINGS, SamplerSettings, flag, old_flags


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per sampler setting, named, defaulted and explained by the library's table (earlier spellings,
    e.g. --vad for --vad-policy, still work)."""
    for setting in SETTINGS:
        kind = str if setting.choices else type(setting.default)
        parser.add_argument(flag(setting.name), *old_flags(setting.name), dest=setting.name, type=kind,
                            choices=setting.choices, default=setting.default,
                            help=f"{setting.help} Default: {setting.default}.")


def add_lipsync_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "lipsync", help="lip-sync a video or still image to an audio file and write an mp4; prints a JSON summary")
    parser.add_argument("--video", required=True, help="video file, or a still image (repeated for the audio)")
    parser.add_argument("--audio", required=True, help="the voice: an audio or video file; its original track "
                                                       "goes into the output unchanged")
    parser.add_argument("--out", required=True, help="output .mp4")
    parser.add_argument("--unet", required=True, help="latentsync_unet.pt (ByteDance/LatentSync-1.5 or -1.6)")
    parser.add_argument("--whisper", required=True, help="whisper tiny.pt (LatentSync's checkpoints/whisper)")
    parser.add_argument("--vae", required=True, help="vae-ft-mse-840000-ema-pruned.safetensors "
                                                     "(stabilityai/sd-vae-ft-mse-original)")
    parser.add_argument("--config", default="auto",
                        help="1.5 (256 px), 1.6 (512 px), a JSON config, or auto: a JSON beside the checkpoint, "
                             "else guessed from its path")
    parser.add_argument("--vad-threshold", type=float, default=0.5, help="speech probability threshold (0-1)")
    add_settings_arguments(parser)
    parser.add_argument("--fps", type=parse_fps, default=25.0, help="frame rate for a still image")
    parser.add_argument("--seamless", action="store_true", help="overlap whisper's 30 s spans (long audio)")
    parser.add_argument("--detector", choices=DETECTORS, default="dlib")
    parser.add_argument("--insightface-dir", default=None, help="folder with det_10g.onnx and 2d106det.onnx")
    add_selection_arguments(parser)
    parser.add_argument("--dtype", choices=("auto", *DTYPES), default="auto",
                        help="model precision (auto: fp16 on CUDA, fp32 on the CPU)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--crf", type=int, default=18, help="x264 quality (lower = better, larger)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(run=lipsync_command)
    return parser


def lipsync_command(args: argparse.Namespace) -> dict:
    """Run the `lipsync` command; returns the JSON summary the CLI prints."""
    from ..face.detect import check_selection, detect_faces, make_detector
    from ..media.video import check_crf, write_video
    from ..pipeline import ModelSet, UNetSpec, lipsync_files, read_clip, resolve_device, resolve_dtype

    started = time.perf_counter()
    settings = SamplerSettings(**{setting.name: getattr(args, setting.name) for setting in SETTINGS})
    settings.validate()
    check_selection(args.select, args.index, args.position)
    check_crf(args.crf)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)

    clip = read_clip(args.video, args.audio, still_fps=args.fps)
    frames, fps, still = clip.frames, clip.fps, clip.still
    options = {"models_dir": args.insightface_dir} if args.detector == "insightface" else {}
    detector = make_detector(args.detector, **options)

    def track(images):
        return detect_faces(images, detector, select=args.select, index=args.index, position=args.position)

    def progress(done: int, total: int) -> None:
        if not args.quiet:
            print(f"\rlipsync: step {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)

    run = lipsync_files(clip, ModelSet(device, dtype), UNetSpec(Path(args.unet), args.config), args.whisper, args.vae,
                        settings, vad_threshold=args.vad_threshold, seamless=args.seamless, track=track,
                        progress=progress, output_dtype=torch.uint8)
    result, resolution, config_source = run.result, run.resolution, run.config_source
    write_video(args.out, result.frames, fps, audio=args.audio, crf=args.crf)
    return {"out": str(args.out), "frames": len(result.frames), "input_frames": len(frames), "fps": round(fps, 6),
            "still_image": still, "width": int(result.frames.shape[2]) // 2 * 2,
            "height": int(result.frames.shape[1]) // 2 * 2, "generated_frames": int(result.generated.sum()),
            "resolution": resolution, "config": config_source, "device": str(device),
            "dtype": str(dtype).removeprefix("torch."), "settings": vars(settings),
            "unet_passes": {"full": result.stats["full_passes"], "shallow": result.stats["shallow_passes"]},
            "seconds": round(time.perf_counter() - started, 3)}
