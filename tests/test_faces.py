"""The face pipeline (detect -> align -> mask -> paste back) against the reference's golden data, on the shared
clips, and on inputs built to break it.

Golden: misc_golden.safetensors from bytedance/LatentSync a229c39 (`AlignRestore(resolution=256)`, float32,
and `load_fixed_mask`). Tolerances: masks exact, matrices 1e-4, crops and restored frame +-1 grey level.
"""
from __future__ import annotations

import argparse
import json
import re

from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import shared_path
from sampler_fixtures import face_boxes, outside_boxes
from latentsync.cli.faces import add_faces_parser, faces_command
from latentsync.media.video import decode_frames
from latentsync.face.align import (FILL, align, anchors_in_frame, crop_displacement, crop_geometry, motion_stats,
                                   similarity_transform, smoothed_matrices, warp_face)
from latentsync.face.detect import (DetectedFace, FaceModelMissing, FaceTracker, check_selection, choose_face,
                                    detect_faces, make_detector, points3_from_dlib5, selection_problem,
                                    track_from_faces)
from latentsync.face.mask import latent_mask, pixel_mask
from latentsync.face.paste import _write, blend_mouth, paste_back, restore_region
from latentsync.upscale.resize import resize_nchw

CLIPS = ("latentsync_demo1_video.mp4", "latentsync_demo3_video.mp4")


def restore_frame(frame: np.ndarray, face: torch.Tensor, matrix: torch.Tensor, crop_wh: tuple[int, int]) -> np.ndarray:
    """One frame `[H, W, C]` with `face` (`[3, h, w]` in [-1, 1], any crop size) blended in, as `paste_back`
    blends each frame; a new array."""
    out = frame.copy()
    view = torch.from_numpy(out)
    result = restore_region(view, torch.as_tensor(face), matrix, crop_wh)
    if result is not None:
        _write(view, *result[:3], view.shape[-1])
    return out


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(shared_path("reference/latentsync/misc_golden.safetensors")))


@pytest.fixture(scope="module")
def detector():
    return make_detector("dlib")


def decode(clip: str, count: int | None = None, step: int = 1) -> np.ndarray:
    frames, _, _ = decode_frames(shared_path(f"media/{clip}"))
    kept = []
    for i, frame in enumerate(frames):
        if count is not None and i >= count * step:
            break
        if i % step == 0:
            kept.append(frame)
    return np.stack(kept)


@pytest.fixture(scope="module")
def small_frames() -> np.ndarray:
    """12 frames of demo1 at half size (540x960): the base of the bad-input cases, cheap to run."""
    frames = decode(CLIPS[0], count=12, step=3)
    return np.ascontiguousarray(frames[:, ::2, ::2])


# ---------------------------------------------------------------------------------------------- golden


def test_masks_equal_the_reference(golden):
    """Pixel masks exactly (256 from the shipped PNG, 512 by the Lanczos4 upscale), latent masks by nearest."""
    for resolution in (256, 512):
        pixels = pixel_mask(resolution)
        latent = latent_mask(pixels)
        assert torch.equal((pixels * 255).round().to(torch.uint8),
                           torch.from_numpy(golden[f"mask.pixel_{resolution}_uint8"]))
        assert torch.equal(latent, torch.from_numpy(golden[f"mask.latent_{resolution}"]))
    # 1 = keep: the upper face is kept, the mouth region regenerated
    mask = pixel_mask(256)
    assert mask[:64].min() == 1 and mask[200:230, 100:156].max() == 0
    assert abs(float(mask.mean()) - 0.5930023193359375) < 1e-6
    assert latent_mask(mask[None]).shape == (1, 32, 32)
    with pytest.raises(ValueError, match=r"resolution\b.*\b250\b"):
        pixel_mask(250)


