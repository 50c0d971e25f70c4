"""The seam around the regenerated lower face (`latentsync/face/seam.py`): the metric and the colour match, on
real aligned crops of the shared demo clip with the pack's real mouth mask.

A "generated" crop here is the original crop with a known colour shift (+12 grey levels on red, x0.9 on blue):
what the VAE's tint does to the regenerated region, with the content left the same.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_path

from latentsync.face.align import align
from latentsync.face.detect import detect_faces
from latentsync.face.mask import pixel_mask
from latentsync.face.paste import blend_mouth
from latentsync.face.seam import (
    COLOUR_MATCH,
    default_width,
    match_colour,
    seam_difference,
)
from latentsync.media.video import decode_frames

UNIT = 1 / 127.5  # one grey level in [-1, 1]


def tinted(crops: torch.Tensor) -> torch.Tensor:
    """+12 grey levels on red, x0.9 on blue (around black), clamped to [-1, 1]."""
    out = crops.clone()
    out[:, 0] += 12 * UNIT
    out[:, 2] = (out[:, 2] + 1) * 0.9 - 1
    return out.clamp(-1, 1)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    decoded, _, _ = decode_frames(shared_path("media/latentsync_demo1_video.mp4"))
    return np.stack([frame for i, frame in zip(range(24), decoded) if i % 8 == 0])  # 3 frames


@pytest.fixture(scope="module")
def track(frames):
    return detect_faces(frames, "dlib")


@pytest.fixture(scope="module")
def faces(frames, track):
    return align(frames, track, 256)


def test_the_metric_is_zero_for_identical_crops(faces):
    original = faces.pixel_values()
    assert seam_difference(original, original, faces.mask) < 1e-4
    assert seam_difference(blend_mouth(original, faces), original, faces.mask) < 1e-4


def test_a_colour_shift_makes_a_clear_seam_that_the_colour_match_removes(faces):
    original, mask = faces.pixel_values(), faces.mask
    generated = tinted(original)
    before = seam_difference(blend_mouth(generated, faces), original, mask)
    after = seam_difference(blend_mouth(match_colour(generated, original, mask), faces), original, mask)
    assert before > 4.0, before  # measured 6.3: (12 + about 0.1 x blue) / 3 channels, less where red clips
    assert after < before / 3, (before, after)  # measured 0.0: the shift is exactly affine
    assert after < 0.5, after


def test_the_match_fixes_a_shift_over_noise_by_a_margin(faces):
    """Noise the gain and offset cannot fit (6 grey levels, seeded) on top of the shift: still >= 3x better."""
    original, mask = faces.pixel_values(), faces.mask
    noise = torch.randn(original.shape, generator=torch.Generator().manual_seed(0)) * 6 * UNIT
    generated = tinted(original + noise)
    before = seam_difference(blend_mouth(generated, faces), original, mask)
    after = seam_difference(blend_mouth(match_colour(generated, original, mask), faces), original, mask)
    assert after * 3 < before, (before, after)  # measured 6.3 -> 1.15


def test_the_match_changes_nothing_measurable_on_an_unshifted_crop(faces):
    original, mask = faces.pixel_values(), faces.mask
    matched = match_colour(original, original, mask)
    assert float((matched - original).abs().max()) < 0.5 * UNIT


def test_the_kept_region_comes_back_untouched(faces):
    original, mask = faces.pixel_values(), faces.mask
    generated = tinted(original)
    matched = match_colour(generated, original, mask)
    kept = (mask == 1).expand_as(generated)
    assert torch.equal(matched[kept], generated[kept])
    assert float((matched - generated).abs()[~kept].max()) > 5 * UNIT  # the regenerated region did change


def test_the_match_is_deterministic_and_keeps_the_range(faces):
    original, mask = faces.pixel_values(), faces.mask
    generated = (original * 1.2 + 0.1).clamp(-1, 1)
    first, second = match_colour(generated, original, mask), match_colour(generated, original, mask)
    assert torch.equal(first, second)
    assert first.dtype == torch.float32 and first.shape == generated.shape
    assert float(first.min()) >= -1 and float(first.max()) <= 1


def test_512_crops(frames, track):
    faces = align(frames, track, 512)
    original, mask = faces.pixel_values(), faces.mask
    generated = tinted(original)
    assert default_width(512) == 2 * default_width(256)
    assert seam_difference(original, original, mask) < 1e-4
    before = seam_difference(blend_mouth(generated, faces), original, mask)
    after = seam_difference(blend_mouth(match_colour(generated, original, mask), faces), original, mask)
    assert before > 4.0 and after < before / 3, (before, after)  # measured 5.6 -> 0.0
    kept = (mask == 1).expand_as(generated)
    assert torch.equal(match_colour(generated, original, mask)[kept], generated[kept])


def test_the_real_mask_alone_is_enough():
    """No faces needed: flat grey crops, the generated one a shade lighter, give a seam of that shade."""
    mask = pixel_mask(256)
    original = torch.zeros(2, 3, 256, 256)
    generated = original + 10 * UNIT
    blended = generated * (1 - mask) + original * mask
    assert seam_difference(blended, original, mask) == pytest.approx(10, abs=0.01)
    assert seam_difference(match_colour(generated, original, mask) * (1 - mask) + original * mask, original,
                           mask) < 0.01


@pytest.mark.parametrize("blended, original, mask, match", [
    (torch.zeros(2, 3, 256, 256), torch.zeros(2, 3, 128, 128), pixel_mask(256), "original crops"),
    (torch.zeros(2, 256, 256, 3), torch.zeros(2, 256, 256, 3), pixel_mask(256), r"\[N, 3, 256, 256\]"),
    (torch.zeros(3, 256, 256), torch.zeros(3, 256, 256), pixel_mask(256), r"\[N, 3, 256, 256\]"),
    (torch.zeros(2, 3, 256, 256), torch.zeros(3, 3, 256, 256), pixel_mask(256), "differ"),
    (torch.zeros(2, 3, 256, 256), torch.zeros(2, 3, 256, 256), torch.zeros(256, 128), "square mask"),
    (torch.zeros(2, 3, 256, 256), torch.zeros(2, 3, 256, 256), torch.zeros(1, 256, 256), "square mask"),
])
def test_bad_shapes_are_a_clear_value_error(blended, original, mask, match):
    with pytest.raises(ValueError, match=match):
        seam_difference(blended, original, mask)
    with pytest.raises(ValueError, match=match):
        match_colour(blended, original, mask)


def test_bad_widths_are_a_clear_value_error():
    crops, mask = torch.zeros(1, 3, 256, 256), pixel_mask(256)
    for width in (0, -1, 2.5, True, 65):
        with pytest.raises(ValueError, match="seam band width must be a whole number of pixels from 1 to 64"):
            seam_difference(crops, crops, mask, width=width)
        with pytest.raises(ValueError, match="ring width"):
            match_colour(crops, crops, mask, ring=width)


def test_the_option_is_off_by_default():
    """Off: today's output stays bit for bit until a user asks for the match."""
    assert COLOUR_MATCH.default is False and COLOUR_MATCH.kind is bool
    assert COLOUR_MATCH.check(True) is True
    with pytest.raises(ValueError, match="colour_match must be true or false"):
        COLOUR_MATCH.check("yes")
