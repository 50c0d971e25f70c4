"""Seam benchmark: the colour step at the mouth mask's border (`face/seam.seam_difference`, 0-255 grey levels)
before and after `match_colour`, and the match's CPU time per crop, on aligned crops of the shared clips.

    LATENTSYNC_SHARED=../shared python -m bench.seam [--frames 16] [--resolution 256 512]

No VAE: the "generated" crops are the original ones with known artefacts: colour shifts like the VAE's tint,
a shift over noise the affine match cannot fit, JPEG q30 (blocks and chroma subsampling), and the face of a
neighbouring frame (a content change, as a new mouth is) with and without a tint.
"""
from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from latentsync.face.align import AlignedFaces, align
from latentsync.face.detect import detect_faces
from latentsync.face.paste import blend_mouth
from latentsync.face.seam import match_colour, seam_difference
from latentsync.media.video import decode_frames

SHARED = Path(os.environ.get("LATENTSYNC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CLIPS = ("latentsync_demo1_video.mp4", "latentsync_demo3_video.mp4")
GREY = 1 / 127.5


def tint(crops: torch.Tensor) -> torch.Tensor:
    out = crops.clone()
    out[:, 0] += 12 * GREY
    out[:, 2] = (out[:, 2] + 1) * 0.9 - 1
    return out.clamp(-1, 1)


def jpeg(faces: AlignedFaces, quality: int = 30) -> torch.Tensor:
    decoded = []
    for crop in faces.crops.numpy():
        buffer = io.BytesIO()
        Image.fromarray(crop).save(buffer, "JPEG", quality=quality)
        decoded.append(np.array(Image.open(buffer).convert("RGB")))
    return torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).to(torch.float32) * GREY - 1


def cases(faces: AlignedFaces) -> dict[str, torch.Tensor]:
    original = faces.pixel_values()
    size = original.shape[-1]
    noise = torch.randn(original.shape, generator=torch.Generator().manual_seed(0)) * 6 * GREY
    ramp = torch.linspace(0, 16 * GREY, size)[None, None, :, None]  # 0 -> 16 grey levels, top to bottom
    neighbour = original.roll(1, 0)  # frames are 2 apart: the next crop's face, aligned the same way
    return {"none": original, "tint +12R x0.9B": tint(original),
            "bright x1.1 +6": (original * 1.1 + 6 * GREY).clamp(-1, 1),
            "vertical ramp 0-16": (original + ramp).clamp(-1, 1), "tint + noise 6": tint(original + noise),
            "jpeg q30": jpeg(faces), "neighbour frame": neighbour, "neighbour + tint": tint(neighbour)}


def measure(faces: AlignedFaces, repeats: int = 3) -> None:
    original, mask = faces.pixel_values(), faces.mask
    for name, generated in cases(faces).items():
        before = seam_difference(blend_mouth(generated, faces), original, mask)
        match_colour(generated, original, mask)  # warm the border cache
        start = time.perf_counter()
        for _ in range(repeats):
            matched = match_colour(generated, original, mask)
        ms = (time.perf_counter() - start) / repeats / len(generated) * 1e3
        after = seam_difference(blend_mouth(matched, faces), original, mask)
        print(f"  {name:20s} seam {before:6.2f} -> {after:6.2f}   match {ms:5.2f} ms/crop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16, help="crops per clip (every second frame)")
    parser.add_argument("--resolution", type=int, nargs="+", default=[256, 512], choices=(256, 512))
    args = parser.parse_args()
    torch.set_num_threads(min(4, torch.get_num_threads()))
    for clip in CLIPS:
        decoded, _, _ = decode_frames(SHARED / "media" / clip)
        frames = np.stack([frame for i, frame in zip(range(2 * args.frames), decoded) if i % 2 == 0])
        track = detect_faces(frames, "dlib")
        for resolution in args.resolution:
            print(f"{clip}, {len(frames)} crops of {resolution} px (seam in grey levels, 0-255):")
            measure(align(frames, track, resolution))


if __name__ == "__main__":
    main()