def test_alignment_with_smoothing_matches_the_reference(golden):
    """Four frames in a row: matrices within 1e-4 and the smoothing state after each frame within 1e-5."""
    template, crop_wh = crop_geometry(256)
    assert crop_wh == (210, 280)
    bias = None
    for i in range(4):
        matrix, bias = similarity_transform(golden["align.landmarks3"][i], template, bias)
        np.testing.assert_allclose(matrix.numpy(), golden["align.affine_matrices"][i], atol=1e-4, rtol=0)
        np.testing.assert_allclose(bias.numpy(), golden["align.p_bias_after_each_frame"][i], atol=1e-5, rtol=0)
    matrices = smoothed_matrices(golden["align.landmarks3"], np.ones(4, bool), 256)
    np.testing.assert_allclose(matrices, golden["align.affine_matrices"], atol=1e-4, rtol=0)
    assert crop_geometry(512)[1] == (420, 560)


def test_crops_match_the_reference(golden):
    """The warped 210x280 crops of frames 0 and 3 (grey 127 outside the frame) within +-1 grey level."""
    for i in (0, 3):
        crop = warp_face(golden["align.frame_uint8"], golden["align.affine_matrices"][i], (210, 280))
        diff = np.abs(crop.numpy().astype(int) - golden[f"align.crop_frame{i}_uint8"].astype(int))
        assert diff.max() <= 1, (i, diff.max())


def test_restore_matches_the_reference(golden):
    frame = golden["align.frame_uint8"]
    out = restore_frame(frame, torch.from_numpy(golden["restore.face_input"]),
                        torch.from_numpy(golden["align.affine_matrices"][0]), (210, 280))
    diff = np.abs(out.astype(int) - golden["restore.frame_out_uint8"].astype(int))
    assert out.dtype == np.uint8 and diff.max() <= 1, diff.max()
    assert np.array_equal(frame, golden["align.frame_uint8"])  # the input is not modified


def test_faceless_frames_do_not_disturb_the_smoothing(golden):
    """A gap of frames without a face leaves the smoothing state as it was: the frames after it get the
    matrices they would get without the gap."""
    points = golden["align.landmarks3"]
    with_gap = np.concatenate([points[:2], np.full((5, 3, 2), np.nan, np.float32), points[2:]])
    valid = np.isfinite(with_gap).all(axis=(1, 2))
    matrices = smoothed_matrices(with_gap, valid, 256)
    np.testing.assert_allclose(matrices[valid], golden["align.affine_matrices"], atol=1e-4, rtol=0)
    assert np.isnan(matrices[~valid]).all()


# -------------------------------------------------------------------------------------- shared clips


@pytest.fixture(scope="module")
def clip_tracks(detector):
    """Each shared clip streamed through the tracker: its track, plus 3 frames kept for paste-back checks."""
    results = {}
    for clip in CLIPS:
        frames, _, _ = decode_frames(shared_path(f"media/{clip}"))
        tracker = FaceTracker(detector)
        faces, kept = [], {}
        for i, frame in enumerate(frames):
            faces.append(tracker.step(frame))
            if i in (0, 101, 233):
                kept[i] = frame
        results[clip] = (track_from_faces(faces, frame.shape[:2], detector.name), kept)
    return results


@pytest.mark.parametrize("clip", CLIPS)
def test_a_face_in_every_frame_of_the_shared_clips(clip, clip_tracks):
    track, _ = clip_tracks[clip]
    assert len(track) == {"latentsync_demo1_video.mp4": 250, "latentsync_demo3_video.mp4": 600}[clip]
    assert track.valid.all(), np.flatnonzero(~track.valid)
    widths = track.boxes[:, 2] - track.boxes[:, 0]
    assert 150 < np.median(widths) < 320  # the seated speaker's face, not a texture in the background


@pytest.mark.parametrize("clip", CLIPS)
def test_landmark_jitter_is_bounded(clip, clip_tracks):
    """Frame-to-frame motion of the three alignment points as the smoothed transforms place them (1080x1920,
    brow distance ~100 px). Jitter = RMS second difference; measured ~2.3-2.8 px (2.2-2.6 % of the brow
    distance) with dlib's 5-point model, so the bound is 5 %."""
    track, _ = clip_tracks[clip]
    smoothed = motion_stats(anchors_in_frame(smoothed_matrices(track.points3, track.valid, 256), 256))
    raw = motion_stats(track.points3.astype(np.float64))
    print(f"\n{clip}: raw points {raw}\n{clip}: smoothed anchors {smoothed}")
    assert smoothed["jitter_rel"] < 0.05 and smoothed["step_p95_px"] < 15


