"""Restore Mouths: a face restorer on the generated crops, blended only where the mouth was regenerated.

Models are random-weight networks in the released layouts (tests/upscale_model_files.py), loaded through the
product path (read_checkpoint, then spandrel). The blend's properties are checked with a tiny RestoreFormer run
at 128 px (`FaceRestorer.size`; the released models run at 512) so each call takes a fraction of a second;
GFPGAN and CodeFormer, fixed at their released sizes, run on one crop each.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import missing
from latentsync.upscale.frames import mouth_weight, upscale_frames
from latentsync.upscale.restore import (FaceRestorer, FaceRestorerError, MouthBlend, check_face_restorer,
                                        load_face_restorer, restore_mouths)
from latentsync.upscale.tiling import Tiling, UpscaleMemoryError
from tests.upscale_model_files import (write_codeformer, write_gfpgan, write_not_an_upscaler, write_realesrgan,
                                       write_restoreformer)

CROP = 64
SMALL_FACE = 128  # the tiny RestoreFormer's working size in these tests


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("facerestore_models")


@pytest.fixture(scope="module")
def restorer(model_dir) -> FaceRestorer:
    model = load_face_restorer(write_restoreformer(model_dir / "RestoreFormer.pth"))
    model.size = SMALL_FACE
    return model


@pytest.fixture(scope="module")
def mask() -> torch.Tensor:
    mask = torch.ones(CROP, CROP)
    mask[36:60, 12:52] = 0  # LatentSync: 0 = regenerated (the mouth)
    return mask


def crops(count: int = 3, seed: int = 0) -> torch.Tensor:
    """Photo-like crops: smooth colour fields, so a restorer and bicubic resizing behave as on faces."""
    y, x = torch.meshgrid(torch.linspace(0, 1, CROP), torch.linspace(0, 1, CROP), indexing="ij")
    out = [torch.stack([0.5 + 0.3 * torch.sin(7 * x + 3 * y + c + i + seed) * torch.cos(5 * y - 2 * x + c)
                        for c in range(3)], -1) for i in range(count)]
    return torch.stack(out).clamp(0, 1)


def restored_alone(model: FaceRestorer, images: torch.Tensor, side: int) -> torch.Tensor:
    """The restorer's output at `side`, computed here as the documented path: resize to the model, run, resize."""
    from latentsync.upscale.resize import resize_nchw

    x = resize_nchw(images.permute(0, 3, 1, 2), (model.size, model.size), "bicubic")
    with torch.no_grad():
        y = model(x)
    return resize_nchw(y, (side, side), "bicubic").permute(0, 2, 3, 1)


# --- the blend ---------------------------------------------------------------------------------------------

def test_strength_zero_returns_the_input_or_its_bicubic_enlargement_exactly(restorer, mask):
    images = crops()
    assert torch.equal(restore_mouths(images, mask, restorer, blend=MouthBlend(0), size=CROP), images)
    bigger = restore_mouths(images, mask, restorer, blend=MouthBlend(0))  # default side: the model's, 128 > 64
    assert bigger.shape == (3, SMALL_FACE, SMALL_FACE, 3)
    assert torch.equal(bigger, upscale_frames(images, "bicubic", size=(SMALL_FACE, SMALL_FACE), device="cpu"))


@pytest.mark.parametrize("side", [CROP, 96])
def test_pixels_outside_the_feathered_mouth_never_change(restorer, mask, side):
    images = crops()
    out = restore_mouths(images, mask, restorer, blend=MouthBlend(1.0), size=side)
    base = upscale_frames(images, "bicubic", size=(side, side), device="cpu")
    outside = mouth_weight(mask, 3, (side, side), 0.03)[0] == 0
    assert outside.float().mean() > 0.3 and torch.equal(out[:, outside], base[:, outside])
    assert not torch.equal(out, base)  # and the mouth did change


