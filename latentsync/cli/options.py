"""A flag per declared option (`core/options.Option`): its name with dashes, default, help and the values it
takes all come from the declaration, and argparse refuses a bad value in one line naming the flag."""
from __future__ import annotations

import argparse
from typing import Any

from ..core.options import Option


def option_type(option: Option):
    """argparse's `type=` for `option`: the text parsed and checked against the declaration."""
    def parse(text: str) -> Any:
        try:
            return option.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = option.name
    parse.option = option  # what the flag was made from (tests compare flags with their declarations)
    return parse


def add_option(parser: argparse.ArgumentParser, option: Option, *aliases: str, flag: str | None = None,
               help: str | None = None, **extra) -> argparse.Action:  # noqa: A002 (argparse's word)
    """Add `option` as `flag` (default `option.flag`) and earlier spellings `aliases`, stored under the flag's
    name. `help` replaces the declaration's line (a command's own wording); `extra` goes to argparse (`action`,
    `nargs`, a `default` where a missing flag means something of its own, ...). A bool option is a switch,
    `--NAME` / `--no-NAME`."""
    flag = flag or option.flag
    dest = flag.removeprefix("--").replace("-", "_")  # the option's name, or a command's own (--vad-threshold)
    shown = extra.get("default", option.default)  # a command's own default where a missing flag means its own
    text = f"{help or option.help} Default: {shown}." if shown is not None else (help or option.help)
    if option.kind is bool:
        given = {"action": argparse.BooleanOptionalAction, "default": option.default}
    else:
        given = {"type": option_type(option), "choices": option.choices, "default": option.default}
    return parser.add_argument(flag, *aliases, dest=dest, help=text, **(given | extra))


def add_options(parser: argparse.ArgumentParser, options: tuple[Option, ...], **extra) -> None:
    """`add_option` for each of `options`, under their own flags."""
    for option in options:
        add_option(parser, option, **extra)
