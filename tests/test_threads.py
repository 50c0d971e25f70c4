"""Loops of small sequential torch calls run on one thread and give the caller's thread setting back (issue 20)."""
import numpy as np
import pytest
import torch

from latentsync.face import align as face_align

from latentsync.face import paste as face_restore

from latentsync.face import window_crops as window_faces
from latentsync.face.detect import FaceTrack
from latentsync.core.threads import single_threaded

FRAMES, HEIGHT, WIDTH = 3, 96, 128



def recording(monkeypatch, module, name: str) -> list[int]:
    """Wrap `module.name` so that each call records torch's thread count."""
    seen: list[int] = []
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return seen


def test_single_threaded_restores_the_setting_also_when_the_block_raises(two_threads):
    with single_threaded():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(KeyError), single_threaded():
        raise KeyError("cancelled")
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    with single_threaded():
        pass
    assert torch.get_num_threads() == 1


def small_track() -> FaceTrack:
    template, _ = face_align.crop_geometry(256)
    points = np.repeat((template * 0.3 + [30.0, 20.0])[None], FRAMES, 0).astype(np.float32)
    return FaceTrack(boxes=np.tile([20.0, 10.0, 110.0, 90.0], (FRAMES, 1)), points3=points,
                     scores=np.ones(FRAMES, np.float32), valid=np.ones(FRAMES, bool), frame_hw=(HEIGHT, WIDTH))


def test_per_frame_face_loops_run_on_one_thread(two_threads, monkeypatch):
    frames = np.random.default_rng(0).integers(0, 256, (FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    warps = recording(monkeypatch, face_align, "warp_face")
    transforms = recording(monkeypatch, face_align, "similarity_transform")
    faces = face_align.align(frames, small_track())
    assert warps == [1] * FRAMES and transforms == [1] * FRAMES and torch.get_num_threads() == 2

    crops = recording(monkeypatch, window_faces, "warp_face")
    clip = window_faces.clip_faces(torch.from_numpy(frames), small_track())
    clip.select(torch.from_numpy(frames), np.arange(FRAMES))
    assert crops == [1] * FRAMES and torch.get_num_threads() == 2

    pastes = recording(monkeypatch, face_restore, "restore_region")
    face_restore.paste_back(frames, faces, faces.crops)
    assert pastes == [1] * FRAMES and torch.get_num_threads() == 2
