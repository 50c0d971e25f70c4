"""The paste-back blend mask (face/blend.py): for each choice, pixels outside the blend weight keep the input's
values exactly; a user's mask of the wrong size or frame count is a clear error; the landmark mouth sits under
the nose and turns with a rolled head."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_path
from latentsync.face.align import align
from latentsync.face.blend import Blend
from latentsync.face.detect import detect_faces
from latentsync.face.paste import paste_back
from latentsync.media.video import decode_frames


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """4 frames of demo1 at half size (540x960)."""
    frames, _, _ = decode_frames(shared_path("media/latentsync_demo1_video.mp4"))
    kept = [f for i, f in zip(range(16), frames) if i % 4 == 0]
    return np.ascontiguousarray(np.stack(kept)[:, ::2, ::2])


def pasted(frames: np.ndarray, blend: Blend | None):
    faces = align(frames, detect_faces(frames, "dlib", smoothing=False), 256)
    weights = torch.zeros(frames.shape[:3])
    generated = torch.zeros(len(frames), 3, 256, 256)  # a mid-grey face everywhere
    return paste_back(frames, faces, generated, blend=blend, weights_out=weights), weights, faces


def custom_mask(frames: np.ndarray) -> torch.Tensor:
    """A user's mask: an ellipse over the lower face region of the first frame, for all frames."""
    h, w = frames.shape[1:3]
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((((x - 300) / 60.0) ** 2 + ((y - 420) / 40.0) ** 2) <= 1).to(torch.float32)[None]


@pytest.mark.parametrize("choice", ["reference", "landmarks", "custom"])
def test_pixels_outside_the_blend_mask_are_the_input(clip, choice):
    blend = Blend(choice, custom=custom_mask(clip) if choice == "custom" else None)
    out, weights, faces = pasted(clip, blend)
    outside = (weights == 0).numpy()
    assert np.array_equal(out[outside], clip[outside])
    assert (weights > 0).any(axis=(1, 2)).all()
    assert not np.array_equal(out[~outside], clip[~outside])  # the face did go in
    if choice != "reference":  # a part of the crop's footprint only
        _, whole, _ = pasted(clip, None)
        assert (weights > 0).sum() < 0.5 * (whole > 0).sum()
        assert ((weights > 0) <= (whole > 0)).all()


def test_the_default_blend_is_the_reference(clip):
    plain, _, _ = pasted(clip, None)
    reference, _, _ = pasted(clip, Blend("reference"))
    assert np.array_equal(plain, reference)


def test_a_user_mask_that_does_not_fit_is_a_clear_error(clip):
    faces = align(clip, detect_faces(clip, "dlib", smoothing=False), 256)
    generated = torch.zeros(len(clip), 3, 256, 256)
    for mask, message in ((torch.ones(1, 100, 100), "the frames are 540x960"),
                          (torch.ones(3, *clip.shape[1:3]), "3 frames for 4 frames"),
                          (None, "no mask was given")):
        with pytest.raises(ValueError, match=message):
            paste_back(clip, faces, generated, blend=Blend("custom", custom=mask))
    with pytest.raises(ValueError, match="blend mask"):
        paste_back(clip, faces, generated, blend=Blend("everything"))
    per_frame = custom_mask(clip).repeat(len(clip), 1, 1)
    per_frame[1:] = 0  # a mask per frame: only the first frame takes the face
    out = paste_back(clip, faces, generated, blend=Blend("custom", custom=per_frame))
    assert np.array_equal(out[1:], clip[1:]) and not np.array_equal(out[0], clip[0])


def _moments(weights: torch.Tensor) -> tuple[np.ndarray, float]:
    """Centroid `(x, y)` and the angle (degrees) of the main axis of a weight map."""
    w = weights.numpy().astype(np.float64)
    y, x = np.mgrid[:w.shape[0], :w.shape[1]]
    total = w.sum()
    cx, cy = (w * x).sum() / total, (w * y).sum() / total
    cxx, cyy, cxy = (w * (x - cx) ** 2).sum(), (w * (y - cy) ** 2).sum(), (w * (x - cx) * (y - cy)).sum()
    return np.array([cx, cy]), math.degrees(0.5 * math.atan2(2 * cxy, cxx - cyy))


def test_the_landmark_mouth_is_under_the_nose_and_turns_with_the_head(clip):
    frame = clip[:1]
    _, weights, faces = pasted(frame, Blend("landmarks"))
    track = detect_faces(frame, "dlib", smoothing=False)
    centre, angle = _moments(weights[0])
    brows, nose = track.points3[0, :2].mean(axis=0), track.points3[0, 2]
    assert centre[1] > nose[1] + 0.3 * np.linalg.norm(nose - brows)  # below the nose
    assert abs(centre[0] - nose[0]) < 0.5 * np.linalg.norm(track.points3[0, 1] - track.points3[0, 0])
    degrees = 20.0
    pivot = tuple(float(v) for v in nose)
    rolled = np.asarray(Image.fromarray(frame[0]).rotate(degrees, Image.BILINEAR, center=pivot))[None]
    _, turned, _ = pasted(np.ascontiguousarray(rolled), Blend("landmarks"))
    turned_centre, turned_angle = _moments(turned[0])
    a = math.radians(-degrees)  # PIL turns counter-clockwise on screen: y down, so -degrees in these axes
    offset = centre - nose
    expected = nose + np.array([math.cos(a) * offset[0] - math.sin(a) * offset[1],
                                math.sin(a) * offset[0] + math.cos(a) * offset[1]])
    scale = np.linalg.norm(track.points3[0, 1] - track.points3[0, 0])
    assert np.linalg.norm(turned_centre - expected) < 0.15 * scale, (turned_centre, expected)
    turn = (turned_angle - angle + 90) % 180 - 90
    assert abs(turn + degrees) < 8, (angle, turned_angle)


def test_grow_and_feather_change_the_landmark_mouth(clip):
    frame = clip[:1]
    _, plain, _ = pasted(frame, Blend("landmarks", grow=0.0, feather=0.0))
    _, grown, _ = pasted(frame, Blend("landmarks", grow=20.0, feather=0.0))
    _, soft, _ = pasted(frame, Blend("landmarks", grow=0.0, feather=10.0))
    assert (grown > 0).sum() > 1.3 * (plain > 0).sum()
    inner = (plain > 0) & (plain < 0.99)
    assert ((soft > 0) & (soft < 0.99)).sum() > 2 * inner.sum()  # a wider soft edge
