"""S3FD, the face detector of the reference metric's crop stage (`sfd_face.pth`), with its box decoding.

State-dict names match `sfd_face.pth` (a plain state dict, loaded strictly as the reference does). The
reference runs it on each 25 fps frame scaled by 0.25, keeps boxes scoring over 0.9 and merges them with
NMS at IoU 0.1; `detect_faces` does the same and returns boxes in original-frame pixels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..catalogue import CATALOGUE
from .crops import resize_linear
from .syncnet import check_state_dict, read_state_dict

WHERE_TO_GET = CATALOGUE["s3fd"].where_to_get()
MEAN_RGB = (123.0, 117.0, 104.0)
MIN_SIZES = (16, 32, 64, 128, 256, 512)
STEPS = (4, 8, 16, 32, 64, 128)
VARIANCES = (0.1, 0.2)
SCALE = 0.25
CONFIDENCE = 0.9
MERGE_IOU = 0.1


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned per-channel scale (the file overwrites the init)."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10) * self.weight[None, :, None, None]


def _vgg() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in (64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512, "M"):
        if item in ("M", "C"):
            layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=item == "C"))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    layers += [nn.Conv2d(512, 1024, 3, padding=6, dilation=6), nn.ReLU(inplace=True),
               nn.Conv2d(1024, 1024, 1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class S3FDNet(nn.Module):
    """VGG16 backbone with six detection heads; `forward` gives per-prior box offsets and face probabilities."""

    SOURCE_CHANNELS = (256, 512, 512, 1024, 512, 256)

    def __init__(self) -> None:
        super().__init__()
        self.vgg = _vgg()
        self.L2Norm3_3 = L2Norm(256, 10)
        self.L2Norm4_3 = L2Norm(512, 8)
        self.L2Norm5_3 = L2Norm(512, 5)
        self.extras = nn.ModuleList([nn.Conv2d(1024, 256, 1), nn.Conv2d(256, 512, 3, stride=2, padding=1),
                                     nn.Conv2d(512, 128, 1), nn.Conv2d(128, 256, 3, stride=2, padding=1)])
        self.loc = nn.ModuleList([nn.Conv2d(c, 4, 3, padding=1) for c in self.SOURCE_CHANNELS])
        # The first head predicts three background scores and one face score (max-out background).
        self.conf = nn.ModuleList([nn.Conv2d(c, 4 if i == 0 else 2, 3, padding=1)
                                   for i, c in enumerate(self.SOURCE_CHANNELS)])

    def sources(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The six feature maps the heads read: conv3_3, conv4_3, conv5_3 (L2-normed), fc7, and two extras."""
        out, start = [], 0
        for stop, norm in ((16, self.L2Norm3_3), (23, self.L2Norm4_3), (30, self.L2Norm5_3), (35, None)):
            for layer in self.vgg[start:stop]:
                x = layer(x)
            out.append(x if norm is None else norm(x))
            start = stop
        for k, conv in enumerate(self.extras):
            x = F.relu(conv(x))
            if k % 2 == 1:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """`[B, 3, H, W]` mean-subtracted RGB -> (`[B, P, 4]` offsets, `[B, P]` face probability, map sizes)."""
        locs, confs, sizes = [], [], []
        for i, source in enumerate(self.sources(x)):
            conf = self.conf[i](source)
            if i == 0:
                conf = torch.cat([conf[:, :3].amax(dim=1, keepdim=True), conf[:, 3:]], dim=1)
            sizes.append((source.shape[2], source.shape[3]))
            locs.append(self.loc[i](source).permute(0, 2, 3, 1).reshape(x.shape[0], -1, 4))
            confs.append(conf.permute(0, 2, 3, 1).reshape(x.shape[0], -1, 2))
        face = torch.softmax(torch.cat(confs, 1), dim=-1)[..., 1]
        return torch.cat(locs, 1), face, sizes


