"""`python -m latentsync upscale`: upscale an image or a video with a Real-ESRGAN-family model or interpolation.

Images go through PIL. Videos are streamed through `media/video_stream.py` and upscaled a chunk of frames at a
time, so memory does not grow with the length; they are written as H.264 (libx264, yuv420p, whose sizes must be
even) and the audio stream is copied when the output container takes it as is.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.precision import DTYPES
from ..upscale.options import CHUNK, HEIGHT, OVERLAP, PRECISION, RESIZE_MODE, SCALE, TILE, WIDTH
from ..upscale.resize import INTERPOLATION_MODES, scaled_size
from ..upscale.frames import upscale_frames, upscale_mouth_region
from ..upscale.models import load_upscale_model, model_summary
from ..upscale.tiling import Tiling, default_device, default_dtype
from ..media.outputs import check_output
from ..media.video import CRF, NoVideoStream, file_orientation, read_frames
from ..media.video_stream import VideoChunkReader, VideoChunkWriter
from .options import add_option

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def parse_size(text: str) -> tuple[int, int]:
    """`WxH`, e.g. 512x512: each side from 1 to the Upscale node's width and height's most (`options.WIDTH`)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"a size is WIDTHxHEIGHT, e.g. 512x512; got {text!r}") from exc
    if width < 1 or height < 1 or WIDTH.problem(width) or HEIGHT.problem(height):
        raise argparse.ArgumentTypeError(f"a size must be from 1x1 to {WIDTH.high}x{HEIGHT.high}, got {text}")
    return width, height


def add_upscale_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "upscale", help="upscale an image or video with a Real-ESRGAN-family model (.pth, via spandrel) or "
                        "interpolation; prints a summary")
    parser.add_argument("input", help="image (png, jpg, webp, ...) or video (mp4, mov, mkv, ...)")
    parser.add_argument("--out", required=True, help="output file; images keep PIL's format for the suffix, "
                                                     "videos are H.264")
    method = parser.add_mutually_exclusive_group(required=True)
    method.add_argument("--model", help="super-resolution model, e.g. RealESRGAN_x2plus.pth or "
                                        "realesr-animevideov3.pth")
    method.add_argument("--mode", choices=INTERPOLATION_MODES, help="interpolation instead of a model")
    target = parser.add_mutually_exclusive_group()
    add_option(target, SCALE, default=None, help="Output size as a multiple of the input size. Default: the model's "
                                                 "own scale.")
    target.add_argument("--size", type=parse_size, help="output size WIDTHxHEIGHT")
    parser.add_argument("--mouth-mask", help="face-only mode for face crops: a mask image (white = keep, black = "
                                             "mouth); the model is used only in the mouth, interpolation elsewhere")
    for option in (RESIZE_MODE, TILE, OVERLAP, CHUNK):
        add_option(parser, option)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    add_option(parser, PRECISION, flag="--dtype")  # the Upscale node's precision
    add_option(parser, CRF)  # for videos
    parser.set_defaults(run=upscale_command)
    return parser


def upscale_command(args: argparse.Namespace) -> dict:
    """Run the `upscale` command; returns the JSON summary the CLI prints."""
    src = Path(args.input)
    if not src.is_file():
        raise FileNotFoundError(f"no input file at {src}")
    out = check_output(args.out, {"input": src, "--model": args.model, "--mouth-mask": args.mouth_mask})
    if args.mouth_mask and not args.model:
        raise ValueError("--mouth-mask needs --model (it blends the model's mouth over interpolation)")
    if args.scale is None and args.size is None and args.mode:
        raise ValueError("interpolation needs --scale or --size")
    device = torch.device(args.device) if args.device else default_device()
    model = load_upscale_model(args.model) if args.model else None
    dtype = default_dtype(model, device) if args.dtype == "auto" else DTYPES[args.dtype]
    mask = _load_mask(args.mouth_mask) if args.mouth_mask else None

    def upscale(frames: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        target = {"size": size} if size else {"scale": args.scale, "size": args.size}
        options = dict(tiling=Tiling(tile=args.tile, overlap=args.overlap, chunk=args.chunk), device=device,
                       dtype=dtype, resize_mode=args.resize_mode)
        if mask is not None:
            return upscale_mouth_region(frames, mask, model, **target, **options)
        return upscale_frames(frames, model or args.mode, **target, **options)

    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if src.suffix.lower() in IMAGE_SUFFIXES:
        summary = _upscale_image(src, out, upscale)
    else:
        summary = _upscale_video(src, out, upscale, args, model.scale if model else None)
    seconds = time.perf_counter() - started
    summary.update(input=str(src), out=str(out), method="model" if model else args.mode,
                   model=model_summary(model) if model else None, mouth_only=mask is not None,
                   device=str(device), dtype=str(dtype).replace("torch.", ""), seconds=round(seconds, 3),
                   seconds_per_frame=round(seconds / max(summary["frames"], 1), 4))
    return summary


def _load_mask(path: str) -> torch.Tensor:
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("L"), dtype=np.float32) / 255)


def _upscale_image(src: Path, out: Path, upscale) -> dict:
    # Alpha and palettes are dropped (the models and the pack's IMAGE type are RGB); EXIF orientation applied.
    pixels = read_frames(src)[0]
    result = upscale(pixels)
    Image.fromarray(_to_uint8(result[0])).save(out)
    turned = file_orientation(src).warning(src)
    return {"kind": "image", "frames": 1, "input_size": [pixels.shape[2], pixels.shape[1]],
            "output_size": [result.shape[2], result.shape[1]], "warnings": [turned] if turned else []}


def _upscale_video(src: Path, out: Path, upscale, args: argparse.Namespace, model_scale: int | None) -> dict:
    try:
        reader = VideoChunkReader(src)
    except NoVideoStream as exc:
        raise ValueError(f"{exc} (and is not an image with a known suffix)") from None
    with reader:
        target = _video_size(reader.width, reader.height, args.size, args.scale or model_scale)
        with VideoChunkWriter(out, reader, target, crf=args.crf) as writer:
            for frames, times in reader.chunks(args.chunk, audio_to=writer):
                writer.write(_to_uint8(upscale(torch.from_numpy(frames), target)), times)
                if sys.stderr.isatty():  # stdout carries the JSON summary
                    print(f"\rupscaled {writer.count} frames", end="", file=sys.stderr, flush=True)
        if sys.stderr.isatty():
            print(file=sys.stderr)
    return {"kind": "video", "frames": writer.count, "fps": float(reader.rate),
            "input_size": [reader.width, reader.height], "output_size": list(target), "codec": writer.codec,
            "audio": writer.audio_note, "warnings": [reader.orientation_warning] if reader.orientation_warning else []}


def _video_size(width: int, height: int, size: tuple[int, int] | None, scale: float) -> tuple[int, int]:
    size = size or scaled_size(width, height, scale)
    # yuv420p stores colour at half resolution, so the encoder needs even sizes.
    return size[0] + size[0] % 2, size[1] + size[1] % 2


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
