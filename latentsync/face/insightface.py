"""The reference's face detector: InsightFace buffalo_l (`det_10g.onnx`, SCRFD-10G, and `2d106det.onnx`,
106 landmarks) run through onnxruntime, with the pre- and post-processing written here (no insightface
package). The weights are not shipped: InsightFace releases them for non-commercial research use only, and
many ComfyUI users already have them in `models/insightface/models/buffalo_l/`.

As in the reference: detection at 512x512 (aspect kept, zero padded), score >= 0.5 (the threshold), NMS at
IoU 0.4; boxes narrower than 50 px, shorter than 80 px or with w/h outside [0.2, 1.5] are dropped; the three
alignment points are means of rounded landmarks {43, 48, 49, 51, 50}, {101..105} and {74, 77, 83, 86}, rounded.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..catalogue import CATALOGUE
from ..checkpoint import check_onnx
from ..core.options import Option
from .types import DetectedFace, FaceModelMissing
from .warp import warp_affine
from ..onnx_runtime import import_onnxruntime

FILES = ("det_10g.onnx", "2d106det.onnx")
DETECT_SIZE = 512
NMS_IOU = 0.4
# The face probability a detection must reach (the reference's 0.5): what `threshold` means for this detector.
THRESHOLD = Option("threshold", 0.5, "insightface's face probability a detection must reach; higher ignores "
                   "faint faces.", 0.0, 1.0, step=0.05)
STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2
LANDMARK_SIZE = 192
BROW_A, BROW_B, NOSE = [43, 48, 49, 51, 50], [101, 102, 103, 104, 105], [74, 77, 83, 86]
_PACK = CATALOGUE["insightface"]
WHERE_TO_GET = (f"download InsightFace's {_PACK.source_file} from {_PACK.url} ({_PACK.licence} licence) and unzip "
                f"it so that both files sit in ComfyUI/models/{Path(_PACK.path).parent}/ (or pass its folder)")


def default_model_dirs() -> list[Path]:
    """Where buffalo_l usually lives: $LATENTSYNC_INSIGHTFACE_DIR, insightface's own cache, LatentSync's folder."""
    dirs = []
    if os.environ.get("LATENTSYNC_INSIGHTFACE_DIR"):
        dirs.append(Path(os.environ["LATENTSYNC_INSIGHTFACE_DIR"]))
    dirs += [Path.home() / ".insightface" / "models" / "buffalo_l", Path("checkpoints/auxiliary/models/buffalo_l")]
    return dirs


def find_model_dir(models_dir: str | Path | Sequence[str | Path] | None = None) -> Path:
    """The first folder holding both buffalo_l files; FaceModelMissing names the files and folders otherwise."""
    if models_dir is None:
        candidates = default_model_dirs()
    elif isinstance(models_dir, (str, Path)):
        candidates = [Path(models_dir)]
    else:
        candidates = [Path(p) for p in models_dir]
    for folder in candidates:
        if all((folder / name).is_file() for name in FILES):
            return folder
    searched = ", ".join(str(p.resolve()) for p in candidates) or "no folder"
    raise FaceModelMissing(f"the insightface face detector needs {' and '.join(FILES)}; not found in: {searched}. "
                           f"To get them, {WHERE_TO_GET}. The default detector 'dlib' needs no download.")


def _session(path: Path, providers: Sequence[str] | None):
    # A pickle, a PyTorch file or a truncated download named .onnx is never handed to the runtime.
    check_onnx(path, f"To get the right files, {WHERE_TO_GET}", error=FaceModelMissing)
    ort = import_onnxruntime()

    available = ort.get_available_providers()
    wanted = list(providers) if providers else ["CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), providers=chosen)
    except Exception as exc:  # onnxruntime raises its own exception types for a damaged file
        raise FaceModelMissing(f"{path} could not be loaded by onnxruntime ({exc}); it may be damaged or "
                               f"incomplete: {WHERE_TO_GET}") from exc


def _resize_bilinear(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(torch.float32)
    return F.interpolate(tensor, size=size_hw, mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float = NMS_IOU) -> list[int]:
    """Greedy non-maximum suppression; indices of the kept boxes, best first."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.maximum(0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]) + 1)
        h = np.maximum(0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]) + 1)
        overlap = w * h / (areas[i] + areas[rest] - w * h)
        order = rest[overlap <= threshold]
    return keep


