"""`python -m latentsync prepare VIDEO [--out DIR]`: a video's faces and VAE latents made once (`prepared/`), for
`lipsync --prepared DIR` runs with any number of voices. The flags that change what is made (the face, the UNet's
face size, the VAE and how it runs, the device) are the `lipsync` command's own: give both the same ones."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..face.detect import DETECTOR, check_selection, make_detector
from ..face.smooth import SMOOTHING
from ..prepared import REBUILD_PREPARED
from ..run.job import FaceChoice, MemoryOptions
from ..run.pipeline import DEVICE, ModelSet, UNetSpec, resolve_device, resolve_dtype
from ..run.stream import Hooks, Preparation, prepared_video
from ..audio.features import FPS
from ..sample.presets import PRESET, RUN_OPTION, dtype_name, resolve
from ..sample.vae import OFFLOAD, VAE_BATCH, VAE_TILING
from .faces import add_selection_arguments
from .features import parse_fps
from .options import add_option

SHARED = (RUN_OPTION["dtype"], VAE_BATCH, VAE_TILING, OFFLOAD)  # the run options that change the latents


def default_folder(video: str | Path) -> Path:
    """Beside the video: `talk.mp4` -> `talk.mp4.prepared/`."""
    video = Path(video)
    return video.with_name(video.name + ".prepared")


def add_prepare_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "prepare", help="find a video's faces and VAE-encode them once, for lipsync --prepared; prints a summary")
    parser.add_argument("video", help="video file, or a still image")
    parser.add_argument("--out", default=None, help="the folder to make (default: VIDEO.prepared beside the video)")
    parser.add_argument("--unet", required=True, help="the UNet checkpoint the runs will use (its config gives the "
                                                      "faces' size)")
    parser.add_argument("--vae", required=True, help="vae-ft-mse-840000-ema-pruned.safetensors, as lipsync's --vae")
    parser.add_argument("--config", default="auto", help="1.5, 1.6, a JSON config, or auto, as lipsync's --config")
    add_option(parser, FPS, type=parse_fps, help="Frame rate for a still image (e.g. 25 or 30000/1001).")
    add_option(parser, DETECTOR)
    parser.add_argument("--insightface-dir", default=None, help="folder with det_10g.onnx and 2d106det.onnx")
    add_selection_arguments(parser)
    add_option(parser, SMOOTHING)
    add_option(parser, PRESET, default=None, help="The preset the lipsync runs will use (its dtype and VAE options "
                                                  "change the latents). Flags typed beside it win.")
    for option in SHARED:
        add_option(parser, option, default=None)  # None: the preset's, else the option's default
    add_option(parser, DEVICE)
    add_option(parser, REBUILD_PREPARED)
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(run=prepare_command)
    return parser


def prepare_command(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    check_selection(args.select, args.index, args.position)
    typed = {option.name: getattr(args, option.name) for option in SHARED if getattr(args, option.name) is not None}
    chosen = resolve(args.preset, typed)
    device = resolve_device(args.device)
    dtype = resolve_dtype(dtype_name(chosen["dtype"], device), device)
    options = {"models_dir": args.insightface_dir} if args.detector == "insightface" else {}
    face = FaceChoice(make_detector(args.detector, **options), args.select, args.index, args.position, args.smoothing)
    folder = Path(args.out) if args.out else default_folder(args.video)
    preparation = Preparation(Path(args.video), folder, UNetSpec(Path(args.unet), args.config), Path(args.vae), face,
                              MemoryOptions(chosen["vae_batch"], chosen["vae_tiling"], chosen["offload"]),
                              args.fps, args.rebuild_prepared)

    def say(text: str) -> None:
        if not args.quiet:
            print(f"prepare: {text}", file=sys.stderr, flush=True)

    def faces(frames: int) -> None:
        if frames % 100 == 0:
            say(f"faces in {frames} frames")

    def encoded(done: int, total: int) -> None:
        if done == total or done % 128 < 16:
            say(f"{done}/{total} faces encoded")

    prepared, note = prepared_video(preparation, ModelSet(device, dtype), dtype, Hooks(face_progress=faces,
                                                                                        on_prepare=encoded))
    files = prepared.files.values()
    return {**note, "frames": len(prepared), "faces": int(prepared.faces.valid.sum()),
            "resolution": prepared.faces.resolution, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
            "bytes": sum(entry["bytes"] for entry in files), "seconds": round(time.perf_counter() - started, 3)}
