"""Mouth sharpness (latentsync/score/sharpness.py): the variance of the 4-neighbour Laplacian over the regenerated
mouth region of each aligned face, on real faces from the shared demo clip."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from conftest import shared_path
from latentsync.face.align import align, face_fit_side
from latentsync.face.detect import detect_faces
from latentsync.media.video import decode_frames
from latentsync.score.sharpness import (MIN_SIDE, compare_sharpness, laplacian_variance, mouth_region,
                                        mouth_sharpness, square_crop_matrix)


@pytest.fixture(scope="module")
def clip():
    """Frames 0 and 12 of demo1 (1080x1920, the face ~225 px wide), a black frame, and their aligned faces."""
    it, _, _ = decode_frames(shared_path("media/latentsync_demo1_video.mp4"))
    frames = [f for i, f in zip(range(13), it) if i in (0, 12)]
    frames = np.stack([*frames, np.zeros_like(frames[0])])
    faces = align(frames, detect_faces(frames, "dlib"), 256)
    assert faces.valid.tolist() == [True, True, False]
    return frames, faces


def _filtered(frames: np.ndarray, image_filter) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(f).filter(image_filter)) for f in frames])


def test_laplacian_variance_is_the_4_neighbour_kernel_over_the_mask():
    impulse = np.zeros((5, 5))
    impulse[2, 2] = 10.0
    # -40 at the centre, +10 at its four neighbours, 0 elsewhere: mean 0, variance (1600 + 4 * 100) / 25.
    assert laplacian_variance(impulse, np.ones((5, 5), bool)) == pytest.approx(80.0)
    only_centre = np.zeros((5, 5), bool)
    only_centre[2, 2] = True
    assert laplacian_variance(impulse, only_centre) == 0.0  # one value has no spread
    assert math.isnan(laplacian_variance(impulse, np.zeros((5, 5), bool)))
    ramp = np.add.outer(np.arange(6.0), 3 * np.arange(7.0))  # linear: no second derivative inside
    inside = np.zeros((6, 7), bool)
    inside[1:-1, 1:-1] = True
    assert laplacian_variance(ramp, inside) == pytest.approx(0.0, abs=1e-12)
    assert laplacian_variance(ramp, ~inside) > 0  # the mirrored border (OpenCV's REFLECT_101) bends it


def test_laplacian_variance_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    gray = np.random.default_rng(0).uniform(0, 255, (31, 40))
    mask = np.random.default_rng(1).random((31, 40)) > 0.5
    expected = cv2.Laplacian(gray, cv2.CV_64F, ksize=1)[mask].var()
    assert laplacian_variance(gray, mask) == pytest.approx(expected, rel=1e-9)


def test_blur_lowers_and_sharpening_raises_the_mouth_sharpness(clip):
    frames, faces = clip
    side = face_fit_side(faces, minimum=MIN_SIDE)
    assert 180 <= side <= 280  # about the face's width in frame pixels
    original = mouth_sharpness(frames, faces)
    blurred = mouth_sharpness(_filtered(frames, ImageFilter.GaussianBlur(2)), faces)
    sharpened = mouth_sharpness(_filtered(frames, ImageFilter.UnsharpMask(2, 150, 0)), faces)
    assert original.shape == (3,) and original.dtype == np.float64
    assert np.all(original[:2] > 0) and np.isnan(original[2])  # the black frame has no face
    assert original[0] != original[1]  # one value per frame, from that frame
    assert np.all(blurred[:2] < 0.5 * original[:2]) and np.all(sharpened[:2] > 1.5 * original[:2])
    # The same from a ComfyUI IMAGE tensor (float 0-1) streamed one frame at a time.
    as_image = torch.from_numpy(frames).float() / 255
    np.testing.assert_allclose(mouth_sharpness(iter(as_image), faces), original, rtol=1e-3)


def test_pixels_outside_the_mouth_region_do_not_count(clip):
    frames, faces = clip
    side = face_fit_side(faces, minimum=MIN_SIDE)
    rows = np.flatnonzero(mouth_region(faces, side).any(dim=1).numpy())
    changed = frames.copy()
    noise = np.random.default_rng(2)
    for i in (0, 1):
        matrix = square_crop_matrix(faces.matrices[i], faces.crop_wh, side).numpy()
        ys, xs = np.mgrid[:frames.shape[1], :frames.shape[2]]
        crop_y = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
        # Everything above the mouth region (eyes, nose, hair, background) with margin for the bilinear warp and
        # the 3x3 kernel, and everything below it far enough away: new random pixels.
        away = (crop_y < rows[0] - 4) | (crop_y > rows[-1] + side)
        changed[i][away] = noise.integers(0, 256, (int(away.sum()), 3), dtype=np.uint8)
    assert np.abs(changed[:2].astype(int) - frames[:2]).mean() > 50
    np.testing.assert_array_equal(mouth_sharpness(changed, faces), mouth_sharpness(frames, faces))


def test_compare_sharpness_gives_medians_and_the_ratio(clip):
    frames, faces = clip
    blurred = _filtered(frames, ImageFilter.GaussianBlur(2))
    result = compare_sharpness(blurred, frames, faces)
    per_frame = mouth_sharpness(frames, faces)
    assert result["source"] == pytest.approx(np.median(per_frame[:2]))  # the faceless frame is left out
    assert result["ratio"] == pytest.approx(result["generated"] / result["source"]) and result["ratio"] < 0.5
    assert set(compare_sharpness(frames, None, faces)) == {"generated", "side"}
    with pytest.raises(ValueError, match="2 frames but 3 aligned faces"):
        mouth_sharpness(frames[:2], faces)
    with pytest.raises(ValueError, match="more frames than faces"):
        mouth_sharpness(np.concatenate([frames, frames[:1]]), faces)
