"""`python -m latentsync lipsync`: lip-sync a video (or a still image) to an audio file, written as an mp4.

The same library path as the nodes: audio -> (VAD) -> whisper features at the video's own frame rate; frames ->
faces; sampler; one encode of the output with the original soundtrack.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from .faces import add_selection_arguments
from .features import parse_fps
from ..face.detect import DETECTORS
from ..sample.sampler import AUDIO_LONGER, AUDIO_SHORTER, SCHEDULERS, VAD_POLICIES, SamplerSettings

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def add_lipsync_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    defaults = SamplerSettings()
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
    parser.add_argument("--vad", choices=VAD_POLICIES, default=defaults.vad_policy,
                        help="off: the reference; silence: quiet the mouth outside speech; skip: leave long "
                             "pauses untouched (faster); fast: generate long pauses quietly with fewer steps")
    parser.add_argument("--vad-threshold", type=float, default=0.5, help="speech probability threshold (0-1)")
    parser.add_argument("--min-silence", type=float, default=defaults.min_silence_s,
                        help="skip/fast: pauses at least this long (s) are treated as silence")
    parser.add_argument("--crossfade", type=int, default=defaults.crossfade_frames,
                        help="frames over which generated and untouched frames (or silence) blend")
    parser.add_argument("--fast-steps", type=int, default=defaults.fast_steps, help="fast: steps for pauses")
    parser.add_argument("--scheduler", choices=SCHEDULERS, default=defaults.scheduler)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--guidance", type=float, default=defaults.guidance,
                        help="classifier-free guidance on the audio (1 = off; the reference uses 1.5)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--deepcache", type=int, default=defaults.deepcache_interval,
                        help="run the full UNet every N-th step, the shallow end in between (0 = off; the "
                             "reference's DeepCache is 3)")
    parser.add_argument("--window", type=int, default=defaults.window, help="frames per UNet call (at most 24)")
    parser.add_argument("--audio-longer", choices=AUDIO_LONGER, default=defaults.audio_longer,
                        help="audio longer than the video: loop the video back and forth, or freeze its last frame")
    parser.add_argument("--audio-shorter", choices=AUDIO_SHORTER, default=defaults.audio_shorter,
                        help="audio shorter than the video: stop with the audio, or keep the rest unchanged")
    parser.add_argument("--fps", type=parse_fps, default=25.0, help="frame rate for a still image")
    parser.add_argument("--seamless", action="store_true", help="overlap whisper's 30 s windows (long audio)")
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


def unet_choice(checkpoint: str, config: str) -> tuple[str | dict, int, str]:
    """(config for load_unet, crop resolution, how it was chosen) for `--config`."""
    from ..unet.files import choose_config

    if config.lower().endswith(".json"):
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"UNet config file not found: {path}")
        data = json.loads(path.read_text(encoding="utf-8"))
        inner = data.get("unet_config", data)
        return inner, int(data.get("resolution", 8 * inner.get("sample_size", 32))), f"config file {path.name}"
    choice = choose_config(checkpoint, config)
    return choice.config, choice.resolution, choice.source


def lipsync_command(args: argparse.Namespace) -> dict:
    """Run the `lipsync` command; returns the JSON summary the CLI prints."""
    from ..media.audio import load_audio
    from ..audio.features import extract_features
    from ..face.detect import check_selection, detect_faces, make_detector
    from ..sample.sampler import lipsync
    from ..unet.loading import load_unet
    from ..sample.vae import load_vae
    from ..media.video import check_crf, read_frames, write_video
    from ..audio.whisper import load_whisper_encoder

    started = time.perf_counter()
    settings = SamplerSettings(
        scheduler=args.scheduler, steps=args.steps, guidance=args.guidance, seed=args.seed,
        deepcache_interval=args.deepcache, window=args.window, vad_policy=args.vad, min_silence_s=args.min_silence,
        crossfade_frames=args.crossfade, fast_steps=args.fast_steps, audio_longer=args.audio_longer,
        audio_shorter=args.audio_shorter)
    settings.validate()
    check_selection(args.select, args.index, args.position)
    check_crf(args.crf)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[args.dtype] if args.dtype != "auto" else (torch.float16 if device.type == "cuda" else torch.float32)

    frames, fps = read_frames(args.video)
    still = fps is None
    fps = args.fps if still else fps
    waveform, sample_rate = load_audio(args.audio)
    segments = None
    if settings.vad_policy != "off":
        from ..audio.vad import detect_speech

        segments = detect_speech(waveform, sample_rate, threshold=args.vad_threshold)
    encoder = load_whisper_encoder(args.whisper, device=device)
    features = extract_features(waveform, sample_rate, encoder, fps=fps, segments=segments,
                                crossfade_frames=settings.crossfade_frames, seamless=args.seamless)
    del encoder

    config, resolution, config_source = unet_choice(args.unet, args.config)
    unet = load_unet(args.unet, config, dtype=dtype, device=device)
    vae = load_vae(args.vae, device=device, dtype=dtype)
    options = {"models_dir": args.insightface_dir} if args.detector == "insightface" else {}
    track = detect_faces(frames, make_detector(args.detector, **options), select=args.select, index=args.index,
                         position=args.position)

    def progress(done: int, total: int) -> None:
        if not args.quiet:
            print(f"\rlipsync: step {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)

    result = lipsync(frames, features, unet, vae, settings, speech=segments, resolution=resolution,
                     track=track, device=device, progress=progress, output_dtype=torch.uint8)
    write_video(args.out, result.frames, fps, audio=args.audio, crf=args.crf)
    return {"out": str(args.out), "frames": len(result.frames), "input_frames": len(frames), "fps": round(fps, 6),
            "still_image": still, "width": int(result.frames.shape[2]) // 2 * 2,
            "height": int(result.frames.shape[1]) // 2 * 2, "generated_frames": int(result.generated.sum()),
            "resolution": resolution, "config": config_source, "device": str(device),
            "dtype": str(dtype).removeprefix("torch."), "settings": vars(settings),
            "unet_passes": {"full": result.stats["full_passes"], "shallow": result.stats["shallow_passes"]},
            "seconds": round(time.perf_counter() - started, 3)}