def test_dlib_point_mapping_against_68_point_brows_and_nose(clip_tracks):
    """The 5-point -> 3-point rule against the centroids of dlib's 68-point brows and nose (a stand-in for the
    reference's 106-point groups): how far apart the two alignments put the crop's corners, in crop px of
    the 210x280 crop (256 px). Measured mean ~9 px, p95 ~17 px."""
    import dlib

    from latentsync.face.detect import _face_recognition_model

    try:
        model = dlib.shape_predictor(str(_face_recognition_model("shape_predictor_68_face_landmarks.dat")))
    except FaceModelMissing:
        pytest.skip("no 68-point model to compare with")
    template, crop_wh = crop_geometry(256)
    distances = []
    for clip in CLIPS:
        track, kept = clip_tracks[clip]
        for i, frame in kept.items():
            box = [int(round(v)) for v in track.boxes[i]]
            shape = model(frame, dlib.rectangle(box[0], box[1], box[2] - 1, box[3] - 1))
            p = np.array([(q.x, q.y) for q in shape.parts()], np.float64)
            reference = np.stack([p[17:22].mean(0), p[22:27].mean(0), p[27:36].mean(0)])
            ours, _ = similarity_transform(track.points3[i], template, smooth=False)
            theirs, _ = similarity_transform(reference, template, smooth=False)
            distances.append(crop_displacement(ours.numpy(), theirs.numpy(), crop_wh))
    print(f"\ncrop displacement 5-point rule vs 68-point centroids: {np.round(distances, 2)}")
    assert np.mean(distances) < 16 and max(distances) < 32


@pytest.mark.parametrize("clip", CLIPS)
def test_paste_back_of_untouched_crops_changes_only_the_face_region(clip, clip_tracks):
    """align -> paste back the untouched crop: pixels outside the crop's footprint are bit-identical; inside,
    the two resamplings (frame -> 256 crop -> frame) change the face by <= 2 grey levels on average."""
    track, kept = clip_tracks[clip]
    indices = sorted(kept)
    frames = np.stack([kept[i] for i in indices])
    faces = align(frames, track.subset(indices), 256)
    out = paste_back(frames, faces, faces.pixel_values())
    for k in range(len(frames)):
        diff = np.abs(out[k].astype(int) - frames[k].astype(int)).max(axis=-1)
        ys, xs = np.nonzero(diff)
        x1, y1, x2, y2 = track.boxes[indices[k]]
        size = x2 - x1
        assert xs.min() > x1 - 1.5 * size and xs.max() < x2 + 1.5 * size
        assert ys.min() > y1 - 1.5 * size and ys.max() < y2 + 1.5 * size
        face = diff[int(y1):int(y2), int(x1):int(x2)]
        print(f"\n{clip} frame {indices[k]}: mean |diff| in the face box {face.mean():.2f}, p99 "
              f"{np.percentile(face, 99):.0f}, max {face.max()}; {len(xs)} pixels changed")
        assert face.mean() <= 2.0


def test_aligned_faces_subset_takes_rows_in_order(clip_tracks):
    track, kept = clip_tracks["latentsync_demo1_video.mp4"]
    indices = sorted(kept)[:3]
    faces = align(np.stack([kept[i] for i in indices]), track.subset(indices), 256)
    rows = [2, 0, 2]
    picked = faces.subset(rows)
    assert len(picked) == 3 and torch.equal(picked.crops, faces.crops[rows])
    assert torch.equal(picked.matrices, faces.matrices[rows]) and torch.equal(picked.valid, faces.valid[rows])
    assert picked.mask is faces.mask and (picked.resolution, picked.crop_wh) == (faces.resolution, faces.crop_wh)
    assert torch.equal(faces.subset(slice(1, 3)).crops, faces.crops[1:3])


