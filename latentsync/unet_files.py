"""Where a UNet's configuration comes from, and where users get the official weights.

The official 1.5 (256 px) and 1.6 (512 px) checkpoints have identical keys, so the file alone cannot say
which it is. In order: a JSON config beside the checkpoint (`<name>.json` or `config.json`, the
reference's `unet_config` format, optionally with `"resolution"`), the user's choice, or the file's path
(`1.6` or `512` in it means 1.6; anything else 1.5).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

OFFICIAL = {  # version -> (hub repository, file in it, face crop resolution)
    "1.5": ("ByteDance/LatentSync-1.5", "latentsync_unet.pt", 256),
    "1.6": ("ByteDance/LatentSync-1.6", "latentsync_unet.pt", 512),
}
VERSIONS = ("auto", *OFFICIAL)


@dataclass(frozen=True)
class UNetChoice:
    config: str | dict  # "1.5", "1.6" or a reference-format config dict
    resolution: int  # face crop size in pixels
    source: str  # how the choice was made, for the user


def choose_config(checkpoint: str | Path, version: str = "auto") -> UNetChoice:
    """Pick the config and resolution for `checkpoint` (see the module docstring for the order)."""
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {', '.join(VERSIONS)}, got {version!r}")
    path = Path(checkpoint)
    for candidate in (path.with_suffix(".json"), path.parent / "config.json"):
        if candidate.is_file():
            data = json.loads(candidate.read_text())
            config = data.get("unet_config", data)
            resolution = int(data.get("resolution", 8 * config.get("sample_size", 32)))
            return UNetChoice(config=config, resolution=resolution, source=f"config file {candidate.name}")
    if version == "auto":
        version = "1.6" if re.search(r"1[._-]?6|512", str(path)) else "1.5"
        source = f"version {version} guessed from the file path (set version to override)"
    else:
        source = f"version {version} chosen"
    return UNetChoice(config=version, resolution=OFFICIAL[version][2], source=source)


def where_to_get(version: str, folder: str | Path) -> str:
    repo, name, _ = OFFICIAL[version]
    return (f"download {name} from https://huggingface.co/{repo} and put it in {Path(folder) / version}/ "
            f"(or pick 'download {version}' in the loader when online)")


def download_official(version: str, folder: str | Path) -> Path:
    """Fetch the official UNet into `folder/<version>/`; only ever called when the user asked for it."""
    repo, name, _ = OFFICIAL[version]
    target = Path(folder) / version
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id=repo, filename=name, local_dir=target))
    except Exception as exc:  # offline, hub unreachable, no huggingface_hub: say what to do by hand
        raise RuntimeError(f"could not download {repo}/{name} ({type(exc).__name__}: {str(exc)[:200]}); "
                           f"{where_to_get(version, folder)}") from exc
