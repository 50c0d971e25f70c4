"""Upscaling: Real-ESRGAN model files, interpolation against torch and PIL, tiling, memory limits, CLI.

Models are random-weight networks in the official key layouts (tests/upscale_model_files.py), loaded through
the product path (spandrel). Tolerances are stated where a result is compared with a reference.
"""
from __future__ import annotations

import argparse
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from latentsync.cli.upscale import add_upscale_parser
from latentsync.upscale.resize import INTERPOLATION_MODES, resize_nchw
from latentsync.face.align import face_box_sizes
from latentsync.upscale.frames import upscale_frames, upscale_mouth_region
from latentsync.upscale.models import UpscaleModelError, check_upscale_model, load_upscale_model
from latentsync.upscale.tiling import Tiling, UpscaleMemoryError, tile_spans
from tests.upscale_model_files import build_realesrgan, write_not_an_upscaler, write_realesrgan

KINDS = {"x4plus": ("ESRGAN", 4), "x2plus": ("ESRGAN", 2), "animevideov3": ("RealESRGAN Compact", 4),
         "compact-x2": ("RealESRGAN Compact", 2)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("upscale_models")


@pytest.fixture(scope="module")
def models(model_dir) -> dict:
    return {kind: load_upscale_model(write_realesrgan(model_dir / f"{kind}.pth", kind)) for kind in KINDS}


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 image (smooth colour fields and a soft edge) that never saturates."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [0.5 + 0.3 * np.sin(7 * x + 3 * y + p + seed) * np.cos(5 * y - 2 * x + p)
                + 0.15 * np.tanh(20 * (np.hypot(x - 0.5, y - 0.5) - 0.25)) for p in (0, 1, 2)]
    return (np.clip(np.stack(channels, -1), 0, 1) * 255).round().astype(np.uint8)


def as_uint8(frame: torch.Tensor) -> np.ndarray:
    return (frame * 255).round().clamp(0, 255).to(torch.uint8).numpy().astype(int)