def test_upscaled_crops_are_pasted_at_their_own_detail(clip_tracks):
    """A crop upscaled 2x (as the upscaler node makes it) lands where the 256 px crop lands and is warped from
    its own pixels: the result is as close to the source as the 256 px paste, and differs from it."""
    track, kept = clip_tracks["latentsync_demo1_video.mp4"]
    indices = sorted(kept)
    frames = np.stack([kept[i] for i in indices])
    faces = align(frames, track.subset(indices), 256)
    crops = faces.images()
    large = resize_nchw(crops.permute(0, 3, 1, 2), (512, 512), "bicubic").permute(0, 2, 3, 1)
    plain = paste_back(frames, faces, crops).astype(int)
    upscaled = paste_back(frames, faces, large).astype(int)
    assert np.abs(upscaled - frames.astype(int)).mean() <= np.abs(plain - frames.astype(int)).mean() + 0.05
    assert not np.array_equal(upscaled, plain)
    shifted = faces.matrices.clone()
    shifted[:, :, 2] += 20  # a wrong placement would show: it moves the face by tens of pixels
    assert np.abs(paste_back(frames, replace(faces, matrices=shifted), large).astype(int) - frames).mean() > \
        3 * np.abs(upscaled - frames.astype(int)).mean()
    with pytest.raises(ValueError, match="expected generated crops"):
        paste_back(frames, faces, torch.zeros(len(frames), 512, 384, 3))


# ---------------------------------------------------------------------------------------- bad inputs


def test_cut_away_frames_pass_through(small_frames, detector):
    """Black frames and frames without a face inside a clip: flagged, untouched by paste back; the smoothing
    of the frames after the cut-away is as if it were not there (the reference's low-pass in `align`; the
    tracker's landmark smoothing starts afresh after a cut-away, tests/test_smoothing.py)."""
    background = small_frames[:3].copy()
    background[:, :, :] = small_frames[:3, :120, :].mean(axis=(1, 2), keepdims=True).astype(np.uint8)
    background[:, 40:100] = small_frames[:3, :60]  # trees, no face
    black = np.zeros_like(small_frames[:2])
    clip = np.concatenate([small_frames[:6], black, background, small_frames[6:]])
    track = detect_faces(clip, detector, smoothing=False)
    expected = np.r_[np.ones(6, bool), np.zeros(5, bool), np.ones(6, bool)]
    assert np.array_equal(track.valid, expected), track.valid
    assert [f["box"] is None for f in track.faces_json()] == list(~expected)
    faces = align(clip, track, 256)
    assert (faces.crops[~expected] == int(FILL)).all()
    plain = align(small_frames, detect_faces(small_frames, detector, smoothing=False), 256)
    np.testing.assert_allclose(faces.matrices[expected].numpy(), plain.matrices.numpy(), atol=1e-4)
    generated = torch.zeros(len(clip), 3, 256, 256)  # a black face everywhere
    out = paste_back(clip, faces, generated)
    assert np.array_equal(out[~expected], clip[~expected])
    assert not np.array_equal(out[expected], clip[expected])


def _two_faces(frame: np.ndarray, scale_second: float) -> np.ndarray:
    """The frame with a second person to its right: the same frame mirrored and scaled from its top-left."""
    from PIL import Image

    h, w = frame.shape[:2]
    mirrored = Image.fromarray(np.ascontiguousarray(frame[:, ::-1]))
    scaled = np.asarray(mirrored.resize((int(w * scale_second), int(h * scale_second)), Image.BILINEAR))
    right = np.zeros_like(frame)
    right[:min(h, scaled.shape[0]), :min(w, scaled.shape[1])] = scaled[:h, :w]
    return np.ascontiguousarray(np.concatenate([frame, right], axis=1))