def test_the_mouth_moves_toward_the_restored_face_in_proportion_to_strength(restorer, mask):
    images = crops(2)
    restored = restored_alone(restorer, images, CROP)
    weight = mouth_weight(mask, 2, (CROP, CROP), 0.03)[0][None, :, :, None]
    for strength in (0.3, 0.7, 1.0):
        out = restore_mouths(images, mask, restorer, blend=MouthBlend(strength), size=CROP)
        expected = images + strength * weight * (restored - images)
        assert (out - expected).abs().max() < 1e-5, strength
    inside = weight[0, :, :, 0] > 0.99
    half, full = (restore_mouths(images, mask, restorer, blend=MouthBlend(s), size=CROP) for s in (0.5, 1.0))
    assert torch.allclose((half - images)[:, inside], 0.5 * (full - images)[:, inside], atol=1e-5)
    assert (full - images)[:, inside].abs().mean() > 0.01  # the restorer really moved the mouth


def test_a_batch_is_the_single_calls_and_chunking_does_not_matter(restorer, mask):
    images = crops(3)
    batch = restore_mouths(images, mask, restorer, tiling=Tiling(chunk=3))
    singles = torch.cat([restore_mouths(images[i:i + 1], mask, restorer) for i in range(3)])
    assert torch.allclose(batch, singles, atol=1e-5)
    assert torch.allclose(restore_mouths(images, mask, restorer, tiling=Tiling(chunk=1)), batch, atol=1e-5)
    per_crop = torch.stack([mask] * 3)  # one mask per crop, as [N, H, W, 1] too
    assert torch.allclose(restore_mouths(images, per_crop[..., None], restorer, tiling=Tiling(chunk=3)), batch,
                          atol=1e-5)


def test_out_of_memory_halves_the_chunk_and_gives_the_same_result(restorer, mask, monkeypatch):
    images = crops(4)
    expected = restore_mouths(images, mask, restorer, tiling=Tiling(chunk=4))
    original, calls = FaceRestorer.__call__, []

    def out_of_memory_once(self, x):  # the first call runs out of memory, like a full GPU
        calls.append(x.shape[0])
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, x)

    monkeypatch.setattr(FaceRestorer, "__call__", out_of_memory_once)
    out = restore_mouths(images, mask, restorer, tiling=Tiling(chunk=4))
    assert calls == [4, 2, 2]
    assert torch.allclose(out, expected, atol=1e-5)