def resize_frames(frames: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """`[N, H, W, C]` frames through `resize_nchw`."""
    return resize_nchw(frames.permute(0, 3, 1, 2), size, mode).permute(0, 2, 3, 1)


# --- model files -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["params_ema", "params"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_official_layouts_load_and_compute_the_reference_function(model_dir, kind, key):
    model = load_upscale_model(write_realesrgan(model_dir / f"{kind}-{key}.pth", kind, key=key))
    architecture, scale = KINDS[kind]
    assert (model.architecture.name, model.scale) == (architecture, scale)
    x = torch.rand(2, 3, 12, 16)
    with torch.no_grad():
        expected = build_realesrgan(kind)(x).clamp(0, 1)
        assert torch.allclose(model(x), expected, atol=1e-5)


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_16_frame_batch_upscales_by_the_model_scale(models, kind):
    frames = torch.rand(16, 12, 20, 3)
    calls = []
    out = upscale_frames(frames, models[kind], tiling=Tiling(chunk=8),
                         progress=lambda done, total: calls.append((done, total)))
    scale = KINDS[kind][1]
    assert out.shape == (16, 12 * scale, 20 * scale, 3) and out.dtype == torch.float32
    assert calls == [(8, 16), (16, 16)]
    assert 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("kind, scale", [("x4plus", 2), ("animevideov3", 2), ("x2plus", 4), ("compact-x2", 1.5)])
def test_a_requested_scale_other_than_the_model_scale(models, kind, scale):
    out = upscale_frames(torch.rand(16, 8, 10, 3), models[kind], scale=scale)
    assert out.shape == (16, round(8 * scale), round(10 * scale), 3)


def test_chunking_does_not_change_the_result(models):
    frames = torch.rand(7, 10, 12, 3)
    one = upscale_frames(frames, models["x2plus"], tiling=Tiling(chunk=16))
    assert torch.allclose(one, upscale_frames(frames, models["x2plus"], tiling=Tiling(chunk=3)), atol=1e-6)


def test_a_spandrel_descriptor_as_comfyui_gives_it_is_accepted(model_dir):
    import spandrel

    descriptor = spandrel.ModelLoader().load_from_file(write_realesrgan(model_dir / "ui.pth", "compact-x2"))
    assert upscale_frames(torch.rand(2, 4, 4, 3), descriptor).shape == (2, 8, 8, 3)


def test_uint8_frames_are_read_as_0_to_255(models):
    frames = torch.randint(0, 256, (2, 6, 6, 3), dtype=torch.uint8)
    assert torch.allclose(upscale_frames(frames, "nearest", scale=2),
                          upscale_frames(frames.float() / 255, "nearest", scale=2))


# --- bad input ---------------------------------------------------------------------------------------------

def test_a_checkpoint_that_is_not_an_upscaler_says_what_it_looks_like(model_dir):
    with pytest.raises(UpscaleModelError, match=r"not an image super-resolution model.*VAE"):
        load_upscale_model(write_not_an_upscaler(model_dir / "vae.pth"))


def test_whisper_checkpoint_is_recognised(model_dir):
    from scripts.model_files import write_whisper_checkpoint

    with pytest.raises(UpscaleModelError, match="whisper"):
        load_upscale_model(write_whisper_checkpoint(model_dir / "tiny.pt"))


def test_files_that_are_not_checkpoints(model_dir):
    junk = model_dir / "junk.pth"
    junk.write_bytes(b"\x89PNG not a checkpoint")
    with pytest.raises(UpscaleModelError, match=r"junk\.pth is neither a safetensors nor a PyTorch checkpoint"):
        load_upscale_model(junk)
    onnx = model_dir / "model.onnx"
    onnx.write_bytes(b"onnx")
    with pytest.raises(UpscaleModelError, match=r"model\.onnx is neither.*nothing was loaded"):
        load_upscale_model(onnx)
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        load_upscale_model(model_dir / "missing.pth")


def test_objects_that_are_not_upscalers_are_refused():
    with pytest.raises(UpscaleModelError, match="not an upscale model"):
        check_upscale_model(torch.nn.Conv2d(3, 3, 3))
    with pytest.raises(ValueError, match="unknown method"):
        upscale_frames(torch.rand(1, 4, 4, 3), "cubic", scale=2)
    with pytest.raises(ValueError, match="needs a scale or a size"):
        upscale_frames(torch.rand(1, 4, 4, 3), "bicubic")
    with pytest.raises(ValueError, match="either a scale or a size"):
        upscale_frames(torch.rand(1, 4, 4, 3), "bicubic", scale=2, size=(8, 8))


def test_a_result_larger_than_memory_is_refused_before_any_work(models):
    with pytest.raises(UpscaleMemoryError, match=r"40000x40000.*GiB of RAM"):
        upscale_frames(torch.rand(16, 64, 64, 3), models["animevideov3"], scale=625)


def test_a_resize_whose_frame_does_not_fit_is_refused():
    with pytest.raises(UpscaleMemoryError, match="resizing one frame to 800x800"):
        upscale_frames(torch.rand(1, 8, 8, 3), "bicubic", scale=100, tiling=Tiling(max_memory=1_000_000))


def test_a_model_that_cannot_fit_even_in_small_tiles_is_refused(models):
    with pytest.raises(UpscaleMemoryError, match="even with 32 px tiles"):
        upscale_frames(torch.rand(1, 64, 64, 3), models["x4plus"], tiling=Tiling(max_memory=200_000))


@pytest.mark.parametrize("kind", ["x2plus", "animevideov3"])
def test_one_pixel_frames(models, kind):
    frame = torch.rand(3, 1, 1, 3)
    scale = KINDS[kind][1]
    assert upscale_frames(frame, models[kind]).shape == (3, scale, scale, 3)
    for mode in INTERPOLATION_MODES:
        out = upscale_frames(frame, mode, scale=4)
        assert out.shape == (3, 4, 4, 3)
        assert torch.allclose(out, frame.expand(3, 4, 4, 3), atol=1e-6), mode
    assert upscale_frames(torch.rand(1, 5, 7, 3), "lanczos", size=(1, 1)).shape == (1, 1, 1, 3)


# --- tiling and memory -------------------------------------------------------------------------------------

def test_tile_spans_cover_the_axis_with_the_overlap_on_the_model_grid():
    assert tile_spans(100, 40, 8) == [(0, 40), (30, 40), (60, 40)]
    spans = tile_spans(90, 40, 8, multiple=4)
    assert all(start % 4 == 0 for start, _ in spans) and spans[-1][0] + spans[-1][1] == 90
    assert all(b[0] <= a[0] + a[1] - 8 for a, b in zip(spans, spans[1:]))
    assert tile_spans(30, 40, 8) == [(0, 30)]


@pytest.mark.parametrize("kind", ["animevideov3", "x2plus"])
def test_tiles_blend_without_seams(models, kind):
    frames = torch.from_numpy(smooth_image(70, 90)).float()[None] / 255
    whole = upscale_frames(frames, models[kind], tiling=Tiling(tile=512))
    totals = []
    tiled = upscale_frames(frames, models[kind], tiling=Tiling(tile=40, overlap=10),
                           progress=lambda d, t: totals.append(t))
    assert totals[-1] == 6  # 2 rows x 3 columns of tiles
    difference = (whole - tiled).abs()
    # Random weights see far; what is left is the receptive field beyond the overlap, well under one 8-bit level.
    assert difference.mean() < 2e-4 and difference.max() < 4 / 255


def test_a_small_memory_budget_tiles_automatically(models):
    frames = torch.rand(2, 64, 64, 3)
    whole = upscale_frames(frames, models["animevideov3"])
    totals = []
    limited = upscale_frames(frames, models["animevideov3"], tiling=Tiling(max_memory=12 * 2 ** 20),
                             progress=lambda d, t: totals.append(t))
    assert totals[-1] > 2
    assert (whole - limited).abs().mean() < 1e-3


class FlakyMemoryModel:
    """A model that runs out of memory on batches larger than `max_pixels` input pixels, like a full GPU."""

    def __init__(self, inner, max_pixels: int):
        self.inner, self.max_pixels, self.calls = inner, max_pixels, []
        self.scale, self.model = inner.scale, inner.model

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        if x.shape[0] * x.shape[2] * x.shape[3] > self.max_pixels:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


def test_out_of_memory_halves_the_batch_then_the_tile(models):
    frames = torch.rand(4, 64, 64, 3)
    flaky = FlakyMemoryModel(models["compact-x2"], max_pixels=40 * 40)
    out = upscale_frames(frames, flaky, tiling=Tiling(tile=64, chunk=4))
    assert (4, 3, 64, 64) in flaky.calls and (1, 3, 64, 64) in flaky.calls
    assert max(b * h * w for b, _, h, w in flaky.calls[-4:]) <= 40 * 40
    assert (out - upscale_frames(frames, models["compact-x2"])).abs().mean() < 1e-3
    with pytest.raises(UpscaleMemoryError, match="out of memory"):
        upscale_frames(frames, FlakyMemoryModel(models["compact-x2"], max_pixels=10), tiling=Tiling(tile=64))


def test_the_model_is_put_back_after_a_run_and_after_a_cancel(models):
    model = models["compact-x2"]
    upscale_frames(torch.rand(2, 8, 8, 3), model, dtype=torch.bfloat16)
    assert next(model.model.parameters()).dtype == torch.float32

    def cancel(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        upscale_frames(torch.rand(4, 8, 8, 3), model, tiling=Tiling(chunk=1), dtype=torch.bfloat16, progress=cancel)
    assert next(model.model.parameters()).dtype == torch.float32


# --- interpolation -----------------------------------------------------------------------------------------

SIZES = [(106, 74), (71, 29), (26, 18), (160, 5), (1, 1)]


@pytest.mark.parametrize("size", SIZES)
def test_interpolation_is_torch_interpolate(size):
    frames = torch.rand(3, 37, 53, 3)
    nchw = frames.permute(0, 3, 1, 2)
    w, h = size
    expected = {
        "nearest": F.interpolate(nchw, size=(h, w), mode="nearest-exact"),
        "bilinear": F.interpolate(nchw, size=(h, w), mode="bilinear", antialias=True),
        "bicubic": F.interpolate(nchw, size=(h, w), mode="bicubic", antialias=True).clamp(0, 1),
        "area": F.interpolate(nchw, size=(h, w), mode="area"),
    }
    for mode, reference in expected.items():
        assert torch.equal(upscale_frames(frames, mode, size=size), reference.permute(0, 2, 3, 1)), mode


@pytest.mark.parametrize("size", SIZES + [(53 * 4, 37 * 4), (400, 300)])
@pytest.mark.parametrize("mode, pil_filter", [("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC),
                                              ("lanczos", Image.LANCZOS)])
def test_interpolation_matches_pil_within_one_level(mode, pil_filter, size):
    # PIL works in uint8 with fixed-point weights and rounds between its passes: at most 1 level in 255 apart.
    image = smooth_image(37, 53)
    ours = as_uint8(resize_frames(torch.from_numpy(image).float()[None] / 255, size, mode)[0])
    pil = np.asarray(Image.fromarray(image).resize(size, pil_filter)).astype(int)
    assert np.abs(ours - pil).max() <= 1
    assert np.abs(ours - pil).mean() < 0.35


def test_nearest_and_area_match_pil_for_whole_factors():
    image = smooth_image(40, 60)
    frames = torch.from_numpy(image).float()[None] / 255
    for size in [(120, 80), (240, 160), (30, 20), (15, 10)]:
        ours = as_uint8(resize_frames(frames, size, "nearest")[0])
        assert np.array_equal(ours, np.asarray(Image.fromarray(image).resize(size, Image.NEAREST))), size
    for size in [(30, 20), (15, 10), (20, 10)]:
        ours = as_uint8(resize_frames(frames, size, "area")[0])
        assert np.abs(ours - np.asarray(Image.fromarray(image).resize(size, Image.BOX)).astype(int)).max() <= 1


def test_lanczos_on_saturated_noise_stays_close_to_pil():
    # Clipping between passes matters here; when PIL's pass order is the same as ours the results agree to a level.
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for size in [(106, 74), (26, 18), (40, 60)]:
        ours = as_uint8(resize_frames(torch.from_numpy(image).float()[None] / 255, size, "lanczos")[0])
        assert np.abs(ours - np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS)).astype(int)).max() <= 1


# --- face crops --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, size", [("animevideov3", (128, 128)), ("x2plus", (150, 170)), ("x2plus", (64, 64))])
def test_mouth_only_mode_uses_the_model_only_in_the_mouth(models, kind, size):
    crops = torch.from_numpy(np.stack([smooth_image(64, 64, seed) for seed in range(3)])).float() / 255
    mask = torch.ones(64, 64)
    mask[36:60, 12:52] = 0  # LatentSync: 0 = regenerated (the mouth)
    calls = []
    out = upscale_mouth_region(crops, mask, models[kind], size=size, progress=lambda d, t: calls.append(t))
    base = upscale_frames(crops, "bicubic", size=size)
    full = upscale_frames(crops, models[kind], size=size)
    mouth = 1 - F.interpolate(mask[None, None], size=size[::-1], mode="bilinear")[0, 0]
    reach = math.ceil(3 * 0.03 * min(size)) + 1  # the default feather's Gaussian, 3 sigma
    far_from_mouth = F.max_pool2d(mouth[None, None], 2 * reach + 1, 1, reach)[0, 0] == 0
    assert out.shape == (3, size[1], size[0], 3)
    assert torch.equal(out[:, far_from_mouth], base[:, far_from_mouth])
    inside = F.max_pool2d(-mouth[None, None], 2 * reach + 1, 1, reach)[0, 0] == -1  # the mouth within the edge
    assert inside.any() and (out[:, inside] - full[:, inside]).abs().max() < 2e-3
    assert calls  # the model ran and reported progress


def test_mouth_only_mode_without_a_mouth_is_the_interpolation(models):
    crops = torch.rand(2, 32, 32, 3)
    out = upscale_mouth_region(crops, torch.ones(2, 32, 32), models["x4plus"], scale=2)
    assert torch.equal(out, upscale_frames(crops, "bicubic", scale=2))


# --- CLI ---------------------------------------------------------------------------------------------------

def run_cli(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    add_upscale_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["upscale", *argv])
    return json.loads(json.dumps(args.run(args)))


def test_cli_upscales_an_image_with_a_model(tmp_path, model_dir):
    model = write_realesrgan(model_dir / "cli-x2.pth", "x2plus")
    Image.fromarray(smooth_image(20, 30)).save(tmp_path / "in.png")
    summary = run_cli(str(tmp_path / "in.png"), "--out", str(tmp_path / "out.png"), "--model", str(model))
    assert summary["output_size"] == [60, 40] and summary["model"]["scale"] == 2
    assert Image.open(tmp_path / "out.png").size == (60, 40)
    summary = run_cli(str(tmp_path / "in.png"), "--out", str(tmp_path / "small.png"), "--mode", "lanczos",
                      "--size", "15x10")
    assert Image.open(tmp_path / "small.png").size == (15, 10) and summary["method"] == "lanczos"


def write_test_video(path: Path, frames: int = 6, size: tuple[int, int] = (30, 22)) -> Path:
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = size[0] + size[0] % 2, size[1] + size[1] % 2, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        for i in range(frames):
            image = np.roll(smooth_image(video.height, video.width), 2 * i, axis=1)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(16000 * frames / 25)) / 16000)).astype(np.float32)
        samples = av.AudioFrame.from_ndarray(tone[None], format="flt", layout="mono")
        samples.sample_rate, samples.pts, samples.time_base = 16000, 0, Fraction(1, 16000)
        for packet in list(audio.encode(samples)) + list(audio.encode()) + list(video.encode()):
            container.mux(packet)
    return path