def test_two_faces_choice_and_tracking(small_frames, detector):
    frames = np.stack([_two_faces(f, 1.2) for f in small_frames[:4]])
    found = detector.detect(frames[0])
    assert len(found) == 2
    left, right = sorted(found, key=lambda f: f.centre[0])
    assert right.area > left.area
    largest = detect_faces(frames, detector)
    assert (largest.boxes[:, 0] > small_frames.shape[2]).all()  # the larger, right-hand face
    first = detect_faces(frames, detector, select="index", index=0)
    assert (first.boxes[:, 2] < small_frames.shape[2]).all()
    at = detect_faces(frames, detector, select="position", position=(0.2, 0.3))
    assert np.allclose(at.boxes, first.boxes)
    # once chosen, the face is followed even when the other one becomes larger
    shrinking = np.stack([_two_faces(small_frames[0], s) for s in (1.15, 1.09, 1.03, 0.97, 0.91, 0.86)])
    followed = detect_faces(shrinking, detector)
    assert followed.valid.all() and (followed.boxes[:, 0] > small_frames.shape[2]).all()
    assert choose_face([], "largest", 0, None, (10, 10)) is None
    assert choose_face(found, "index", 5, None, (10, 10)) is None
    with pytest.raises(ValueError, match=r"selection\b.*'nearest'"):
        detect_faces(frames, detector, select="nearest")


class _CountingDetector:
    """A detector that finds nothing and counts its calls: a bad selection must fail before any detection."""

    name = "counting"

    def __init__(self):
        self.calls = 0

    def detect(self, frame, around=None):
        self.calls += 1
        return []


@pytest.mark.parametrize("select, index, position, problem", [
    ("position", 0, (float("nan"), 0.5), "position"),
    ("position", 0, (0.5, float("inf")), "position"),
    ("position", 0, (-0.01, 0.5), "from 0 to 1"),
    ("position", 0, (0.5, 1.01), "from 0 to 1"),
    ("position", 0, (0.5,), "(x, y)"),
    ("index", -1, None, "face index"),
    ("index", 1.5, None, "whole number"),
    ("largest", -2, None, "face index"),  # checked whatever the rule: a bad value is a mistake either way
    ("nearest", 0, None, "unknown face selection"),
])
def test_a_bad_face_selection_is_an_error_not_a_clip_without_faces(small_frames, select, index, position, problem):
    assert problem in selection_problem(select, index, position)
    counting = _CountingDetector()
    with pytest.raises(ValueError, match=re.escape(problem)):
        detect_faces(small_frames[:2], counting, select=select, index=index, position=position)
    with pytest.raises(ValueError, match=re.escape(problem)):
        FaceTracker(counting, select, index, position)
    with pytest.raises(ValueError, match=re.escape(problem)):
        choose_face([], select, index, position, (10, 10))
    assert counting.calls == 0


def test_face_selection_edges_are_accepted():
    for select, index, position in [("position", 0, (0.0, 1.0)), ("position", 0, (1, 0)), ("index", 0, None),
                                    ("index", np.int64(3), None), ("largest", 0, None)]:
        assert selection_problem(select, index, position) is None
        check_selection(select, index, position)


def test_detect_faces_node_refuses_a_bad_selection_before_running(comfy_server):
    """ComfyUI skips its own min/max check for inputs the node validates itself, and NaN passes it anyway."""
    def prompt(**settings):
        inputs = {"images": ["1", 0], "resolution": "256", "detector": "dlib", "select": "position", "index": 0,
                  "position_x": 0.5, "position_y": 0.4, "threshold": -1.0} | settings
        return {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                               "color": 0}},
                "2": {"class_type": "LatentSyncDetectFaces", "inputs": inputs},
                "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 1]}}}

    for settings, problem in [({"position_x": float("nan")}, "position_x must be from 0 to 1, got nan"),
                              ({"position_y": 1.5}, "position_y must be from 0 to 1, got 1.5"),
                              ({"select": "index", "index": -1}, "index must be from 0 to 32, got -1")]:
        status, reply = comfy_server.queue(prompt(**settings))
        assert status == 400, reply
        details = " ".join(e["details"] for e in reply["node_errors"]["2"]["errors"])
        assert problem in details, details