def priors(image_size: tuple[int, int], map_sizes: list[tuple[int, int]]) -> torch.Tensor:
    """`[P, 4]` (cx, cy, w, h) in [0, 1] units: one square prior per cell, ordered source, row, column."""
    height, width = image_size
    out = []
    for (rows, cols), step, size in zip(map_sizes, STEPS, MIN_SIZES):
        cy, cx = torch.meshgrid((torch.arange(rows, dtype=torch.float64) + 0.5) / (height / step),
                                (torch.arange(cols, dtype=torch.float64) + 0.5) / (width / step), indexing="ij")
        wh = torch.tensor([size / width, size / height], dtype=torch.float64).expand(rows * cols, 2)
        out.append(torch.cat([cx.reshape(-1, 1), cy.reshape(-1, 1), wh], 1))
    return torch.cat(out).float()


def decode_boxes(loc: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """SSD decoding with variances (0.1, 0.2) -> `[P, 4]` x1, y1, x2, y2 in [0, 1] units."""
    centre = prior[:, :2] + loc[:, :2] * VARIANCES[0] * prior[:, 2:]
    size = prior[:, 2:] * torch.exp(loc[:, 2:] * VARIANCES[1])
    return torch.cat([centre - size / 2, centre - size / 2 + size], 1)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, limit: int | None = None) -> np.ndarray:
    """Greedy NMS by descending score; drops boxes whose IoU with a kept one exceeds the threshold."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size and (limit is None or len(keep) < limit):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def candidate_detections(loc: torch.Tensor, face: torch.Tensor, prior: torch.Tensor) -> np.ndarray:
    """The network's own detection stage: score > 0.05, NMS IoU 0.3 over the best 5000, at most 750 kept.

    Returns `[K, 5]` rows (score, x1, y1, x2, y2) in [0, 1] units, best first.
    """
    boxes = decode_boxes(loc, prior).numpy()
    scores = face.numpy()
    mask = scores > 0.05
    boxes, scores = boxes[mask], scores[mask]
    top = np.argsort(-scores, kind="stable")[:5000]
    keep = top[nms(boxes[top], scores[top], 0.3, limit=750)]
    return np.concatenate([scores[keep, None], boxes[keep]], 1)


@torch.no_grad()
def detect_faces(net: S3FDNet, frame_rgb: np.ndarray, confidence: float = CONFIDENCE, scale: float = SCALE,
                 merge_iou: float = MERGE_IOU) -> np.ndarray:
    """Faces in one `[H, W, 3]` uint8 RGB frame -> `[K, 5]` float64 rows (x1, y1, x2, y2, score) in pixels."""
    height, width = frame_rgb.shape[:2]
    small = resize_linear(frame_rgb, round(height * scale), round(width * scale)) if scale != 1 else frame_rgb
    x = torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1).float()
    x = x - torch.tensor(MEAN_RGB)[:, None, None]
    device = next(net.parameters()).device
    loc, face, sizes = net(x[None].to(device))
    found = candidate_detections(loc[0].float().cpu(), face[0].float().cpu(), priors(small.shape[:2], sizes))
    found = found[found[:, 0] > confidence]
    # float32 product, as the reference scales the network's float32 boxes before going to numpy.
    boxes = (found[:, 1:] * np.array([width, height, width, height], dtype=np.float32)).astype(np.float64)
    rows = np.concatenate([boxes, found[:, :1].astype(np.float64)], 1)
    return rows[nms(rows[:, :4], rows[:, 4], merge_iou)] if len(rows) else rows.reshape(0, 5)


def load_s3fd(path: str | Path, device: str | torch.device = "cpu") -> S3FDNet:
    """Build `S3FDNet` from `sfd_face.pth` (a plain state dict with exactly its 65 keys), in eval mode."""
    state = read_state_dict(path, WHERE_TO_GET)
    model = S3FDNet()
    check_state_dict(state, model, path, "the S3FD face detector (sfd_face.pth)", WHERE_TO_GET)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