def test_cli_upscales_a_video_and_keeps_its_audio(tmp_path, model_dir):
    import av

    source = write_test_video(tmp_path / "in.mp4")
    summary = run_cli(str(source), "--out", str(tmp_path / "out.mp4"), "--model",
                      str(write_realesrgan(model_dir / "cli-compact.pth", "compact-x2")), "--chunk", "4")
    assert summary["frames"] == 6 and summary["output_size"] == [60, 44] and summary["audio"] == "copied (aac)"
    with av.open(str(tmp_path / "out.mp4")) as result:
        assert (result.streams.video[0].width, result.streams.video[0].height) == (60, 44)
        assert len(list(result.decode(video=0))) == 6
        assert result.streams.audio
    # yuv420p needs even sizes, so an odd request is rounded up.
    summary = run_cli(str(source), "--out", str(tmp_path / "odd.mp4"), "--mode", "bicubic", "--size", "45x33")
    assert summary["output_size"] == [46, 34]


def test_face_box_sizes_follow_the_face_in_the_frame():
    # A face 2.5x larger in the frame than in its 210x280 crop, rotated by 10 degrees.
    angle, scale = math.radians(10), 1 / 2.5
    linear = scale * torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    matrix = torch.cat([linear, torch.tensor([[-300.0], [-120.0]])], dim=1).to(torch.float64)
    matrices = torch.stack([matrix, torch.full((2, 3), float("nan"), dtype=torch.float64)])
    sizes = face_box_sizes(matrices, (210, 280))
    assert sizes == [(525, 700), (210, 280)]


# --- memory guards -----------------------------------------------------------------------------------------

@pytest.fixture
def one_mib_free(monkeypatch):
    from latentsync.core import memory

    monkeypatch.setattr(memory, "available_ram", lambda: 2**20)


def test_an_output_size_beyond_memory_names_the_inputs_to_lower(one_mib_free):
    with pytest.raises(UpscaleMemoryError, match=r"2 frames of 512x512, float32\) needs 6.0 MiB of RAM and only "
                                                 r"1.0 MiB is available; lower the scale or the output size"):
        upscale_frames(torch.rand(2, 64, 64, 3), "bicubic", size=(512, 512))


def test_the_mouth_blend_is_checked_before_it_is_made(models, one_mib_free):
    crops, mask = torch.rand(2, 16, 16, 3), torch.ones(2, 16, 16)
    mask[:, 10:, 4:12] = 0
    # The result itself is allowed (max_output_bytes, max_memory): the blend weights are what does not fit.
    with pytest.raises(UpscaleMemoryError, match=r"the mouth blend of 2 crops at 256x256 needs 2.0 MiB of RAM"):
        upscale_mouth_region(crops, mask, models["compact-x2"], size=(256, 256), max_output_bytes=2**30,
                             tiling=Tiling(max_memory=2**30))
