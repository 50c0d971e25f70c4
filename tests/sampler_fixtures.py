"""Shared material of the sampler tests: a short real clip, its faces, audio features, and a cheap VAE stand-in.

The clip is the first frames of shared/media/latentsync_demo1_video.mp4 (1080x1920) decoded at 360x640, so the
face is about 64 px wide: face detection and paste-back stay fast, and the tests crop faces at 64 px
(latents 8x8) instead of the models' 256/512 px. Nothing here is product code.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from latentsync.audio.features import AudioFeatures, frame_feature_rows, reference_frame_count
from latentsync.audio.vad import SpeechSegments
from latentsync.sample.frame_plan import runs

CLIP = "media/latentsync_demo1_video.mp4"
VOICE = "media/latentsync_demo1_audio.wav"
CLIP_HW = (640, 360)
RESOLUTION = 64


def decode_clip(path, frames: int, size_hw: tuple[int, int] = CLIP_HW) -> torch.Tensor:
    """The first `frames` frames as a ComfyUI IMAGE `[N, H, W, 3]` float32 0-1, scaled by FFmpeg."""
    import av

    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            out.append(frame.to_ndarray(format="rgb24", width=size_hw[1], height=size_hw[0]))
            if len(out) == frames:
                break
    return torch.from_numpy(np.stack(out)).float() / 255.0


class PoolVAE:
    """A VAE-shaped stand-in: 8x8 average pooling to 4 channels, nearest upsampling back. Deterministic and
    free, so the tests can check exactly what goes into the UNet and what comes out."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(images.float(), 8)
        return torch.cat([pooled, pooled.mean(dim=1, keepdim=True)], dim=1) / 0.18215

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return F.interpolate(latents[:, :3] * 0.18215, scale_factor=8, mode="nearest").clamp(-1, 1)


def fake_features(frames: int, fps: float = 25.0, seed: int = 0, speech_mask: np.ndarray | None = None,
                  duration: float | None = None) -> AudioFeatures:
    """Random whisper-shaped features for `frames` frames of audio at `fps`, with silence features, laid out
    as `extract_features` lays them out (the reference's chunk count, two past the audio's end).
    `speech_mask` [n] bool: the frames with speech, carried as VAD segments (frames past it have none)."""
    duration = frames / fps if duration is None else duration
    rows = int(round(duration * 50))
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(rows, 5, 384, generator=generator)
    silence = 0.1 * torch.randn(rows, 5, 384, generator=generator)
    count = reference_frame_count(rows, fps)
    index = frame_feature_rows(rows, fps, count)
    segments = None
    if speech_mask is not None:
        segments = SpeechSegments(duration=duration, speech=tuple((a / fps, b / fps) for a, b in runs(speech_mask)))
    return AudioFeatures(features=features, silence_features=silence, rows=index, fps=float(fps), duration=duration,
                         seamless=False, speech=segments)


def face_boxes(faces, margin: int = 3) -> list[tuple[int, int, int, int] | None]:
    """Per frame, the bounding box `(x0, y0, x1, y1)` in the frame of its crop's footprint, widened by
    `margin`: paste-back may touch nothing outside it."""
    w, h = faces.crop_wh
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64)
    boxes = []
    for matrix, valid in zip(faces.matrices.numpy().astype(np.float64), faces.valid.tolist()):
        if not valid:
            boxes.append(None)
            continue
        inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
        points = corners @ inverse.T
        x0, y0 = np.floor(points.min(axis=0)).astype(int) - margin
        x1, y1 = np.ceil(points.max(axis=0)).astype(int) + margin
        boxes.append((max(x0, 0), max(y0, 0), x1, y1))
    return boxes


def outside_boxes(frame_hw: tuple[int, int], box) -> torch.Tensor:
    """`[H, W]` bool: True outside `box` (everywhere if None)."""
    keep = torch.ones(frame_hw, dtype=torch.bool)
    if box is not None:
        x0, y0, x1, y1 = box
        keep[y0:y1, x0:x1] = False
    return keep


class RecordingUNet:
    """Wraps a UNet and keeps a copy of every call's inputs."""

    def __init__(self, unet):
        self.unet, self.config, self.calls = unet, unet.config, []

    def parameters(self):
        return self.unet.parameters()

    def __call__(self, sample, timestep, context, cache=None):
        self.calls.append((sample.clone(), timestep.clone(), context.clone()))
        return self.unet(sample, timestep, context, cache=cache)


def golden_tiny_unet(folder):
    """The reference's tiny UNet config, written with random weights as an official checkpoint in `folder` and
    loaded through the pack's loader (what the sampler tests run)."""
    import json

    from conftest import shared_path
    from latentsync.unet.loading import load_unet
    from scripts.model_files import write_tiny_unet

    config = json.loads(shared_path("reference/latentsync/unet_tiny_config.json").read_text())["unet_config"]
    return load_unet(write_tiny_unet(folder / "latentsync_unet.pt", config), config)

