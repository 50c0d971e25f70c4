"""`python -m latentsync upscale`: upscale an image or a video with a Real-ESRGAN-family model or interpolation.

Images go through PIL. Videos are decoded with PyAV and upscaled a chunk of frames at a time, so memory does
not grow with the length; they are written as H.264 (libx264, yuv420p, whose sizes must be even) and the audio
stream is copied when the output container takes it as is.
"""
from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..upscale.resize import INTERPOLATION_MODES, scaled_size
from ..upscale.frames import upscale_frames, upscale_mouth_region
from ..upscale.models import load_upscale_model, model_summary
from ..upscale.tiling import default_device, default_dtype
from ..media.video import VideoDecodeError, check_crf

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# Audio codecs the MP4/MOV muxer accepts without transcoding.
MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac"}


def parse_size(text: str) -> tuple[int, int]:
    """`WxH`, e.g. 512x512."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"a size is WIDTHxHEIGHT, e.g. 512x512; got {text!r}") from exc
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"a size must be at least 1x1, got {text}")
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
    target.add_argument("--scale", type=float, help="output size as a multiple of the input (default: the "
                                                    "model's own scale)")
    target.add_argument("--size", type=parse_size, help="output size WIDTHxHEIGHT")
    parser.add_argument("--mouth-mask", help="face-only mode for face crops: a mask image (white = keep, black = "
                                             "mouth); the model is used only in the mouth, interpolation elsewhere")
    parser.add_argument("--resize-mode", choices=INTERPOLATION_MODES, default="bicubic",
                        help="how a model's result is brought to the requested size, when they differ")
    parser.add_argument("--tile", type=int, default=512, help="tile size in input pixels (halved on out-of-memory)")
    parser.add_argument("--overlap", type=int, default=32, help="overlap between tiles in input pixels")
    parser.add_argument("--chunk", type=int, default=8, help="frames on the device at once")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=("auto", *DTYPES), default="auto",
                        help="model precision (auto: fp16 on CUDA, fp32 on CPU)")
    parser.add_argument("--crf", type=int, default=18, help="H.264 quality for videos (lower is better)")
    parser.set_defaults(run=upscale_command)
    return parser


def upscale_command(args: argparse.Namespace) -> dict:
    """Run the `upscale` command; returns the JSON summary the CLI prints."""
    src, out = Path(args.input), Path(args.out)
    if not src.is_file():
        raise FileNotFoundError(f"no input file at {src}")
    if args.mouth_mask and not args.model:
        raise ValueError("--mouth-mask needs --model (it blends the model's mouth over interpolation)")
    if args.scale is None and args.size is None and args.mode:
        raise ValueError("interpolation needs --scale or --size")
    check_crf(args.crf)
    device = torch.device(args.device) if args.device else default_device()
    model = load_upscale_model(args.model) if args.model else None
    dtype = default_dtype(model, device) if args.dtype == "auto" else DTYPES[args.dtype]
    mask = _load_mask(args.mouth_mask) if args.mouth_mask else None

    def upscale(frames: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        target = {"size": size} if size else {"scale": args.scale, "size": args.size}
        options = dict(tile=args.tile, overlap=args.overlap, chunk=args.chunk, device=device, dtype=dtype,
                       resize_mode=args.resize_mode)
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
    from PIL import Image

    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("L"), dtype=np.float32) / 255)


def _upscale_image(src: Path, out: Path, upscale) -> dict:
    from PIL import Image

    with Image.open(src) as image:
        # Alpha and palettes are dropped: the models and the pack's IMAGE type are RGB.
        pixels = np.array(image.convert("RGB"))
    result = upscale(torch.from_numpy(pixels)[None])
    Image.fromarray(_to_uint8(result[0])).save(out)
    return {"kind": "image", "frames": 1, "input_size": [pixels.shape[1], pixels.shape[0]],
            "output_size": [result.shape[2], result.shape[1]]}


def _upscale_video(src: Path, out: Path, upscale, args: argparse.Namespace, model_scale: int | None) -> dict:
    import av

    with av.open(str(src)) as container:
        if not container.streams.video:
            raise ValueError(f"{src} has no video stream (and is not an image with a known suffix)")
        video_in = container.streams.video[0]
        video_in.thread_type = "AUTO"
        audio_in = container.streams.audio[0] if container.streams.audio else None
        width, height = video_in.codec_context.width, video_in.codec_context.height
        target = _video_size(width, height, args.size, args.scale or model_scale)
        rate = video_in.average_rate or video_in.guessed_rate or Fraction(25)
        start = float(video_in.start_time * video_in.time_base) if video_in.start_time is not None else 0.0
        with av.open(str(out), "w") as output:
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            video_out = output.add_stream(codec, rate=rate)
            video_out.width, video_out.height, video_out.pix_fmt = target[0], target[1], "yuv420p"
            if codec == "libx264":
                video_out.options = {"crf": str(args.crf)}
            audio_out, audio_note = _audio_stream(output, audio_in, out)
            writer = _VideoWriter(output, video_out, rate, start)
            pending: list[np.ndarray] = []
            pending_times: list[float] = []
            streams = [video_in] + ([audio_in] if audio_out is not None else [])
            packets = 0
            for packet in container.demux(*streams):
                if packet.stream is audio_in:
                    _copy_audio(packet, audio_out, start, output)
                    continue
                packets += packet.size > 0  # not the empty packet that flushes the decoder
                for frame in _decode(packet, src, writer.count + len(pending)):
                    index = writer.count + len(pending)
                    pending.append(frame.to_ndarray(format="rgb24"))
                    pending_times.append(frame.time if frame.time is not None else start + index / rate)
                    if len(pending) >= args.chunk:
                        writer.write(upscale(torch.from_numpy(np.stack(pending)), target), pending_times)
                        pending, pending_times = [], []
            if pending:
                writer.write(upscale(torch.from_numpy(np.stack(pending)), target), pending_times)
            writer.close()
            VideoDecodeError.check_complete(src, container, video_in, packets, writer.count)
    return {"kind": "video", "frames": writer.count, "fps": float(rate), "input_size": [width, height],
            "output_size": list(target), "codec": codec, "audio": audio_note}


def _decode(packet, src: Path, done: int) -> list:
    import av

    try:
        return packet.decode()
    except av.error.FFmpegError as exc:
        raise VideoDecodeError.after(src, done, exc) from exc


class _VideoWriter:
    def __init__(self, output, stream, rate: Fraction, start: float):
        self.output, self.stream, self.rate, self.start = output, stream, rate, start
        self.count, self.last_pts = 0, -1

    def write(self, frames: torch.Tensor, times: list[float]) -> None:
        import av

        for frame, when in zip(_to_uint8(frames), times):
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            # Timestamps follow the source (variable frame rates survive) on the output's 1/rate clock.
            self.last_pts = max(self.last_pts + 1, round((when - self.start) * self.rate))
            video_frame.pts = self.last_pts
            for packet in self.stream.encode(video_frame):
                self.output.mux(packet)
            self.count += 1
        if sys.stderr.isatty():  # stdout carries the JSON summary
            print(f"\rupscaled {self.count} frames", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.output.mux(packet)
        if sys.stderr.isatty():
            print(file=sys.stderr)


def _video_size(width: int, height: int, size: tuple[int, int] | None, scale: float) -> tuple[int, int]:
    size = size or scaled_size(width, height, scale)
    # yuv420p stores colour at half resolution, so the encoder needs even sizes.
    return size[0] + size[0] % 2, size[1] + size[1] % 2


def _audio_stream(output, audio_in, out: Path):
    if audio_in is None:
        return None, "none"
    name = audio_in.codec_context.name
    if out.suffix.lower() in (".mp4", ".m4v", ".mov") and name not in MP4_AUDIO:
        return None, f"dropped ({name} cannot be copied into {out.suffix})"
    return output.add_stream_from_template(audio_in), f"copied ({name})"


def _copy_audio(packet, stream, start: float, output) -> None:
    if packet.dts is None:  # the demuxer's flush packet
        return
    # Video timestamps are rebased to start at 0, so audio moves by the same amount to stay in sync; negative
    # times (AAC priming) are kept, the muxer writes them as an edit list.
    offset = round(start / packet.time_base) if start else 0
    if offset:
        packet.pts = None if packet.pts is None else packet.pts - offset
        packet.dts -= offset
    packet.stream = stream
    output.mux(packet)


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
