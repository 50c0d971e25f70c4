"""`python -m latentsync convert IN --to FORMAT --out OUT`: a UNet checkpoint in another storage (`unet/convert.py`);
prints a summary: sizes, the storage of each tensor, and that the written file loaded back."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..unet.convert import TARGET, Conversion, convert_unet
from ..unet.files import VERSIONS
from .options import add_option


def add_convert_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert", help="write a LatentSync UNet as GGUF (Q8_0 ... Q4_0), fp8 or safetensors; prints a summary")
    parser.add_argument("checkpoint", help="latentsync_unet.pt (or a float .safetensors of it)")
    add_option(parser, TARGET, required=True)
    parser.add_argument("--out", required=True, help="the file to write (.gguf for gguf-*, else .safetensors)")
    parser.add_argument("--version", default="auto", help=f"{', '.join(VERSIONS)} or a config JSON, as the loader "
                                                          "takes it (auto: a JSON beside the file, else its path)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(run=_convert)
    return parser


def _convert(args: argparse.Namespace) -> dict:
    tty, shown = sys.stderr.isatty(), [-1]

    def progress(done: int, total: int) -> None:
        """A terminal's line updated in place; a file or pipe gets a line per tenth, never carriage-return runs."""
        percent = 100 * done // total
        if args.quiet or (not tty and percent // 10 == shown[0] // 10) or percent == shown[0]:
            return
        shown[0] = percent
        end = "\n" if done == total or not tty else ""
        print(f"{chr(13) if tty else ''}convert: {percent}%", end=end, file=sys.stderr, flush=True)

    return convert_unet(Conversion(Path(args.checkpoint), args.to, Path(args.out), args.version), progress)
