"""The samplers' paste-back choices (latentsync/sample/sampler.py `Output`, run/job.py, cli/lipsync.py): the blend
mask (face/blend.py) and the colour match (face/seam.py) in the IMAGE sampler, the streamed job and the CLI.

A random tiny UNet, the `PoolVAE` stand-in and the real clip at 360x640 with 64 px crops (sampler_fixtures.py).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import shared_path
from sampler_fixtures import CLIP, RESOLUTION, PoolVAE, decode_clip, fake_features, golden_tiny_unet

from latentsync.face.blend import Blend
from latentsync.face.detect import FaceTrack, detect_faces
from latentsync.face.paste import paste_back
from latentsync.sample.sampler import Output, SamplerSettings, lipsync

pytestmark = pytest.mark.usefixtures("one_thread")
FRAMES = 12
SETTINGS = SamplerSettings(steps=1, window=8)  # two windows: a custom mask's rows follow each window's frames


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
    return golden_tiny_unet(tmp_path_factory.mktemp("unet"))


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    return decode_clip(shared_path(CLIP), FRAMES)


@pytest.fixture(scope="module")
def track(clip) -> FaceTrack:
    found = detect_faces(clip)
    assert found.valid.all()
    return found


def run(unet, clip, track, blend: Blend | None = None, weights: bool = False, features=None, settings=SETTINGS):
    output = {} if blend is None else {"output": Output(blend=blend, weights=weights)}
    return lipsync(clip, features or fake_features(FRAMES), unet, PoolVAE(), settings, faces=track,
                   resolution=RESOLUTION, **output)


@pytest.fixture(scope="module")
def reference(unet, clip, track):
    return run(unet, clip, track)


def weights_of(result, clip, blend: Blend) -> torch.Tensor:
    """Where each output frame takes the generated face under `blend`, pasted from the result's own crops."""
    weights = torch.zeros(clip.shape[:3])
    paste_back(clip.clone(), result.faces, result.crops, blend=blend, weights_out=weights)
    return weights


def test_the_default_blend_is_the_reference_paste(unet, clip, track, reference):
    assert torch.equal(run(unet, clip, track, Blend()).frames, reference.frames)


def test_a_landmark_blend_keeps_every_pixel_outside_the_mouth_region(unet, clip, track, reference):
    blend = Blend("landmarks")
    result = run(unet, clip, track, blend)
    weights = weights_of(result, clip, blend)
    outside = weights == 0
    assert outside.any() and (~outside).any()
    assert torch.equal(result.frames[outside], clip[outside])
    assert torch.equal(result.crops, reference.crops)  # what is generated is the same; only the paste differs
    changed = (result.frames != clip).any(-1)
    assert changed.any() and not torch.equal(result.frames, reference.frames)


def test_a_custom_mask_takes_its_rows_per_input_frame(unet, clip, track, reference):
    custom = torch.zeros(FRAMES, *clip.shape[1:3])
    custom[[2, 9]] = 1.0  # one frame in each window
    result = run(unet, clip, track, Blend("custom", feather=0.0, custom=custom))
    untouched = [i for i in range(FRAMES) if i not in (2, 9)]
    assert torch.equal(result.frames[untouched], clip[untouched])
    assert torch.equal(result.frames[[2, 9]], reference.frames[[2, 9]])  # the whole frame's mask: the reference's
    with pytest.raises(ValueError, match="blend mask has 3 frames for 12 frames"):
        run(unet, clip, track, Blend("custom", custom=torch.zeros(3, *clip.shape[1:3])))


def assert_weights_say_what_changed(result, clip) -> torch.Tensor:
    """The result's blend weights: [M, H, W] float32 in [0, 1]; pixels of weight 0 are the input frame's exactly,
    and every pixel that changed has a weight above 0."""
    weights = result.blend_weights
    source = clip[torch.from_numpy(np.asarray(result.source_index))]
    assert weights is not None and weights.dtype == torch.float32 and weights.shape == source.shape[:3]
    assert weights.min() >= 0 and weights.max() <= 1
    kept = weights == 0
    assert torch.equal(result.frames[kept], source[kept])
    changed = (result.frames != source).any(-1)
    assert changed.any() and bool((weights[changed] > 0).all())
    return weights


def test_the_blend_weights_say_where_each_frame_took_the_generated_face(unet, clip, track, reference):
    assert reference.blend_weights is None  # Output(): none kept
    whole = run(unet, clip, track, Blend(), weights=True)
    assert torch.equal(whole.frames, reference.frames)  # keeping the weights changes nothing else
    whole_weights = assert_weights_say_what_changed(whole, clip)
    assert whole_weights.max() > 0.99 and bool((whole_weights > 0).flatten(1).any(1).all())  # every frame a face
    torch.testing.assert_close(whole_weights, weights_of(reference, clip, Blend()))  # the paste's own weights
    mouth_weights = assert_weights_say_what_changed(run(unet, clip, track, Blend("landmarks"), weights=True), clip)
    assert bool(((mouth_weights > 0) <= (whole_weights > 0)).all())
    assert (mouth_weights > 0).sum() < (whole_weights > 0).sum()  # the mouth: strictly less than the whole crop


