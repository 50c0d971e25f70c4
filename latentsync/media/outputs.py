"""Output paths checked before a command starts: no command writes over one of its inputs.

Two spellings of one file (`V.mp4`, `./V.mp4`, an absolute path, a symbolic link, a hard link) are the same
file when the operating system says so: same device and inode once links are followed. The output is refused
when it is any input, and when it names an existing folder where a file is to be written (a run would fail only
at its very end), so the user hears of it in the first second, not after the run.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

PathLike = str | os.PathLike


class OutputClash(ValueError):
    """An output path that would write over an input, or that names a folder where a file is wanted."""


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether `a` and `b` are one file (links followed); False when either does not exist."""
    try:
        first, second = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def _spelling(path: Path, other: Path) -> str:
    """How `path` reaches the same file as `other`, when the two names differ: the note a user needs."""
    if path.is_symlink() or other.is_symlink():
        return " (through a symbolic link)"
    if os.path.realpath(path) != os.path.realpath(other):
        return " (a hard link to it)"
    return ""


def check_output(out: PathLike, inputs: Mapping[str, PathLike | None], *, flag: str = "--out") -> Path:
    """Refuse `out` (raise `OutputClash`, one line) when it is one of `inputs` (`{"--video": path, ...}`; None
    entries are skipped) or an existing folder. Returns `out` as a `Path`."""
    out = Path(out)
    if out.is_dir():
        raise OutputClash(f"{flag} {out} is an existing folder; give the output file's name, e.g. "
                          f"{out / 'output.mp4'}")
    _refuse_inputs(out, inputs, flag)
    return out


def check_output_folder(folder: PathLike, files: Iterable[str], inputs: Mapping[str, PathLike | None], *,
                        flag: str = "--out") -> Path:
    """As `check_output` for a command that writes (and replaces) `files` inside `folder`: `folder` must not be
    an existing file, and none of the files may be an input."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputClash(f"{flag} {folder} is an existing file; give a folder for the outputs")
    for name in files:
        _refuse_inputs(folder / name, inputs, f"{flag} {folder}: the output")
    return folder


def _refuse_inputs(out: Path, inputs: Mapping[str, PathLike | None], flag: str) -> None:
    for name, path in inputs.items():
        if path is not None and same_file(out, path):
            raise OutputClash(f"{flag} {out} is the same file as {name} {path}{_spelling(out, Path(path))}; "
                              f"nothing was written: choose another output name, the input is never written over")
