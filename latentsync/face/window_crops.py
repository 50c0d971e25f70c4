"""Face crops for the frames of one sampler window, made when the window needs them.

Aligning a whole clip up front would hold every crop in memory; what has to be computed clip-wide is only
the alignment itself, because the reference smooths it from frame to frame. So the clip's matrices are
computed once (cheap: three points a frame) and each window warps and resizes its own frames' crops.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .align import FILL, AlignedFaces, crop_geometry, smoothed_matrices, warp_face
from .detect import DETECTOR, FaceDetector, FaceTrack, detect_faces
from .mask import latent_mask, pixel_mask
from .warp import resize_lanczos4_uint8
from ..core.threads import single_threaded


@dataclass
class ClipFaces:
    """Alignment of every input frame, and the crops if the caller already made them."""

    matrices: torch.Tensor  # [N, 2, 3] float32, NaN where no face
    valid: np.ndarray  # [N] bool
    resolution: int
    crop_wh: tuple[int, int]
    frame_hw: tuple[int, int]
    crops: torch.Tensor | None = None  # [N, R, R, 3] uint8 when given

    def __len__(self) -> int:
        return len(self.valid)

    def crop(self, frames: torch.Tensor, index: int) -> torch.Tensor:
        """`[R, R, 3]` uint8 crop of input frame `index` (grey where there is no face)."""
        if self.crops is not None:
            return self.crops[index]
        if not self.valid[index]:
            return torch.full((self.resolution, self.resolution, 3), int(FILL), dtype=torch.uint8)
        crop = warp_face(frames[index], self.matrices[index].numpy(), self.crop_wh)
        return resize_lanczos4_uint8(crop, (self.resolution, self.resolution))

    def select(self, frames: torch.Tensor, source_index: np.ndarray) -> AlignedFaces:
        """`AlignedFaces` of the input frames `source_index` (repeats allowed), in that order."""
        source_index = np.asarray(source_index, dtype=np.int64)
        crops = torch.empty((len(source_index), self.resolution, self.resolution, 3), dtype=torch.uint8)
        made: dict[int, int] = {}
        with single_threaded():  # per-frame warps, as in `align`
            for row, index in enumerate(source_index.tolist()):
                if index in made:  # looped output repeats input frames
                    crops[row] = crops[made[index]]
                else:
                    crops[row] = self.crop(frames, index)
                    made[index] = row
        mask = pixel_mask(self.resolution)
        return AlignedFaces(crops=crops, matrices=self.matrices[source_index].clone(),
                            valid=torch.from_numpy(self.valid[source_index].copy()), resolution=self.resolution,
                            crop_wh=self.crop_wh, frame_hw=self.frame_hw, mask=mask, latent_mask=latent_mask(mask))


def clip_faces(frames: torch.Tensor, faces: AlignedFaces | FaceTrack | str | FaceDetector | None = None,
               resolution: int | None = None) -> ClipFaces:
    """The clip's alignment, from where `faces` says the faces come from: aligned faces (crops included), a face
    track, or a detector (a name or a `FaceDetector`; None: dlib) run on the frames here."""
    frame_hw = (int(frames.shape[1]), int(frames.shape[2]))
    if isinstance(faces, AlignedFaces):
        if len(faces) != len(frames):
            raise ValueError(f"{len(faces)} aligned faces for {len(frames)} frames; align the same frames")
        if tuple(faces.frame_hw) != frame_hw:
            raise ValueError(f"the faces were aligned on {tuple(faces.frame_hw)} frames but these are {frame_hw}")
        if resolution is not None and resolution != faces.resolution:
            raise ValueError(f"resolution {resolution} asked for, but the faces were aligned at {faces.resolution}")
        return ClipFaces(matrices=faces.matrices.to(torch.float32), valid=faces.valid.numpy().astype(bool),
                         resolution=faces.resolution, crop_wh=tuple(faces.crop_wh), frame_hw=frame_hw,
                         crops=faces.crops)
    track = faces if isinstance(faces, FaceTrack) else detect_faces(frames, faces if faces is not None else DETECTOR.default)
    if len(track) != len(frames):
        raise ValueError(f"a face track of {len(track)} frames for {len(frames)} frames")
    return faces_from_track(track, frame_hw, 256 if resolution is None else int(resolution))


def faces_from_track(track: FaceTrack, frame_hw: tuple[int, int], resolution: int) -> ClipFaces:
    """The clip's alignment from its face track (the reference's smoothing from frame to frame included)."""
    _, crop_wh = crop_geometry(resolution)
    matrices = smoothed_matrices(track.points3, track.valid, resolution)
    return ClipFaces(matrices=torch.from_numpy(matrices), valid=np.asarray(track.valid, bool).copy(),
                     resolution=resolution, crop_wh=crop_wh, frame_hw=(int(frame_hw[0]), int(frame_hw[1])))
