"""Mouth flicker (latentsync/score/flicker.py): the mean absolute frame-to-frame luma change over the regenerated
mouth region of each aligned face, on a real face from the shared demo clip held still."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import shared_path
from latentsync.face.align import align, face_fit_side
from latentsync.face.detect import detect_faces
from latentsync.media.video import decode_frames
from latentsync.score.flicker import FLOOR, compare_flicker, mouth_flicker
from latentsync.score.sharpness import MIN_SIDE, mouth_region, square_crop_matrix

COUNT = 6


@pytest.fixture(scope="module")
def still():
    """Frame 0 of demo1 (1080x1920, the face ~225 px wide) six times (a still clip), and its aligned faces."""
    it, _, _ = decode_frames(shared_path("media/latentsync_demo1_video.mp4"))
    frame = next(iter(it))
    frames = np.stack([frame, np.zeros_like(frame)])
    faces = align(frames, detect_faces(frames, "dlib"), 256)
    assert faces.valid.tolist() == [True, False]
    return np.stack([frame] * COUNT), faces.subset([0] * COUNT)


def _where(faces, frames: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Frame pixels that land inside the measured mouth region's box, and those at least `margin` crop pixels
    away from it (the bilinear warp reads one pixel around each sample)."""
    side = face_fit_side(faces, minimum=MIN_SIDE)
    region = mouth_region(faces, side).numpy()
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    matrix = square_crop_matrix(faces.matrices[0], faces.crop_wh, side).numpy()
    ys, xs = np.mgrid[:frames.shape[1], :frames.shape[2]]
    crop_x = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    crop_y = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    inside = (crop_x >= cols[0] - 1) & (crop_x <= cols[-1] + 1) & (crop_y >= rows[0] - 1) & (crop_y <= rows[-1] + 1)
    away = (crop_x < cols[0] - margin) | (crop_x > cols[-1] + margin) | (crop_y < rows[0] - margin) | \
        (crop_y > rows[-1] + margin)
    return inside, away


def _noisy(frames: np.ndarray, where: np.ndarray, amplitude: int, seed: int = 0) -> np.ndarray:
    """Each frame with its own uniform noise of +-`amplitude` levels on the pixels `where`."""
    rng = np.random.default_rng(seed)
    out = frames.astype(np.int16)
    for frame in out:
        frame[where] += rng.integers(-amplitude, amplitude + 1, (int(where.sum()), 3), dtype=np.int16)
    return out.clip(0, 255).astype(np.uint8)


def test_a_still_clip_does_not_flicker_and_its_copy_is_1(still):
    frames, faces = still
    per_pair = mouth_flicker(frames, faces)
    assert per_pair.shape == (COUNT - 1,) and per_pair.dtype == np.float64
    assert np.all(per_pair == 0)
    result = compare_flicker(frames, frames.copy(), faces)
    assert result["generated"] == result["source"] == 0 and result["ratio"] == 1  # FLOOR / FLOOR, not 0 / 0
    # The same from a ComfyUI IMAGE tensor (float 0-1) streamed one frame at a time.
    assert compare_flicker(iter(torch.from_numpy(frames).float() / 255), None, faces)["generated"] == 0


def test_noise_inside_the_mouth_raises_the_flicker_and_outside_it_does_not(still):
    frames, faces = still
    inside, away = _where(faces, frames, margin=4)
    assert inside.sum() > 1000 and away.mean() > 0.9
    shaky = _noisy(frames, inside, 20)
    result = compare_flicker(shaky, frames, faces)
    assert result["generated"] > 5 and result["source"] == 0
    assert result["ratio"] == pytest.approx(result["generated"] / FLOOR)
    assert compare_flicker(_noisy(frames, inside, 5), frames, faces)["generated"] < result["generated"]
    elsewhere = _noisy(frames, away, 60)
    assert np.abs(elsewhere.astype(int) - frames).mean() > 10
    assert np.all(mouth_flicker(elsewhere, faces) == 0)


def test_frames_without_a_face_are_skipped(still):
    frames, faces = still
    inside, _ = _where(faces, frames, margin=4)
    shaky = _noisy(frames, inside, 20)
    gapped = faces.subset([0] * COUNT)
    gapped.valid[2] = False  # pairs (1, 2) and (2, 3) are not measured
    per_pair = mouth_flicker(shaky, gapped)
    assert np.isnan(per_pair[[1, 2]]).all() and np.isfinite(per_pair[[0, 3, 4]]).all()
    assert compare_flicker(shaky, None, gapped)["generated"] == pytest.approx(per_pair[[0, 3, 4]].mean())
    alone = faces.subset([0] * 3)
    alone.valid[1] = False  # no two consecutive frames with a face
    assert math.isnan(compare_flicker(shaky[:3], frames[:3], alone)["ratio"])


def test_mismatched_counts_are_a_clear_error(still):
    frames, faces = still
    with pytest.raises(ValueError, match=f"{COUNT - 1} frames but {COUNT} aligned faces"):
        mouth_flicker(frames[:-1], faces)
    with pytest.raises(ValueError, match="more frames than faces"):
        compare_flicker(np.concatenate([frames, frames[:1]]), frames, faces)
