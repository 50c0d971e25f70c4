"""Make the pictures of the nodes' help pages (js/docs/<node id>/*.png, *.jpg) from the library's own code.

    ~/.cache/comfyui-latentsync/venv/bin/python -m scripts.doc_pictures   # from the repository root

Inputs: the shared demo voice and the first frame of the shared demo video (LATENTSYNC_SHARED, default
../shared/media); without the video, scikit-image's public-domain astronaut portrait. Every picture is drawn
by the function the node itself uses (the VAD timeline, the face detector, alignment, mouth mask and
paste-back, the SyncNet plot), so a change there shows up here when the pictures are made again. Nothing
is downloaded and no model weights are needed except silero-vad's, which ship inside its wheel.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from latentsync.audio import timeline, vad
from latentsync.face.align import AlignedFaces, align
from latentsync.face.blend import Blend
from latentsync.face.detect import DETECTOR, detect_faces
from latentsync.face.paste import paste_back
from latentsync.media.audio import load_audio, to_mono_16k
from latentsync.media.video import read_frames
from latentsync.score.metric import SyncScore
from latentsync.score.plot import render_distances
from scripts.comfyui import SHARED

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "js" / "docs"
MEDIA = SHARED / "media"
VOICE, VIDEO = "latentsync_demo1_audio.wav", "latentsync_demo1_video.mp4"
MAX_BYTES = 150_000  # the help panel loads them on every open: keep each small
PANEL = 256  # height of every panel of the face pictures, the LatentSync 1.5 crop size
TEXT, BAND = (235, 235, 235), (24, 24, 28)


def font(size: int = 14) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except TypeError:
        return ImageFont.load_default()


def labelled(panels: list[tuple[np.ndarray, str]], gap: int = 6) -> Image.Image:
    """Panels side by side (each scaled to PANEL px high), each with its caption in a band above it."""
    band = 22
    images = []
    for pixels, _ in panels:
        image = Image.fromarray(pixels)
        images.append(image.resize((round(image.width * PANEL / image.height), PANEL), Image.LANCZOS))
    width = sum(i.width for i in images) + gap * (len(images) - 1)
    sheet = Image.new("RGB", (width, PANEL + band), BAND)
    draw, x = ImageDraw.Draw(sheet), 0
    for image, (_, caption) in zip(images, panels):
        sheet.paste(image, (x, band))
        draw.text((x + 4, 3), caption, fill=TEXT, font=font())
        x += image.width + gap
    return sheet


def save(image: Image.Image, name: str) -> Path:
    """Write a picture into its node's help folder: `LatentSyncPasteFaces_masks.jpg` goes to
    js/docs/LatentSyncPasteFaces/, beside that node's en.md and zh.md, which link it as
    `LatentSyncPasteFaces/LatentSyncPasteFaces_masks.jpg` (the help panel resolves a picture against
    /extensions/<pack>/docs/, not against the page's own folder)."""
    path = DOCS / name.split(".")[0].split("_")[0] / name
    path.parent.mkdir(exist_ok=True)
    if name.endswith(".jpg"):
        image.save(path, quality=85, optimize=True)
    else:
        image.save(path, optimize=True)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{path} is {size:,} bytes, over the {MAX_BYTES:,} a help picture may take")
    print(f"{path.relative_to(REPO)}: {image.width}x{image.height}, {size / 1000:.0f} kB")
    return path


def vad_picture() -> Path:
    """The node's own timeline (same function, same defaults) for a real voice."""
    waveform, rate = load_audio(MEDIA / VOICE)
    audio16k = to_mono_16k(waveform, rate)
    segments = vad.detect_speech(audio16k, vad.SAMPLE_RATE)  # the node's defaults
    return save(Image.fromarray(timeline.render_timeline(audio16k, segments)), "LatentSyncVAD.png")


def first_frame() -> tuple[torch.Tensor, str]:
    """`[1, H, W, 3]` uint8: the demo video's first frame, or scikit-image's astronaut without it."""
    if (MEDIA / VIDEO).is_file():
        frames, _ = read_frames(MEDIA / VIDEO, max_frames=1)
        return frames, VIDEO
    from skimage import data

    return torch.from_numpy(data.astronaut().copy())[None], "scikit-image astronaut"


def aligned_face(frames: torch.Tensor) -> tuple[AlignedFaces, np.ndarray, np.ndarray]:
    """The node's pipeline at its defaults (auto, largest face, 256 px): faces, the box and the 3 points."""
    track = detect_faces(frames, DETECTOR.default)
    if not track.valid[0]:
        raise SystemExit(f"the {DETECTOR.default} detector found no face in the picture's frame")
    return align(frames, track, PANEL), track.boxes[0], track.points3[0]


def face_region(frame: np.ndarray, box: np.ndarray, grow: float = 1.2) -> tuple[slice, slice]:
    """A square around the face box, `grow` times the box, clipped to the frame: the part worth showing."""
    x1, y1, x2, y2 = box
    half = max(x2 - x1, y2 - y1) * grow
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    h, w = frame.shape[:2]
    top, left = int(max(cy - half, 0)), int(max(cx - half, 0))
    return slice(top, int(min(cy + half, h))), slice(left, int(min(cx + half, w)))


def detection_overlay(frame: np.ndarray, box: np.ndarray, points: np.ndarray) -> np.ndarray:
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    line = max(2, frame.shape[1] // 300)
    draw.rectangle([float(v) for v in box], outline=(250, 190, 60), width=line)
    for x, y in points:
        r = line * 3
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(38, 200, 110))
    return np.asarray(image)


def faces_pictures() -> list[Path]:
    frames, source = first_frame()
    faces, box, points = aligned_face(frames)
    frame = frames[0].numpy()
    rows, cols = face_region(frame, box)
    found = detection_overlay(frame, box, points)[rows, cols]
    crop = faces.crops[0].numpy()
    # What the UNet's masked-face input holds: the crop times the mask, in [-1, 1]; 0 (mid grey) is regenerated.
    masked = ((faces.masked_pixel_values()[0].permute(1, 2, 0) * 0.5 + 0.5) * 255).round().byte().numpy()
    print(f"faces from {source}: box {np.round(box).astype(int).tolist()}")
    detect = labelled([(found, "detected face, 3 points"), (crop, "aligned crop (256 px)"),
                       (masked, "grey: mouth to regenerate")])

    # Paste-back's soft blend weight: a white crop pasted into a black frame leaves exactly that weight.
    black = torch.zeros_like(frames)
    weight = paste_back(black, faces, torch.ones_like(faces.images()))[0].numpy()[rows, cols]
    # The generated crop is the aligned one with its mouth tinted, so that the paste is visible in the frame.
    mouth = (1 - faces.mask.float())[..., None]
    tinted = (faces.images()[0] * (1 - 0.45 * mouth) + torch.tensor([0.15, 0.8, 0.45]) * 0.45 * mouth)
    pasted = paste_back(frames, faces, tinted[None])[0].numpy()[rows, cols]
    paste = labelled([((tinted.numpy() * 255).round().astype(np.uint8), "crop to paste (mouth tinted)"),
                      (weight, "blend weight (white: crop)"), (pasted, "frame after Paste Faces Back")])
    return [save(detect, "LatentSyncDetectFaces.jpg"), save(paste, "LatentSyncPasteFaces.jpg"),
            masks_picture(frames, faces, (rows, cols))]


def masks_picture(frames: torch.Tensor, faces: AlignedFaces, region: tuple[slice, slice]) -> Path:
    """Paste Faces Back's three blend masks on one face: the weight each leaves, tinted over the frame."""
    rows, cols = region
    frame = frames[0].numpy()
    h, w = frame.shape[:2]
    y, x = np.mgrid[:h, :w]
    box_centre = ((cols.start + cols.stop) / 2, (rows.start + rows.stop) / 2)
    size = (cols.stop - cols.start) / 2.4
    drawn = ((((x - box_centre[0]) / (0.55 * size)) ** 2 + ((y - box_centre[1] - 0.3 * size) / (0.3 * size)) ** 2)
             <= 1)  # a user's mask: an ellipse over the mouth, as one might paint it in the mask editor
    panels = []
    for choice, label in (("reference", "reference: the whole crop"), ("landmarks", "landmarks: lips, jaw, chin"),
                          ("custom", "custom: a MASK you give")):
        weights = torch.zeros(frames.shape[:3])
        custom = torch.from_numpy(drawn.astype(np.float32))[None] if choice == "custom" else None
        paste_back(frames, faces, faces.images(), blend=Blend(choice, custom=custom), weights_out=weights)
        weight = weights[0].numpy()[rows, cols, None]
        tinted = frame[rows, cols] * (1 - 0.55 * weight) + np.array([40, 220, 120]) * 0.55 * weight
        panels.append((tinted.round().astype(np.uint8), label))
    return save(labelled(panels), "LatentSyncPasteFaces_masks.jpg")


def syncnet_picture() -> Path:
    """The node's plot on made-up distances shaped like a synced clip's (a dip at offset 0).

    Only random SyncNet weights exist here; a plot of their output would look like a result and mean
    nothing. The values below are illustrative, and the picture says so.
    """
    offsets = np.arange(-15, 16)
    distances = 11.5 - 4.0 * np.exp(-(offsets / 2.5) ** 2) + 0.25 * np.cos(offsets * 1.3)
    score = SyncScore(lse_c=float(np.median(distances) - distances.min()), lse_d=float(distances.min()),
                      offset=int(offsets[np.argmin(distances)]), distances=distances, crops="illustration",
                      snippets=0, snippet_distances=np.zeros(0), framewise_conf=np.zeros(0))
    plot = Image.fromarray(render_distances(score))
    band = 20
    image = Image.new("RGB", (plot.width, plot.height + 2 * band), BAND)
    image.paste(plot, (0, band))
    draw = ImageDraw.Draw(image)
    draw.text((4, 3), "offset -15", fill=TEXT, font=font(12))
    draw.text((plot.width // 2 - 4, 3), "0", fill=TEXT, font=font(12))
    draw.text((plot.width - 60, 3), "offset 15", fill=TEXT, font=font(12))
    draw.text((4, plot.height + band + 3), "ILLUSTRATIVE VALUES, not a measurement", fill=(250, 120, 120),
              font=font(13))
    return save(image, "LatentSyncSyncNetScore.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("vad", "faces", "syncnet"), help="make one picture family")
    args = parser.parse_args()
    makers = {"vad": vad_picture, "faces": faces_pictures, "syncnet": syncnet_picture}
    for name, make in makers.items():
        if args.only in (None, name):
            make()


if __name__ == "__main__":
    main()