def test_progress_reaches_the_total_and_a_raising_progress_cancels(restorer, mask):
    calls = []
    restore_mouths(crops(3), mask, restorer, tiling=Tiling(chunk=2),
                   progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (3, 3) and [done for done, _ in calls] == sorted(done for done, _ in calls)

    def cancel(done, total):
        raise KeyboardInterrupt

    restorer.model.to(torch.float64)
    try:
        with pytest.raises(KeyboardInterrupt):
            restore_mouths(crops(3), mask, restorer, tiling=Tiling(chunk=1), dtype=torch.float32, progress=cancel)
        assert next(restorer.model.parameters()).dtype == torch.float64  # put back after the cancel
    finally:
        restorer.model.to(torch.float32)


def test_no_mouth_runs_no_model(restorer):
    calls = []
    out = restore_mouths(crops(2), torch.ones(CROP, CROP), restorer, size=CROP,
                         progress=lambda d, t: calls.append((d, t)))
    assert torch.equal(out, crops(2)) and calls == [(2, 2)]


def test_a_memory_budget_below_one_crop_is_refused_before_any_work(restorer, mask):
    with pytest.raises(UpscaleMemoryError, match="needs about"):
        restore_mouths(crops(2), mask, restorer, tiling=Tiling(max_memory=1000))


# --- temporal: the restored change steadied over the clip -------------------------------------------------------

GRAIN = 2 / 255  # a still camera's grain: the unrestored clip's own frame-to-frame change
FLICKER = 3 / 255  # the stand-in restorer's tone, drawn afresh for every crop


class FlickeringRestorer(FaceRestorer):
    """A stand-in for a restorer that flickers: a fixed change (a little brighter) plus a brightness drawn afresh
    for each crop. A brightness (not per-pixel noise) survives the resizes to and from the model's size whole."""

    def __init__(self, descriptor, seed: int = 0):
        super().__init__(descriptor)
        self.size, self.generator = SMALL_FACE, torch.Generator().manual_seed(seed)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        tone = FLICKER * torch.randn(image.shape[0], 1, 1, 1, generator=self.generator)
        return (image + 0.05 + tone.to(image)).clamp(0, 1)


def still_clip(count: int, seed: int = 1) -> torch.Tensor:
    """One crop `count` times, each with its own grain (a still scene filmed by a real camera)."""
    grain = GRAIN * torch.randn(count, CROP, CROP, 1, generator=torch.Generator().manual_seed(seed))
    return (crops(1) + grain).clamp(0, 1)


def crop_faces(count: int, mask: torch.Tensor):
    """`AlignedFaces` for crops that are their own frames (identity matrices), to measure the crops' mouths."""
    from latentsync.face.align import AlignedFaces

    matrices = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(count, 2, 3)
    return AlignedFaces(crops=torch.zeros(count, CROP, CROP, 3, dtype=torch.uint8), matrices=matrices,
                        valid=torch.ones(count, dtype=torch.bool), resolution=CROP, crop_wh=(CROP, CROP),
                        frame_hw=(CROP, CROP), mask=mask, latent_mask=mask[None, ::8, ::8])


def test_temporal_zero_is_todays_result_bit_for_bit(restorer, mask):
    images = still_clip(4)
    today = restore_mouths(images, mask, restorer, blend=MouthBlend(1.0), size=CROP)
    assert torch.equal(restore_mouths(images, mask, restorer, blend=MouthBlend(1.0, temporal=0.0), size=CROP), today)
    steadied = restore_mouths(images, mask, restorer, blend=MouthBlend(1.0, temporal=0.5), size=CROP)
    assert torch.allclose(steadied[0], today[0], atol=1e-6)  # the average starts at the first crop's change
    assert not torch.allclose(steadied[1:], today[1:], atol=1e-4)
    outside = mouth_weight(mask, 1, (CROP, CROP), 0.03)[0] == 0
    assert torch.equal(steadied[:, outside], images[:, outside])  # still only the mouth
    with pytest.raises(ValueError, match="temporal must be a number from 0 to 0.95, got 1"):
        MouthBlend(temporal=1.0)


def test_temporal_keeps_a_flickering_restorer_from_adding_flicker(restorer, mask):
    """A still clip (grain only) through a restorer whose tone jumps by FLICKER (3 levels) a crop: at temporal 0
    the mouth flickers well above the clip's own grain, at 0.8 the jumps are averaged down (the change's frame-to-
    frame step shrinks to about (1 - 0.8) / sqrt(1 - 0.8**2) ~ 1/3, ~0.7 levels against the grain's ~2.8) and the
    mouth is within 5 % of the unrestored clip's flicker."""
    from latentsync.score.flicker import compare_flicker

    count = 24
    images, faces = still_clip(count), crop_faces(count, mask)
    flicker = {}
    for temporal in (0.0, 0.8):
        model = FlickeringRestorer(restorer.descriptor)
        out = restore_mouths(images, mask, model, blend=MouthBlend(1.0, temporal=temporal), size=CROP,
                             tiling=Tiling(chunk=5))
        flicker[temporal] = compare_flicker(out, images, faces)
    assert flicker[0.0]["source"] > 1  # the grain: levels of 0-255
    assert flicker[0.0]["ratio"] > 1.15, flicker
    assert flicker[0.8]["ratio"] <= 1.05, flicker


def test_temporal_state_crosses_chunks_and_restarts_at_a_faceless_crop(restorer, mask):
    images = still_clip(6)
    images[3] = 127 / 255  # the sampler's crop of a frame without a face
    blend = MouthBlend(1.0, temporal=0.6)
    whole = restore_mouths(images, mask, restorer, blend=blend, size=CROP, tiling=Tiling(chunk=6))
    for chunk in (1, 4):
        chunked = restore_mouths(images, mask, restorer, blend=blend, size=CROP, tiling=Tiling(chunk=chunk))
        assert torch.allclose(chunked, whole, atol=1e-5), chunk
    today = restore_mouths(images, mask, restorer, blend=MouthBlend(1.0), size=CROP)
    # The grey crop and the one after it start afresh: as without the average; the one before does not.
    assert torch.allclose(whole[3:5], today[3:5], atol=1e-5) and not torch.allclose(whole[2], today[2], atol=1e-4)
    alone = restore_mouths(images[4:], mask, restorer, blend=blend, size=CROP)
    assert torch.allclose(whole[4:], alone, atol=1e-5)


# --- released layouts --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gfpgan_file(model_dir) -> Path:
    return write_gfpgan(model_dir / "GFPGANv1.4.pth")


def test_gfpgan_v1_4_loads_and_restores_deterministically(gfpgan_file, mask):
    model = load_face_restorer(gfpgan_file)
    assert (model.architecture, model.size, model.scale) == ("GFPGAN", 512, 1)
    image = crops(1)
    first = restore_mouths(image, mask, model, size=CROP)
    assert torch.equal(first, restore_mouths(image, mask, model, size=CROP))  # the stored noise, not fresh noise
    assert not torch.equal(first, image)


@pytest.fixture(scope="module")
def codeformer_file(model_dir) -> Path:
    if importlib.util.find_spec("spandrel_extra_arches") is None:
        missing("spandrel-extra-arches (pip install spandrel-extra-arches)")
    return write_codeformer(model_dir / "codeformer.pth")


def test_codeformer_loads_with_the_extra_arches_and_restores_deterministically(codeformer_file):
    model = load_face_restorer(codeformer_file)
    assert (model.architecture, model.size, model.fidelity) == ("CodeFormer", 512, 0.5)
    x = torch.rand(1, 3, 512, 512)
    with torch.no_grad():
        first = model(x)
        assert torch.equal(first, model(x))
    assert first.shape == x.shape and 0 <= first.min() and first.max() <= 1


def test_codeformer_without_the_extra_arches_says_what_to_install(codeformer_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "spandrel_extra_arches", None)  # `import` now raises ImportError
    with pytest.raises(FaceRestorerError, match=r"codeformer\.pth is a CodeFormer model.*pip install "
                                                r"spandrel-extra-arches.*non-commercial \(S-Lab licence\)"):
        load_face_restorer(codeformer_file)


# --- wrong files -------------------------------------------------------------------------------------------

def test_an_upscaler_is_refused_and_sent_to_the_upscale_node(model_dir):
    path = write_realesrgan(model_dir / "RealESRGAN_x2plus.pth", "x2plus")
    with pytest.raises(FaceRestorerError, match=r"^RealESRGAN_x2plus\.pth is an upscaler \(ESRGAN, x2\), not a face "
                                                r"restoration model.*use it in Upscale Faces or Frames"):
        load_face_restorer(path)


def test_other_model_files_are_refused_saying_what_they_are(model_dir):
    from scripts.model_files import write_whisper_checkpoint

    with pytest.raises(FaceRestorerError, match=r"not a face restoration model: it looks like .*whisper"):
        load_face_restorer(write_whisper_checkpoint(model_dir / "tiny.pt"))
    with pytest.raises(FaceRestorerError, match=r"not a face restoration model: it looks like .*VAE"):
        load_face_restorer(write_not_an_upscaler(model_dir / "vae.pth"))
    syncnet = {"netcnnaud.0.weight": torch.zeros(4, 1, 3, 3), "netcnnlip.0.weight": torch.zeros(4, 3, 3, 3, 3)}
    torch.save(syncnet, model_dir / "syncnet_v2.model")
    with pytest.raises(FaceRestorerError, match=r"it looks like the SyncNet evaluation network"):
        load_face_restorer(model_dir / "syncnet_v2.model")


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_pickle_with_code_is_refused_before_unpickling(model_dir, capsys):
    path = model_dir / "evil.pth"
    torch.save({"params_ema": Payload()}, path)
    with pytest.raises(FaceRestorerError, match=r"names Python code \(print\).*nothing was loaded"):
        load_face_restorer(path)
    assert "this must never run" not in capsys.readouterr().out


def test_a_missing_file_says_where_to_get_gfpgan(model_dir):
    from latentsync.catalogue import CATALOGUE

    with pytest.raises(FileNotFoundError) as caught:
        load_face_restorer(model_dir / "missing.pth")
    assert CATALOGUE["gfpgan"].where_to_get() in str(caught.value)


def test_objects_that_are_not_face_restorers_are_refused(restorer):
    assert check_face_restorer(restorer) is restorer
    assert check_face_restorer(restorer.descriptor).architecture == "RestoreFormer"
    with pytest.raises(FaceRestorerError, match="is a Conv2d, not a face restoration model"):
        check_face_restorer(torch.nn.Conv2d(3, 3, 3))


def test_loading_leaves_spandrels_registry_alone(model_dir):
    import spandrel

    before = [support.architecture.id for support in spandrel.MAIN_REGISTRY]
    load_face_restorer(model_dir / "RestoreFormer.pth")
    assert [support.architecture.id for support in spandrel.MAIN_REGISTRY] == before


# --- in ComfyUI --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def comfy_restore(comfy_server):
    """A 2-frame clip in the input folder, a tiny RestoreFormer in facerestore_models and in upscale_models."""
    from conftest import shared_path
    from media import cut_clip

    cut_clip(shared_path("media/latentsync_demo1_video.mp4"), comfy_server.dir("input") / "restore2.mp4", 2, 540)
    for folder in ("facerestore_models", "upscale_models"):
        write_restoreformer(comfy_server.dir("models") / folder / "tiny_restoreformer.pth")
    return comfy_server


def restore_prompt(**settings) -> dict:
    inputs = {"model_name": "tiny_restoreformer.pth", "strength": 1.0, "feather": 0.03, "size": 256, "chunk": 2,
              "precision": "auto"} | settings
    return {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "restore2.mp4"}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "LatentSyncDetectFaces", "inputs": {
            "images": ["2", 0], "resolution": "256", "detector": "dlib", "select": "largest", "index": 0,
            "position_x": 0.5, "position_y": 0.4, "threshold": -1.0}},
        "4": {"class_type": "LatentSyncRestoreMouths", "inputs": {"images": ["3", 1], "faces": ["3", 0], **inputs}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "restored"}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["3", 1], "filename_prefix": "crops"}},
    }


