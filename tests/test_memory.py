"""Memory guards: an input that sizes an allocation is checked against the memory there is before allocating,
and the message says how much is needed, how much there is, and which input to lower."""
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from latentsync.core import memory
from latentsync.core.memory import InsufficientMemoryError, available_bytes, check_fits


@pytest.fixture
def one_mib_free(monkeypatch):
    """A machine with 1 MiB of RAM left, for every guard (they all ask `memory.available_ram` at call time)."""
    monkeypatch.setattr(memory, "available_ram", lambda: 2**20)


def test_check_fits_says_needed_available_and_what_to_lower():
    check_fits(10, "ten bytes", "nothing", available=10)
    with pytest.raises(InsufficientMemoryError) as error:
        check_fits(3 * 2**30, "the features of 42 frames", "frames", available=2**29)
    assert str(error.value) == ("the features of 42 frames needs 3.00 GiB of RAM and only 0.50 GiB is available; "
                                "lower frames")
    assert isinstance(error.value, ValueError)  # a bad input, reported as such


def test_available_bytes_asks_the_machine():
    ram = available_bytes("cpu")
    assert 0 < ram == pytest.approx(available_bytes(), rel=0.2)
    if torch.cuda.is_available():
        assert 0 < available_bytes("cuda") <= torch.cuda.get_device_properties(0).total_memory


def test_the_sampler_refuses_an_output_beyond_memory_before_any_work():
    from latentsync.sample.sampler import lipsync

    # Ten hours of audio drive 900,000 output frames of 720p: 10 TB as float32, beyond any machine's RAM.
    features = SimpleNamespace(duration=36_000.0, fps=25.0, frames=900_000)
    start = time.perf_counter()
    with pytest.raises(InsufficientMemoryError, match=r"lip-syncing 900000 output frames of 1280x720 needs "
                                                      r"[\d.]+ GiB of RAM .*lower the number of output frames"):
        lipsync(torch.zeros(2, 720, 1280, 3), features, torch.nn.Module(), vae=None)
    assert time.perf_counter() - start < 5  # refused up front, no face detection or allocation first


def test_paste_back_refuses_a_copy_beyond_memory(one_mib_free):
    from latentsync.face.align import AlignedFaces
    from latentsync.face.paste import paste_back

    frames = torch.rand(4, 256, 256, 3)  # 3 MiB: a copy does not fit in the 1 MiB left
    faces = AlignedFaces(crops=torch.zeros(4, 8, 8, 3, dtype=torch.uint8), matrices=torch.full((4, 2, 3), np.nan),
                         valid=torch.zeros(4, dtype=torch.bool), resolution=8, crop_wh=(8, 8), frame_hw=(256, 256),
                         mask=torch.ones(8, 8), latent_mask=torch.ones(1, 1, 1))
    with pytest.raises(InsufficientMemoryError, match=r"pasting faces into a copy of 4 frames needs 3.0 MiB of "
                                                      r"RAM and only 1.0 MiB is available; lower the number"):
        paste_back(frames, faces, faces.crops)
    assert paste_back(frames, faces, faces.crops, inplace=True) is frames  # in place needs no copy
