"""Command line: `python -m latentsync COMMAND ...`; each command prints JSON on stdout.

A failure is one line `error: ...` on stderr with exit code 2 (130 when interrupted); `--debug` (before or
after the command) prints the traceback as well. A command whose JSON has `warnings` (no face found, nothing
generated, a rotated video read upright, ...) also prints each as a line `warning: ...` on stderr.

`--debug` also prints the pack's log at DEBUG as lines `debug: ...`, with what its libraries say as they load
(a normal run keeps that off stderr: `process_state.hushed`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import traceback
from typing import Iterator, NoReturn

from ..audio import vad as vad_lib
from ..media.audio import load_audio
from ..core.errors import error_line, join_lines
from .convert import add_convert_parser
from .experiment import add_experiment_parser
from .faces import add_faces_parser
from .features import add_features_parser
from .lipsync import add_lipsync_parser
from .options import add_options
from .prepare import add_prepare_parser
from .score import add_score_parser
from .upscale import add_upscale_parser


def _vad(args: argparse.Namespace) -> dict:
    waveform, sample_rate = load_audio(args.audio)
    segments = vad_lib.detect_speech(
        waveform, sample_rate, threshold=args.threshold, min_speech_ms=args.min_speech_ms,
        min_silence_ms=args.min_silence_ms, padding_ms=args.padding_ms, backend=args.backend,
        model_path=args.model)
    return segments.to_json()


DEBUG_HELP = "print the traceback of an error, and the pack's log with what its libraries say as they load"


class _Parser(argparse.ArgumentParser):
    """Refuses a bad value in one line too (argparse's own error prints the whole usage first); the
    subcommands' parsers are of this class as well."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {join_lines(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m latentsync", description="LatentSync lip-sync tools.",
                     epilog="Errors are one line on stderr (exit code 2); --debug adds the traceback.")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", required=True)

    vad = commands.add_parser("vad", help="find speech in an audio file; prints "
                                          '{"duration": s, "speech": [[start_s, end_s], ...]}')
    vad.add_argument("audio", help="audio or video file (wav, flac, mp3, m4a, mp4, ...)")
    add_options(vad, vad_lib.VAD_OPTIONS)  # --threshold, --min-speech-ms, ... as the VAD node's inputs
    vad.add_argument("--model", help="pyannote backend: a local segmentation checkpoint (pytorch_model.bin)")
    vad.set_defaults(run=_vad)

    add_features_parser(commands)
    add_faces_parser(commands)
    add_score_parser(commands)
    add_upscale_parser(commands)
    add_lipsync_parser(commands)
    add_experiment_parser(commands)
    add_convert_parser(commands)
    add_prepare_parser(commands)
    for command in commands.choices.values():
        # SUPPRESS: without the flag after the command, the value given before it stays.
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


class _StderrLines(logging.Handler):
    """Each record as a line `debug: LOGGER: MESSAGE` on the `sys.stderr` of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"debug: {record.name}: {record.getMessage()}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def debug_log(on: bool) -> Iterator[None]:
    """With `on` (--debug), the `latentsync` loggers at DEBUG on stderr for the block; else nothing changes."""
    if not on:
        yield
        return
    logger, handler = logging.getLogger("latentsync"), _StderrLines()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """Run one command. A command returns the JSON to print, or (JSON, exit code) when a run that finished
    still has something to report in its exit code (the experiment: some configurations failed)."""
    args = build_parser().parse_args(argv)
    try:
        with debug_log(args.debug):
            result = args.run(args)
    except KeyboardInterrupt as exc:
        print(f"error: interrupted{f'; {exc}' if str(exc) else ''}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 -- any failure becomes one line; the traceback is opt-in
        if args.debug:
            traceback.print_exc()
        print(f"error: {error_line(exc)}", file=sys.stderr)
        return 2
    result, code = result if isinstance(result, tuple) else (result, 0)
    for warning in result.get("warnings", ()):  # also in the JSON; a run that changed nothing says so here too
        print(f"warning: {warning}", file=sys.stderr)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return code