def test_the_blend_weights_are_0_where_no_face_was_generated_and_follow_the_skip_fade(unet, clip, track):
    speech = np.zeros(FRAMES, bool)
    speech[:5] = True  # skip: frames 0-4 generated, 5-6 fading out, 7-11 passed through
    cut = track.subset(slice(0, FRAMES))
    cut.valid = cut.valid.copy()
    cut.valid[1] = False  # no face in frame 1
    skip = replace(SETTINGS, vad_policy="skip", min_silence_s=0.2, crossfade_frames=2)
    result = run(unet, clip, cut, Blend(), weights=True, features=fake_features(FRAMES, speech_mask=speech),
                 settings=skip)
    weights = assert_weights_say_what_changed(result, clip)
    peaks = weights.flatten(1).amax(1).tolist()
    assert peaks[1] == 0 and peaks[7:] == [0] * 5 and min(peaks[0], peaks[2]) > 0.99
    # the fade into the passed-through frames scales the paste's weights: 2/3 and 1/3
    assert peaks[5:7] == pytest.approx([2 / 3 * peaks[4], 1 / 3 * peaks[4]], rel=0.01)
    assert torch.equal(result.frames[7:], clip[7:]) and torch.equal(result.frames[1], clip[1])


def test_the_colour_match_changes_only_the_regenerated_region(unet, clip, track, reference):
    result = run(unet, clip, track, Blend(colour_match=True))
    keep = reference.faces.mask >= 1  # [R, R]: the crop's pixels the sampler takes from the original
    crop_change = (result.crops != reference.crops).any(-1)  # [N, R, R]
    assert crop_change.any() and not crop_change[:, keep].any()
    frame_change = (result.frames != reference.frames).any(-1)
    assert frame_change.any() and not frame_change[weights_of(reference, clip, Blend()) == 0].any()


def test_a_resume_with_another_blend_is_refused(tmp_path):
    from latentsync.media.partial import PartialOutput, ResumeRefused
    from latentsync.run.job import FaceChoice, Job
    from latentsync.run.pipeline import UNetSpec

    for name in ("v.mp4", "a.wav", "u.pt", "w.pt", "vae.safetensors"):
        (tmp_path / name).write_bytes(name.encode())
    job = Job(tmp_path / "v.mp4", tmp_path / "a.wav", tmp_path / "out.mp4", UNetSpec(tmp_path / "u.pt"),
              tmp_path / "w.pt", tmp_path / "vae.safetensors", FaceChoice(object()), device="cpu",
              dtype=torch.float32)
    default = job.identity(False)
    assert "blend" not in default["options"]  # partial outputs from before the blend choice still resume
    PartialOutput(job.out, default, resume=False)
    PartialOutput(job.out, job.identity(False), resume=True)  # the same job continues
    for blend in (Blend("landmarks"), Blend(grow=5.0), Blend(colour_match=True)):
        with pytest.raises(ResumeRefused, match="blend"):
            PartialOutput(job.out, replace(job, blend=blend).identity(False), resume=True)


def test_a_streamed_run_refuses_a_custom_mask_before_any_work(tmp_path):
    from latentsync.run.job import FaceChoice, Job
    from latentsync.run.pipeline import UNetSpec
    from latentsync.run.stream import lipsync_video_file

    missing = tmp_path / "missing"
    job = Job(missing, missing, tmp_path / "out.mp4", UNetSpec(missing), missing, missing, FaceChoice(object()),
              blend=Blend("custom", custom=torch.ones(1, 4, 4)))
    with pytest.raises(ValueError, match="custom is not offered for a streamed run"):
        lipsync_video_file(job, models=object())


def test_the_cli_offers_reference_and_landmarks_and_the_colour_match(capsys):
    from latentsync.cli.main import build_parser

    base = ["lipsync", "--video", "v.mp4", "--audio", "a.wav", "--out", "o.mp4", "--unet", "u.pt", "--whisper",
            "t.pt", "--vae", "vae.safetensors"]
    args = build_parser().parse_args(base + ["--blend-mask", "landmarks", "--mask-grow", "5", "--colour-match"])
    assert (args.blend_mask, args.mask_grow, args.mask_feather, args.colour_match) == ("landmarks", 5.0, 4.0, True)
    with pytest.raises(SystemExit):
        build_parser().parse_args(base + ["--blend-mask", "custom"])
    assert "invalid choice: 'custom'" in capsys.readouterr().err
