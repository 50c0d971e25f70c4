"""Where a UNet's configuration comes from, and where users get the official weights.

The official 1.5 (256 px) and 1.6 (512 px) checkpoints have identical keys, so the file alone cannot say
which it is. In order: a JSON config beside the checkpoint (`<name>.json` or `config.json`, the
reference's `unet_config` format, optionally with `"resolution"`), the user's choice, what a file written by
`convert` says in its metadata (GGUF, safetensors), or the file's path (`1.6` or `512` in it means 1.6;
anything else 1.5).
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..catalogue import CATALOGUE
from ..checkpoint import file_metadata

log = logging.getLogger(__name__)

# version -> (hub repository, file in it, face crop resolution)
OFFICIAL = {version: (CATALOGUE[f"unet_{version}"].source, CATALOGUE[f"unet_{version}"].source_file, resolution)
            for version, resolution in (("1.5", 256), ("1.6", 512))}
VERSIONS = ("auto", *OFFICIAL)
# Both official files hold the same float32 state dict (the reference's key list: 1,267,099,844 parameters and
# 844,800 buffer values, 5.07 GB). torch's file format adds well under a MiB around the tensors; the slack also
# covers buffers stored once where modules share them. A file outside this range is not the official one.
OFFICIAL_SIZE_RANGE = (1_267_099_844 * 4, 1_267_944_644 * 4 + 64 * 2**20)


@dataclass(frozen=True)
class UNetChoice:
    config: str | dict  # "1.5", "1.6" or a reference-format config dict
    resolution: int  # face crop size in pixels
    source: str  # how the choice was made, for the user


def config_file(path: str | Path) -> UNetChoice:
    """The choice a JSON config file makes: the reference's `unet_config` format, optionally with "resolution"."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"UNet config file not found: {path}")
    data = json.loads(path.read_text(encoding="utf-8"))
    config = data.get("unet_config", data)
    resolution = int(data.get("resolution", 8 * config.get("sample_size", 32)))
    return UNetChoice(config=config, resolution=resolution, source=f"config file {path.name}")


def choose_config(checkpoint: str | Path, version: str = "auto") -> UNetChoice:
    """Pick the config and resolution for `checkpoint` (see the module docstring for the order); `version` may
    also name a JSON config file, which then comes first."""
    if version.lower().endswith(".json"):
        return config_file(version)
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {', '.join(VERSIONS)}, got {version!r}")
    path = Path(checkpoint)
    for candidate in (path.with_suffix(".json"), path.parent / "config.json"):
        if candidate.is_file():
            return config_file(candidate)
    stored = stored_choice(path) if version == "auto" else None
    if stored is not None:
        return stored
    if version == "auto":
        # "1.6", "1_6", "16" or "512" anywhere in the path (a folder named for the version, a Hugging Face cache's
        # models--ByteDance--LatentSync-1.6), but not inside a longer number such as a run's "pytest-160".
        version = "1.6" if re.search(r"(?<![\d.])(1[._-]?6|512)(?![\d])", str(path)) else "1.5"
        source = f"version {version} guessed from the file path (set version to override)"
    else:
        source = f"version {version} chosen"
    return UNetChoice(config=version, resolution=OFFICIAL[version][2], source=source)


def stored_choice(path: str | Path) -> UNetChoice | None:
    """The version (or config) and resolution a converted file names in its metadata, or None."""
    meta = file_metadata(path)
    version, config, resolution = (meta.get(f"latentsync.{key}") for key in ("version", "config", "resolution"))
    if version in OFFICIAL:
        return UNetChoice(config=version, resolution=OFFICIAL[version][2],
                          source=f"version {version} from the file's metadata")
    if config:
        return UNetChoice(config=json.loads(config), resolution=int(resolution or 256),
                          source="config from the file's metadata")
    return None


def where_to_get(version: str, folder: str | Path) -> str:
    repo, name, _ = OFFICIAL[version]
    return (f"download {name} from https://huggingface.co/{repo} and put it in {Path(folder) / version}/ "
            f"(or pick 'download {version}' in the loader when online)")


@dataclass(frozen=True)
class OfficialFile:
    path: Path
    note: str  # what happened, for the user: downloaded, or a file already there used


def download_official(version: str, folder: str | Path) -> OfficialFile:
    """Fetch the official UNet into `folder/<version>/`; only ever called when the user asked for it.

    A file already at the target is used as it is (huggingface_hub does not download it again, and offline it
    cannot check it), so its size is checked here first and the note says it was reused; when the hub is
    reachable, huggingface_hub also compares its sha256 with the hub's before trusting it.
    """
    repo, name, _ = OFFICIAL[version]
    target = Path(folder) / version
    existing = target / name
    before = None
    if existing.is_file():
        check_official_size(existing, version)
        before = existing.stat().st_mtime_ns
    try:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(repo_id=repo, filename=name, local_dir=target))
    except Exception as exc:  # offline, hub unreachable, no huggingface_hub: say what to do by hand
        raise RuntimeError(f"could not download {repo}/{name} ({type(exc).__name__}: {str(exc)[:200]}); "
                           f"{where_to_get(version, folder)}") from exc
    size = f"{path.stat().st_size / 1e9:.2f} GB"
    # Online, huggingface_hub replaces a file whose sha256 is not the hub's, which changes its time stamp.
    if before is not None and path.stat().st_mtime_ns == before:
        note = f"used the file already at {path} ({size}, the official size) instead of downloading it"
    else:
        note = f"downloaded {repo}/{name} to {path} ({size})"
    log.info("LatentSync UNet %s: %s", version, note)
    return OfficialFile(path=path, note=note)


def check_official_size(path: Path, version: str) -> None:
    """Refuse a file at the official file's place whose size is not the official file's (a copy cut short, or
    another model saved under its name): it would be used instead of downloading."""
    size = path.stat().st_size
    low, high = OFFICIAL_SIZE_RANGE
    if not low <= size <= high:
        raise ValueError(f"{path} is {size:,} bytes, but the official LatentSync {version} UNet is "
                         f"{low / 1e9:.2f} GB; it is an interrupted download or another file: delete it and pick "
                         f"'download {version}' again")