def test_face_at_the_border(small_frames, detector):
    """Faces cut by the frame edge: either found (the crop is padded with grey 127) or passed through."""
    track = detect_faces(small_frames[:1], detector)
    x1, y1, x2, y2 = track.boxes[0]
    for keep in (0.7, 0.4):  # the part of the face left in the frame
        cut = np.ascontiguousarray(small_frames[:2, :, int(x2 - keep * (x2 - x1)):])
        shifted = detect_faces(cut, detector)
        faces = align(cut, shifted, 256)
        out = paste_back(cut, faces, faces.pixel_values())
        assert out.shape == cut.shape and out.dtype == cut.dtype
        if shifted.valid[0]:
            crop = warp_face(cut[0], faces.matrices[0].numpy(), faces.crop_wh)
            assert (crop[:, 0] == int(FILL)).all()  # the crop reaches past the frame's left edge
    # a face whose crop lies wholly outside the frame is restored as a no-op
    far = torch.tensor([[1.0, 0.0, 5000.0], [0.0, 1.0, 5000.0]])
    assert np.array_equal(restore_frame(small_frames[0], torch.zeros(3, 280, 210), far, (210, 280)), small_frames[0])


def test_grey_rgba_float_and_odd_sizes(small_frames, detector):
    """ComfyUI float images, grey and RGBA frames and odd sizes go through detect -> align -> paste back;
    the output keeps the input's type, shape and dtype, and alpha is untouched."""
    rgb = small_frames[:3, 101:434, 21:538]  # 333 x 517
    grey = rgb.mean(axis=-1, keepdims=True).astype(np.uint8)
    alpha = np.random.default_rng(0).random(rgb.shape[:3] + (1,), dtype=np.float32)
    rgba = torch.from_numpy(np.concatenate([rgb.astype(np.float32) / 255, alpha], axis=-1))
    for frames in (grey, rgba, torch.from_numpy(rgb.astype(np.float32) / 255)):
        track = detect_faces(frames, detector)
        assert track.valid.all()
        faces = align(frames, track, 256)
        out = paste_back(frames, faces, faces.images())
        assert type(out) is type(frames) and out.shape == frames.shape and out.dtype == frames.dtype
    rgba_faces = align(rgba, detect_faces(rgba, detector), 256)
    rgba_out = paste_back(rgba, rgba_faces, torch.zeros(3, 256, 256, 3))
    assert torch.equal(rgba_out[..., 3], rgba[..., 3])
    # float frames: pixels outside the crop's footprint are bit-identical; inside it the black crop shows
    for j, box in enumerate(face_boxes(rgba_faces)):
        assert box is not None, j
        keep = outside_boxes(tuple(rgba.shape[1:3]), box)
        assert torch.equal(rgba_out[j][keep], rgba[j][keep]), j
        changed = (rgba_out[j][~keep][:, :3] != rgba[j][~keep][:, :3]).any(dim=-1)
        assert changed.float().mean() > 0.3, (j, float(changed.float().mean()))
    tiny = np.zeros((2, 7, 5, 3), np.uint8)
    assert not detect_faces(tiny, detector).valid.any()
    empty = detect_faces(np.zeros((0, 64, 64, 3), np.uint8), detector)
    assert len(empty) == 0 and len(align(np.zeros((0, 64, 64, 3), np.uint8), empty, 256)) == 0
    with pytest.raises(ValueError, match=r"frames\b.*\(64, 64, 3\)"):
        detect_faces(np.zeros((64, 64, 3), np.uint8), detector)
    with pytest.raises(ValueError, match=r"\b2 frames\b.*\b3 aligned faces\b"):
        paste_back(small_frames[:2], align(small_frames[:3], detect_faces(small_frames[:3], detector), 256),
                   torch.zeros(3, 3, 256, 256))


def test_mask_semantics_in_the_blend(small_frames, detector):
    """blend_mouth keeps the crop where the mask is 1 and takes the generated pixels where it is 0."""
    faces = align(small_frames[:2], detect_faces(small_frames[:2], detector), 256)
    generated = torch.full((2, 3, 256, 256), -1.0)
    mixed = blend_mouth(generated, faces)
    keep = faces.mask == 1
    assert torch.equal(mixed[:, :, keep], faces.pixel_values()[:, :, keep])
    assert (mixed[:, :, faces.mask == 0] == -1).all()
    assert (faces.masked_pixel_values()[:, :, faces.mask == 0] == 0).all()
    assert faces.images().shape == (2, 256, 256, 3) and faces.latent_mask.shape == (1, 32, 32)