def saved(server, history, node: str) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(server.dir("output") / f["subfolder"] / f["filename"])).astype(int)
            for f in history["outputs"][node]["images"]]


def check_only_the_mouth_changed(server, history) -> None:
    from latentsync.face.mask import pixel_mask

    assert history["status"]["status_str"] == "success", history["status"]
    outside = (mouth_weight(pixel_mask(256), 1, (256, 256), 0.03)[0] == 0).numpy()
    pairs = list(zip(saved(server, history, "5"), saved(server, history, "6")))
    assert len(pairs) == 2
    for restored, crop in pairs:
        assert restored.shape == crop.shape == (256, 256, 3)
        assert np.array_equal(restored[outside], crop[outside])
        assert np.abs(restored[~outside] - crop[~outside]).mean() > 1  # the mouth was restored


@pytest.mark.comfyui
def test_the_node_restores_only_the_mouth_in_comfyui(comfy_restore):
    history = comfy_restore.run(restore_prompt())
    check_only_the_mouth_changed(comfy_restore, history)
    _, reply = comfy_restore.queue(restore_prompt(model_name="missing.pth"))
    assert "'missing.pth' not found in models/facerestore_models" in str(reply["node_errors"])


@pytest.mark.comfyui
def test_the_node_takes_the_core_loaders_model(comfy_restore):
    prompt = restore_prompt(model_name="none")
    prompt["7"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "tiny_restoreformer.pth"}}
    prompt["4"]["inputs"]["restore_model"] = ["7", 0]
    check_only_the_mouth_changed(comfy_restore, comfy_restore.run(prompt))


@pytest.mark.comfyui
def test_the_node_steadies_the_mouth_over_the_clip_with_temporal(comfy_restore):
    """temporal is the node's last input, optional (the prompts above leave it out): on, the first crop is as
    without it, the second moves toward the first's change, and still only the mouth changes."""
    plain = comfy_restore.run(restore_prompt())
    history = comfy_restore.run(restore_prompt(temporal=0.8))
    check_only_the_mouth_changed(comfy_restore, history)
    steady, before = saved(comfy_restore, history, "5"), saved(comfy_restore, plain, "5")
    assert np.abs(steady[0] - before[0]).max() <= 1 and np.abs(steady[1] - before[1]).max() > 1
