"""Command line: `python -m latentsync COMMAND ...`; each command prints JSON on stdout."""
from __future__ import annotations

import argparse
import json
import sys

from . import vad as vad_lib
from .audio import AudioError, load_audio
from .cli_experiment import add_experiment_parser
from .cli_faces import add_faces_parser
from .cli_features import add_features_parser
from .cli_lipsync import add_lipsync_parser
from .cli_score import add_score_parser
from .cli_upscale import add_upscale_parser


def _vad(args: argparse.Namespace) -> dict:
    waveform, sample_rate = load_audio(args.audio)
    segments = vad_lib.detect_speech(
        waveform, sample_rate, threshold=args.threshold, min_speech_ms=args.min_speech_ms,
        min_silence_ms=args.min_silence_ms, padding_ms=args.padding_ms, backend=args.backend,
        model_path=args.model)
    return segments.to_json()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m latentsync", description="LatentSync lip-sync tools.")
    commands = parser.add_subparsers(dest="command", required=True)

    vad = commands.add_parser("vad", help="find speech in an audio file; prints "
                                          '{"duration": s, "speech": [[start_s, end_s], ...]}')
    vad.add_argument("audio", help="audio or video file (wav, flac, mp3, m4a, mp4, ...)")
    vad.add_argument("--threshold", type=float, default=0.5, help="speech probability threshold (0-1)")
    vad.add_argument("--min-speech-ms", type=int, default=250, help="drop speech shorter than this")
    vad.add_argument("--min-silence-ms", type=int, default=100, help="pauses shorter than this do not split speech")
    vad.add_argument("--padding-ms", type=int, default=30, help="widen each segment by this on both sides")
    vad.add_argument("--backend", choices=vad_lib.BACKENDS, default="jit",
                     help="silero-vad (jit or onnx, shipped in its wheel) or pyannote (optional extra)")
    vad.add_argument("--model", help="pyannote backend: a local segmentation checkpoint (pytorch_model.bin)")
    vad.set_defaults(run=_vad)

    add_features_parser(commands)
    add_faces_parser(commands)
    add_score_parser(commands)
    add_upscale_parser(commands)
    add_lipsync_parser(commands)
    add_experiment_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
    except (AudioError, FileNotFoundError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0