def test_dlib_point_mapping_geometry():
    """On an upright face the rule puts the brows above the eyes, mirror-symmetric, and the nose between the
    eyes and the base of the nose."""
    five = np.array([[160, 100], [130, 100], [40, 100], [70, 100], [100, 160]], np.float64)
    left, right, nose = points3_from_dlib5(five)
    assert left[0] < right[0] and left[1] < 100 and right[1] < 100
    assert abs((left[0] + right[0]) / 2 - 100) < 1e-4 and abs(left[1] - right[1]) < 1e-4
    assert nose[0] == pytest.approx(100) and 100 < nose[1] < 160


# ---------------------------------------------------------------------------------- insightface path


def test_insightface_without_models_names_the_files(tmp_path):
    with pytest.raises(FaceModelMissing) as caught:
        make_detector("insightface", models_dir=tmp_path)
    message = str(caught.value)
    assert "det_10g.onnx" in message and "2d106det.onnx" in message and str(tmp_path) in message
    assert "buffalo_l" in message and "models/insightface/models/buffalo_l" in message
    (tmp_path / "det_10g.onnx").write_bytes(b"not an onnx model")
    (tmp_path / "2d106det.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(FaceModelMissing, match="det_10g.onnx"):
        make_detector("insightface", models_dir=tmp_path)
    with pytest.raises(ValueError, match="face detector must be one of auto, dlib, dlib-cnn, insightface"):
        make_detector("mediapipe")


class _Input:
    def __init__(self, name):
        self.name = name


class _FakeScrfd:
    """SCRFD's 9 outputs for a 512x512 input with one face: anchor (stride 16, cell x=12, y=10, anchor 1)."""

    def get_inputs(self):
        return [_Input("input.1")]

    def run(self, names, feed):
        blob = feed["input.1"]
        assert blob.shape == (1, 3, 512, 512) and blob.dtype == np.float32
        outputs = []
        for stride in (8, 16, 32):
            outputs.append(np.zeros(((512 // stride) ** 2 * 2, 1), np.float32))
        for stride in (8, 16, 32):
            outputs.append(np.ones(((512 // stride) ** 2 * 2, 4), np.float32))
        for stride in (8, 16, 32):
            outputs.append(np.zeros(((512 // stride) ** 2 * 2, 10), np.float32))
        row = (10 * 32 + 12) * 2 + 1
        outputs[1][row] = 0.9
        outputs[4][row] = [4, 5, 4, 6]  # distances in strides: box 192-64, 160-80 .. 192+64, 160+96
        return outputs


class _FakeLandmarks:
    """106 points on a grid in the model's [-1, 1] output space."""

    def __init__(self):
        grid = np.linspace(-0.8, 0.8, 106)
        self.points = np.stack([grid, grid[::-1]], axis=1).astype(np.float32)

    def get_inputs(self):
        return [_Input("data")]

    def run(self, names, feed):
        assert feed["data"].shape == (1, 3, 192, 192)
        return [self.points.reshape(1, -1)]


def test_insightface_pre_and_post_processing():
    """Decoding of SCRFD's anchors, the frame rescale, the landmark crop and the reference's three points,
    with stand-in sessions (no weights here)."""
    from latentsync.face.insightface import InsightFaceDetector, decode_scrfd, nms, points3_from_106

    landmarks = _FakeLandmarks()
    detector = InsightFaceDetector(sessions=(_FakeScrfd(), landmarks))
    frame = np.zeros((1024, 768, 3), np.uint8)  # taller than wide: scaled by 0.5 to 384x512, padded right
    faces = detector.detect(frame)
    assert len(faces) == 1
    # anchor centre (192, 160) in the 512 input, distances 16 * (4, 5, 4, 6); the frame is twice as large
    np.testing.assert_allclose(faces[0].box, [(192 - 64) * 2, (160 - 80) * 2, (192 + 64) * 2, (160 + 96) * 2])
    assert faces[0].score == pytest.approx(0.9)
    x1, y1, x2, y2 = faces[0].box
    scale = 192 / (max(x2 - x1, y2 - y1) * 1.5)
    expected = ((landmarks.points.astype(np.float64) + 1) * 96 - 96) / scale + [(x1 + x2) / 2, (y1 + y2) / 2]
    np.testing.assert_allclose(detector.landmarks(frame, faces[0].box), expected, atol=1e-6)
    np.testing.assert_array_equal(faces[0].points3, points3_from_106(expected))
    lmk = np.round(expected)
    manual = np.round([lmk[[43, 48, 49, 51, 50]].mean(0), lmk[101:106].mean(0), lmk[[74, 77, 83, 86]].mean(0)])
    np.testing.assert_array_equal(faces[0].points3, manual)
    # below the threshold nothing is decoded; overlapping boxes are suppressed
    assert len(decode_scrfd(_FakeScrfd().run(None, {"input.1": np.zeros((1, 3, 512, 512), np.float32)}),
                            (512, 512), 0.95, 1.0)[0]) == 0
    boxes = np.array([[0, 0, 100, 100], [5, 5, 105, 105], [200, 200, 300, 300]], np.float64)
    assert nms(boxes, np.array([0.8, 0.9, 0.7])) == [1, 2]
    # the reference's size filter drops boxes under 50x80
    small = InsightFaceDetector(sessions=(_FakeScrfd(), landmarks))
    assert small.detect(np.zeros((128, 96, 3), np.uint8)) == []  # a 32x44 box


# ------------------------------------------------------------------------------------------------- CLI


def test_faces_cli(tmp_path, small_frames):
    """`python -m latentsync faces VIDEO --json`: one entry per frame, null where no face is usable."""
    import av

    path = tmp_path / "clip.mp4"
    frames = np.concatenate([small_frames[:4], np.zeros_like(small_frames[:2]), small_frames[4:6]])
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.bit_rate = 8_000_000
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    parser = argparse.ArgumentParser()
    add_faces_parser(parser.add_subparsers())
    result = faces_command(parser.parse_args(["faces", str(path), "--resolution", "512", "--json"]))
    json.dumps(result)
    assert result["frames"] == 8 and result["fps"] == 25.0 and result["crop_size"] == [420, 560]
    assert [f["frame"] for f in result["faces"]] == list(range(8))
    assert [f["box"] is None for f in result["faces"]] == [False] * 4 + [True] * 2 + [False] * 2
    assert all(len(f["box"]) == 4 for f in result["faces"] if f["box"] is not None)
    with pytest.raises(FileNotFoundError, match=r"missing\.mp4"):
        faces_command(parser.parse_args(["faces", str(tmp_path / "missing.mp4")]))
    with pytest.raises(FaceModelMissing):
        faces_command(parser.parse_args(["faces", str(path), "--detector", "insightface",
                                         "--insightface-dir", str(tmp_path)]))
    with pytest.raises(SystemExit):
        parser.parse_args(["faces", str(path), "--resolution", "384"])


def test_detected_face_helpers():
    face = DetectedFace(box=(10, 20, 50, 100), score=1.0, points3=np.zeros((3, 2), np.float32))
    assert face.area == 40 * 80 and face.centre == (30, 60)
    track = track_from_faces([face, None], (200, 100), "x")
    assert track.faces_json() == [{"frame": 0, "box": [10, 20, 50, 100]}, {"frame": 1, "box": None}]


def test_faces_command_is_wired_into_the_cli(tmp_path):
    from latentsync.cli import main as cli

    commands = cli.build_parser()._subparsers._group_actions[0].choices
    if "faces" not in commands:
        pytest.skip("the faces command is not wired into latentsync/cli.py yet")
    assert cli.main(["faces", str(tmp_path / "missing.mp4"), "--json"]) == 2


def test_inside_inference_mode(small_frames, detector):
    """ComfyUI runs nodes under torch.inference_mode()."""
    frames = torch.from_numpy(small_frames[:2].astype(np.float32) / 255)
    with torch.inference_mode():
        faces = align(frames, detect_faces(frames, detector), 256)
        out = paste_back(frames, faces, faces.images())
    assert out.shape == frames.shape and faces.valid.all()
