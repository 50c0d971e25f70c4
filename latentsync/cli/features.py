"""`python -m latentsync features`: whisper features and per-frame chunks of an audio file, to safetensors."""
from __future__ import annotations

import argparse
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..media.audio import load_audio
from ..media.outputs import check_output
from ..audio.features import FPS, extract_features
from ..audio.vad import THRESHOLD, detect_speech
from ..audio.whisper import load_whisper_encoder
from ..sample.frame_plan import speech_weights
from ..sample.settings import SETTING
from .options import add_option

SPEECH_POLICIES = ("keep", "silence")


def parse_fps(text: str) -> float:
    """A frame rate as a number or a ratio, so NTSC can be given exactly as 30000/1001; checked against the
    declaration (`audio/features.FPS`)."""
    try:
        fps = float(Fraction(text))
    except (ValueError, ZeroDivisionError) as exc:
        raise argparse.ArgumentTypeError(f"not a frame rate: {text!r}") from exc
    problem = FPS.problem(fps)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return fps


def add_features_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "features", help="whisper features [L, 5, 384] and per-frame chunks [N, 50, 384] of an audio file, "
                         "written to safetensors; prints a summary")
    parser.add_argument("audio", help="audio or video file (wav, flac, mp3, m4a, mp4, ...)")
    parser.add_argument("--whisper", required=True, help="openai whisper checkpoint (LatentSync's "
                                                         "checkpoints/whisper/tiny.pt)")
    add_option(parser, FPS, type=parse_fps, help="Video frame rate, e.g. 25, 29.97 or 30000/1001.")
    parser.add_argument("--frames", type=int, default=None,
                        help="video frames to make chunks for (default: LatentSync's count for this audio)")
    parser.add_argument("--speech-policy", choices=SPEECH_POLICIES, default="keep",
                        help="keep: the reference; silence: frames outside speech (silero VAD) get the "
                             "features of digital silence")
    add_option(parser, THRESHOLD, flag="--vad-threshold")
    add_option(parser, SETTING["crossfade_frames"], help="Frames over which silence fades in at the edges of speech.")
    parser.add_argument("--seamless", action="store_true",
                        help="overlap the 30 s whisper spans so the features do not jump every 30 s")
    parser.add_argument("--device", default="cpu", help="torch device for the encoder, e.g. cpu or cuda")
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.set_defaults(run=features_command)
    return parser


def features_command(args: argparse.Namespace) -> dict:
    """Run the `features` command; returns the JSON summary the CLI prints."""
    from safetensors.torch import save_file

    check_output(args.out, {"audio": args.audio, "--whisper": args.whisper})
    waveform, sample_rate = load_audio(args.audio)
    segments = None
    if args.speech_policy == "silence":
        segments = detect_speech(waveform, sample_rate, threshold=args.vad_threshold)
    encoder = load_whisper_encoder(args.whisper, device=args.device)
    result = extract_features(waveform, sample_rate, encoder, fps=args.fps, frames=args.frames,
                              segments=segments, seamless=args.seamless)
    # The file holds the chunks a sampler would be given: with "silence", blended as the frame plan's
    # "silence" policy blends them.
    weight = np.ones(result.frames, dtype=np.float32)
    if args.speech_policy == "silence":
        weight = speech_weights(result.speech_mask.numpy(), args.crossfade_frames)
    chunks = result.mixed_chunks(np.arange(result.frames), weight)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {**result.summary(), "speech_policy": args.speech_policy}
    del summary["speech_segments"]
    if segments is not None:
        summary["speech"] = segments.to_json()["speech"]
    save_file({"features": result.features, "chunks": chunks.contiguous(), "speech_mask": result.speech_mask,
               "speech_weight": torch.from_numpy(weight)},
              str(out), metadata={key: json.dumps(value) for key, value in summary.items()})
    return {"out": str(out), **summary}