def decode_scrfd(outputs: Sequence[np.ndarray], input_hw: tuple[int, int], threshold: float,
                 scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SCRFD outputs (scores, box distances, keypoint distances per stride; 9 arrays) -> boxes `[K, 4]`,
    scores `[K]`, 5 keypoints `[K, 5, 2]`, in the coordinates of the image before it was scaled by `scale`."""
    levels = len(STRIDES)
    boxes, scores, points = [], [], []
    for level, stride in enumerate(STRIDES):
        score = np.asarray(outputs[level]).reshape(-1)
        distance = np.asarray(outputs[level + levels]).reshape(-1, 4) * stride
        keypoints = np.asarray(outputs[level + 2 * levels]).reshape(-1, 10) * stride
        rows, cols = input_hw[0] // stride, input_hw[1] // stride
        ys, xs = np.mgrid[:rows, :cols]
        centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
        centres = np.repeat(centres, ANCHORS_PER_CELL, axis=0)
        hit = np.flatnonzero(score >= threshold)
        c, d, k = centres[hit], distance[hit], keypoints[hit].reshape(-1, 5, 2)
        boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1))
        points.append(c[:, None, :] + k)
        scores.append(score[hit])
    boxes, scores, points = np.concatenate(boxes) / scale, np.concatenate(scores), np.concatenate(points) / scale
    keep = nms(boxes, scores)
    return boxes[keep], scores[keep], points[keep]


def points3_from_106(landmarks: np.ndarray) -> np.ndarray:
    """The reference's three points from 106 landmarks: rounded landmarks, group means, rounded again."""
    rounded = np.round(landmarks).astype(np.int64)
    points = [rounded[BROW_A].mean(axis=0), rounded[BROW_B].mean(axis=0), rounded[NOSE].mean(axis=0)]
    return np.round(np.array(points)).astype(np.float32)


def reference_box_ok(box: Sequence[float]) -> bool:
    """The reference's size and shape filter on integer boxes."""
    x1, y1, x2, y2 = (int(v) for v in box)
    w, h = x2 - x1, y2 - y1
    return w >= 50 and h >= 80 and 0.2 <= w / h <= 1.5


class InsightFaceDetector:
    """buffalo_l SCRFD boxes + 106-point landmarks on onnxruntime (CUDA when available, else CPU)."""

    name = "insightface"

    def __init__(self, models_dir: str | Path | Sequence[str | Path] | None = None, threshold: float | None = None,
                 providers: Sequence[str] | None = None, sessions: tuple | None = None) -> None:
        # `sessions` (detector, landmarks) replaces the ONNX files, for tests of the pre/post-processing.
        if sessions is None:
            folder = find_model_dir(models_dir)
            sessions = tuple(_session(folder / name, providers) for name in FILES)
        self._detector, self._landmarks = sessions
        self.threshold = THRESHOLD.default if threshold is None else float(threshold)

    def detect(self, frame: np.ndarray, around=None) -> list[DetectedFace]:
        # `around` is ignored: the reference detects on the whole frame, and SCRFD at 512 px is cheap.
        boxes, scores, _ = self._detect_boxes(frame)
        faces = []
        for box, score in zip(boxes, scores):
            if reference_box_ok(box):
                points3 = points3_from_106(self.landmarks(frame, box))
                faces.append(DetectedFace(box=tuple(float(v) for v in box), score=float(score), points3=points3))
        return faces

    def _detect_boxes(self, frame: np.ndarray):
        height, width = frame.shape[:2]
        ratio = height / width
        if ratio > 1.0:
            new_h, new_w = DETECT_SIZE, int(DETECT_SIZE / ratio)
        else:
            new_w, new_h = DETECT_SIZE, int(DETECT_SIZE * ratio)
        scale = new_h / height
        canvas = np.zeros((DETECT_SIZE, DETECT_SIZE, 3), np.float32)
        canvas[:new_h, :new_w] = _resize_bilinear(frame, (new_h, new_w))
        blob = ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None]  # RGB already, as insightface's swapRB gives
        name = self._detector.get_inputs()[0].name
        outputs = self._detector.run(None, {name: blob.astype(np.float32)})
        return decode_scrfd(outputs, (DETECT_SIZE, DETECT_SIZE), self.threshold, scale)

    def landmarks(self, frame: np.ndarray, box: Sequence[float]) -> np.ndarray:
        """106 landmarks `[106, 2]` in frame pixels for one box: a 192 px crop of 1.5x the box's long side."""
        x1, y1, x2, y2 = box
        scale = LANDMARK_SIZE / (max(x2 - x1, y2 - y1) * 1.5)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        matrix = np.array([[scale, 0, LANDMARK_SIZE / 2 - cx * scale], [0, scale, LANDMARK_SIZE / 2 - cy * scale]])
        image = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).to(torch.float32)
        crop = warp_affine(image, torch.from_numpy(matrix), (LANDMARK_SIZE, LANDMARK_SIZE), fill=0.0)
        # 2d106det normalises inside its graph, so it takes raw 0-255 RGB.
        name = self._landmarks.get_inputs()[0].name
        pred = np.asarray(self._landmarks.run(None, {name: crop[None].numpy()})[0][0], np.float64).reshape(-1, 2)
        pred = pred[-106:]
        crop_points = (pred + 1) * (LANDMARK_SIZE // 2)
        return (crop_points - matrix[:, 2]) / scale
