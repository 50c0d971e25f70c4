"""A prepared video: the work LatentSync does on a video before any voice counts, kept for every later voice.

The face track, the alignment smoothed over it, the crops and masks, and the VAE latents of the masked and the
reference faces depend on the video alone. A prepared video keeps the alignment of every frame the sampler sees
(the crops and masks are warped from it again in milliseconds; crops given by the user are kept as they are) and
the VAE's deterministic part of every frame with a face (`denoise.face_moments`: a posterior-sampling VAE still
draws from it per window with the run's seed). A run with another voice then skips the faces pass and every VAE
encode, and gives the same frames bit for bit (`denoise.fixed_batches` says why the latents are equal).

On disk it is a folder of data only: `prepared.json` (what it was made from, `identity`, with each file's size
and SHA-256), `faces.safetensors` (the alignment, and the input frames' timestamps) and `latents/START-STOP.
safetensors`, `SEGMENT` frames each, written and read one at a time. A folder made from another video or with
other settings is refused with the differences; a damaged file is named. Deleting it loses nothing but time.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ..core.digest import tensor_digest
from ..core.options import Option
from ..face.window_crops import ClipFaces
from ..media.partial import differences
from ..media.segments import written_whole

FORMAT = 1
MANIFEST = "prepared.json"
SEGMENT = 128  # frames per latents file
KEPT_SEGMENTS = 2  # latents files held in memory while a run reads them (windows go forward, or back by one)
PREPARED = Option("prepared", None, "Folder of the video's faces and VAE latents: made on the first run, reused by "
                  "later runs with other audio.")
REBUILD_PREPARED = Option("rebuild_prepared", False, "Make the prepared folder again (after it was damaged, or for "
                          "another video or settings).")
REBUILD = "make it again (--rebuild-prepared; the Prepare Video node: rebuild) or delete it"


class PreparedError(ValueError):
    """A prepared video that cannot be used here: made for another video or settings, unfinished or damaged."""


def prepared_identity(video: dict, face: dict, resolution: int, vae: dict, device: str, fps: float | None) -> dict:
    """Everything a prepared video's contents depend on: the video (`video`: its file's SHA-256, or the frames'
    digest), how its faces were found (`face`), the crops' size, the VAE (`vae`: its weights, dtype and what
    changes its moments), the device type, and the frame rate a variable-rate video is retimed to."""
    return {"format": FORMAT, "video": video, "face": face, "resolution": int(resolution), "vae": vae,
            "device": str(device), "fps": None if fps is None else round(float(fps), 6)}


def frames_identity(frames: torch.Tensor) -> dict:
    """A clip of IMAGE frames named by its content."""
    return {"frames": int(frames.shape[0]), "size": [int(frames.shape[1]), int(frames.shape[2])],
            "sha256": tensor_digest(frames)}


def segment_name(start: int) -> str:
    return f"latents/{start:08d}-{start + SEGMENT:08d}.safetensors"


@dataclass
class PreparedVideo:
    """The faces of the sampler's frames (`faces`, `ClipFaces`) and their VAE moments, in memory or in `folder`.
    `pts`/`truncated`: the input file's frame timestamps and where it stopped early (None for frames given as
    tensors), so a streamed run need not scan the file again."""

    identity: dict
    faces: ClipFaces
    pts: np.ndarray | None = None
    truncated: str | None = None
    folder: Path | None = None
    files: dict = field(default_factory=dict)  # name -> {"bytes", "sha256"} of the folder's files
    _segments: dict = field(default_factory=dict)  # start -> {"index", "masked", "reference"}, newest last

    def __len__(self) -> int:
        return len(self.faces)

    # -- reading ---------------------------------------------------------------------------------------------
    def _segment(self, start: int) -> dict:
        if start in self._segments:
            self._segments[start] = self._segments.pop(start)  # newest last
            return self._segments[start]
        if self.folder is None:
            raise PreparedError(f"the prepared video has no latents for frames {start}-{start + SEGMENT - 1}")
        name = segment_name(start)
        self._segments[start] = read_checked(self.folder, name, self.files.get(name))
        while len(self._segments) > KEPT_SEGMENTS:
            self._segments.pop(next(iter(self._segments)))
        return self._segments[start]

    def window_moments(self, indices) -> torch.Tensor:
        """`[2n, ...]`: the moments of the masked faces of the sampler's frames `indices` (repeats allowed), then
        those of their reference faces: what `denoise.face_moments` makes of the same frames."""
        masked, reference = [], []
        for index in np.asarray(indices, np.int64).tolist():
            segment = self._segment(index // SEGMENT * SEGMENT)
            rows = np.flatnonzero(segment["index"].numpy() == index)
            if len(rows) == 0:
                raise PreparedError(f"frame {index} has no face in the prepared video, but the run asks for it")
            masked.append(segment["masked"][rows[0]])
            reference.append(segment["reference"][rows[0]])
        return torch.stack(masked + reference)

    def check_frames(self, frames: torch.Tensor) -> None:
        """Refuse IMAGE frames other than those it was made from (their digest), or any when it was made from a
        file (frames decoded elsewhere need not be the same)."""
        if "frames" not in self.identity["video"]:
            raise PreparedError(f"the prepared video was made from the file {self.identity['video'].get('file')}; "
                                "for IMAGE frames prepare those frames")
        self.check({**self.identity, "video": frames_identity(frames)})

    def check(self, identity: dict, where: str = "the prepared video") -> None:
        """Refuse to use it for another video or other settings, with what differs."""
        changes = differences(self.identity, json.loads(json.dumps(identity)))
        if changes:
            raise PreparedError(f"{where} was made from another video or with other settings: " + "; ".join(changes)
                                + f". Give another folder, or {REBUILD}")

    # -- writing ---------------------------------------------------------------------------------------------
    def put(self, start: int, index: np.ndarray, masked: torch.Tensor, reference: torch.Tensor) -> None:
        """Keep the moments of frames `index` (those with a face among `start ... start + SEGMENT - 1`): in
        memory, or as one file of the folder."""
        tensors = {"index": torch.as_tensor(np.asarray(index, np.int64)), "masked": masked.contiguous().cpu(),
                   "reference": reference.contiguous().cpu()}
        if self.folder is None:
            self._segments[start] = tensors
        else:
            self.files[segment_name(start)] = write_checked(self.folder, segment_name(start), tensors)

    def save(self, folder: str | Path) -> "PreparedVideo":
        """This prepared video written to `folder` (new or empty, or one of ours, which is replaced); returns it
        backed by the folder. Only one made in memory has all its latents here to write."""
        if self.folder is not None:
            raise PreparedError(f"the prepared video is already kept in {self.folder}")
        target = start_folder(folder, self.identity)
        for start, tensors in sorted(self._segments.items()):
            target.put(start, tensors["index"].numpy(), tensors["masked"], tensors["reference"])
        target.faces = self.faces
        target.finish()
        return target

    def finish(self) -> None:
        """Write the faces and the manifest: the folder is complete (a folder without it is made again)."""
        faces = self.faces
        arrays = {"matrices": faces.matrices.contiguous(), "valid": torch.from_numpy(faces.valid.astype(np.uint8))}
        if faces.crops is not None:
            arrays["crops"] = faces.crops.contiguous()
        if self.pts is not None:
            arrays["pts"] = torch.from_numpy(np.asarray(self.pts, np.int64))
        self.files["faces.safetensors"] = write_checked(self.folder, "faces.safetensors", arrays)
        manifest = {"identity": self.identity, "complete": True, "frames": len(faces), "resolution": faces.resolution,
                    "crop_wh": list(faces.crop_wh), "frame_hw": list(faces.frame_hw), "truncated": self.truncated,
                    "segment": SEGMENT, "files": self.files}
        write_manifest(self.folder, manifest)


def write_checked(folder: Path, name: str, tensors: dict) -> dict:
    """Write `tensors` as the safetensors file `folder/name`, whole or not at all; returns its size and SHA-256."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    data = save_tensors(tensors)
    with written_whole(path, path.with_name(path.name + ".tmp")) as temporary:
        temporary.write_bytes(data)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def read_checked(folder: Path, name: str, expected: dict | None) -> dict:
    """The tensors of `folder/name`, refused in one line when it is missing, cut short or changed."""
    path = folder / name
    if expected is None:
        raise PreparedError(f"{folder} lists no {name}: the prepared video is incomplete; {REBUILD}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PreparedError(f"{path} of the prepared video cannot be read ({exc.strerror or exc}); {REBUILD}") from None
    if len(data) != expected["bytes"]:
        raise PreparedError(f"{path} is damaged: {len(data)} of its {expected['bytes']} bytes are there; {REBUILD}")
    if hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise PreparedError(f"{path} is damaged: its contents changed since it was written; {REBUILD}")
    return load_tensors(data)


def write_manifest(folder: Path, manifest: dict) -> None:
    path = folder / MANIFEST
    with written_whole(path, path.with_name(path.name + ".tmp")) as temporary:
        temporary.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def read_manifest(folder: Path) -> dict | None:
    """The folder's manifest; None when the folder is not (yet) a prepared video; refused when unreadable."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PreparedError(f"{path} cannot be read as a prepared video's manifest ({exc}); {REBUILD}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("identity"), dict):
        raise PreparedError(f"{path} is not a prepared video's manifest; {REBUILD}")
    return manifest


def open_prepared(folder: str | Path, identity: dict | None = None) -> PreparedVideo:
    """The complete prepared video in `folder`, checked against `identity` when given (None: trusted, e.g. on a
    cluster's worker after the driver checked it). Its files' sizes are checked now, their contents when read."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None or not manifest.get("complete"):
        raise PreparedError(f"{folder} holds no finished prepared video; {REBUILD}")
    if identity is not None:  # what it was made from first: then what is left of it
        PreparedVideo(manifest["identity"], None).check(identity, str(folder))
    for name, expected in manifest["files"].items():
        size = (folder / name).stat().st_size if (folder / name).is_file() else None
        if size != expected["bytes"]:
            found = "missing" if size is None else f"{size} of its {expected['bytes']} bytes are there"
            raise PreparedError(f"{folder / name} is damaged: {found}; {REBUILD}")
    arrays = read_checked(folder, "faces.safetensors", manifest["files"].get("faces.safetensors"))
    faces = ClipFaces(matrices=arrays["matrices"], valid=arrays["valid"].numpy().astype(bool),
                      resolution=int(manifest["resolution"]), crop_wh=tuple(manifest["crop_wh"]),
                      frame_hw=tuple(manifest["frame_hw"]), crops=arrays.get("crops"))
    pts = arrays["pts"].numpy() if "pts" in arrays else None
    return PreparedVideo(manifest["identity"], faces, pts, manifest.get("truncated"), folder, dict(manifest["files"]))


def start_folder(folder: str | Path, identity: dict, faces: ClipFaces | None = None) -> PreparedVideo:
    """An empty prepared video writing into `folder`: a new or empty folder, or one holding a prepared video
    (whose files go first). Any other folder is refused: nothing of the user's is written over."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PreparedError(f"{folder} is a file, not a folder for a prepared video")
    if folder.is_dir() and any(folder.iterdir()):
        if not (folder / MANIFEST).is_file():
            raise PreparedError(f"{folder} holds other files and is not a prepared video (no {MANIFEST}): give a "
                                "new or empty folder")
        (folder / MANIFEST).unlink()  # first: a folder cut short from here on is seen as unfinished
        shutil.rmtree(folder / "latents", ignore_errors=True)
        (folder / "faces.safetensors").unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(folder, {"identity": identity, "complete": False, "files": {}})
    return PreparedVideo(identity, faces, folder=folder)
