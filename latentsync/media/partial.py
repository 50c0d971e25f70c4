"""The finished part of an output file, kept beside it (`OUT.mp4.partial/`) until the output is complete.

It holds `job.json` (what the output is made from: the inputs' sizes and a hash of their ends, the model
files', every setting), the first pass's results (`faces.npz`) and one file per finished segment. A run with
`resume=True` takes what is there when `job.json` matches, and refuses with the differences when it does not;
a run without it refuses to touch a partial output it would otherwise lose.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from .segments import segment_frames, written_whole

SEGMENT_SUFFIX = ".mp4"


def file_identity(path: str | Path) -> dict:
    """A file's size and a SHA-256 of its first and last MiB: cheap, and changed by any edit that matters."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.read(1 << 20))
        if size > 2 << 20:
            handle.seek(-(1 << 20), os.SEEK_END)
            digest.update(handle.read(1 << 20))
    return {"size": size, "sha256_ends": digest.hexdigest()}


class ResumeRefused(ValueError):
    """A partial output that cannot be continued with these inputs and settings, or would be lost."""


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """What changed from `old` to `new` (nested records), one "key: OLD then, NEW now" each."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} then, {b!r} now")
    return out


class PartialOutput:
    """`OUT.partial/` for the output `out` of the job described by `job` (JSON-able)."""

    def __init__(self, out: str | Path, job: dict, resume: bool):
        self.out = Path(out)
        self.folder = self.out.with_name(self.out.name + ".partial")
        self.job = json.loads(json.dumps(job))  # as it reads back from the file
        manifest = self.folder / "job.json"
        if self.folder.exists():
            if not resume:
                raise ResumeRefused(f"{self.folder} is left from an earlier run of this output and holds "
                                    f"{self._contents()}: add --resume to continue it, or delete the folder to "
                                    f"start over")
            try:
                old = json.loads(manifest.read_text())
            except (OSError, ValueError):
                old = None
            if old is None:
                raise ResumeRefused(f"{manifest} is missing or unreadable, so {self.folder} cannot be checked "
                                    f"against this run; delete the folder to start over")
            changes = differences(old, self.job)
            if changes:
                raise ResumeRefused(f"--resume with other inputs or settings than the run that left {self.folder}: "
                                    + "; ".join(changes) + ". Run with the same ones, or delete the folder to "
                                    "start over")
        else:
            self.folder.mkdir(parents=True)
            self._write_text(manifest, json.dumps(self.job, indent=1, sort_keys=True))

    def _contents(self) -> str:
        """What the folder holds, as the refusal says it: segments are written whole or not at all (`written_whole`),
        so each segment file is a finished one."""
        segments = sum(1 for path in self.folder.glob(f"*{SEGMENT_SUFFIX}") if path.is_file())
        if segments:
            return f"{segments} finished segment{'s' if segments > 1 else ''}"
        if (self.folder / "faces.npz").is_file():
            return "its face track, but no finished segment yet"
        return "only its settings (it stopped before its face track was done)"

    def _write_text(self, path: Path, text: str) -> None:
        with written_whole(path, path.with_name(path.name + ".tmp")) as temporary:
            temporary.write_text(text)

    def segment_path(self, name: str) -> Path:
        return self.folder / f"{name}{SEGMENT_SUFFIX}"

    def keep_segment(self, name: str, data: bytes) -> Path:
        """Store an encoded segment made elsewhere (a Ray worker), whole or not at all."""
        path = self.segment_path(name)
        with written_whole(path, path.with_name(path.name + ".tmp"), "the segments finished before it are kept") \
                as temporary:
            temporary.write_bytes(data)
        return path

    def finished(self, segments) -> frozenset[str]:
        """Names of `segments` whose file is here and whole (as many frames as the segment has)."""
        done = set()
        for segment in segments:
            path = self.segment_path(segment.name)
            if path.is_file():
                try:
                    whole = segment_frames(path) == len(segment)
                except Exception:  # a file that does not open is not finished; it is made again
                    whole = False
                if whole:
                    done.add(segment.name)
        return frozenset(done)

    def save_arrays(self, name: str, **arrays) -> None:
        with written_whole(self.folder / f"{name}.npz", self.folder / f"{name}.tmp.npz") as temporary:
            np.savez(temporary, **arrays)

    def load_arrays(self, name: str) -> dict | None:
        path = self.folder / f"{name}.npz"
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
