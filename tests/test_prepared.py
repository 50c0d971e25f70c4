"""A prepared video (latentsync/prepared/, `lipsync --prepared DIR`, `python -m latentsync prepare`): the video's
faces and VAE latents made once and reused with other voices.

A run with a prepared video must give the frames of a run without it, bit for bit, for any windows the voice cuts
(a frame's latents must not depend on the batch it was encoded in); a prepared folder of another video or other
settings is refused by name; a damaged file is one line and is made again on request; preparing streams the
clip in bounded pieces. Models: the tiny UNet with random weights and a narrow random SD VAE (posterior sampling
included), on 360x640 cuts of a shared clip with 64 px face crops.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import shared_path
from sampler_fixtures import CLIP, RESOLUTION, decode_clip, fake_features

from latentsync.face.detect import detect_faces
from latentsync.media.audio import load_audio, write_wav
from latentsync.media.video import read_frames, write_video
from latentsync.prepared import PreparedError, open_prepared, prepare_frames
from latentsync.sample.sampler import SamplerSettings, lipsync

pytestmark = pytest.mark.usefixtures("needs_diffusers", "one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from scripts.model_files import write_tiny_unet, write_whisper_checkpoint
    from scripts.vae_files import NARROW_WIDTHS, write_sd_vae

    folder = tmp_path_factory.mktemp("models")
    config = json.loads(shared_path("reference/latentsync/unet_tiny_config.json").read_text())["unet_config"]
    return {"unet": write_tiny_unet(folder / "latentsync_unet.pt", config, resolution=RESOLUTION),
            "whisper": write_whisper_checkpoint(folder / "tiny.pt"),
            "vae": write_sd_vae(folder / "vae.safetensors", widths=NARROW_WIDTHS), "config": config}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """20 frames (0.8 s) at 360x640 with the clip's own soundtrack, and a second voice: the same sound backwards,
    1.2 s long (the video loops under it)."""
    folder = tmp_path_factory.mktemp("clip")
    video = write_video(folder / "clip.mp4", decode_clip(shared_path(CLIP), 20), 25.0, audio=shared_path(CLIP))
    voice, rate = load_audio(video)
    other = torch.cat([voice.flip(-1), voice[:, : rate // 2]], dim=-1)
    return {"video": video, "voice": video, "other": write_wav(folder / "other.wav", other, rate)}


def run_cli(*argv: str) -> dict:
    from latentsync.cli.main import build_parser

    args = build_parser().parse_args(list(argv))
    return args.run(args)


def lipsync_cli(models, video, audio, out, *extra: str) -> dict:
    return run_cli("lipsync", "--video", str(video), "--audio", str(audio), "--out", str(out), "--unet",
                   str(models["unet"]), "--whisper", str(models["whisper"]), "--vae", str(models["vae"]),
                   "--steps", "2", "--window", "8", "--vae-batch", "3", "--quiet", *extra)


# ------------------------------------------------------------------------------------------------- the library


def test_prepared_frames_give_the_frames_of_a_run_without_them_bit_for_bit(models, tmp_path):
    """IMAGE frames (the Prepare Video node's path): windows of 7 over 20 frames looped to 31 (the windows' frames
    never line up with the prepared chunks of 16), the VAE sampling its posterior 3 images per call; in memory and
    saved to a folder and opened again."""
    from latentsync.sample.vae import load_vae
    from latentsync.unet.loading import load_unet

    unet = load_unet(models["unet"], models["config"])
    vae = load_vae(models["vae"], batch_size=3)
    frames = decode_clip(shared_path(CLIP), 20)
    track = detect_faces(frames)
    features = fake_features(31)
    settings = SamplerSettings(steps=2, window=7, vad_policy="off", audio_longer="loop")
    cold = lipsync(frames, features, unet, vae, settings, faces=track, resolution=RESOLUTION)
    prepared = prepare_frames(frames, track, RESOLUTION, vae, "cpu")
    warm = lipsync(frames, features, unet, vae, settings, faces=prepared, resolution=RESOLUTION)
    assert warm.stats["seconds"]["encode"] < cold.stats["seconds"]["encode"] / 5  # nothing encoded
    assert torch.equal(warm.frames, cold.frames) and torch.equal(warm.crops, cold.crops)
    assert not torch.equal(cold.frames, lipsync(frames, fake_features(31, seed=1), unet, vae, settings,
                                                faces=prepared, resolution=RESOLUTION).frames)  # the voice counts

    saved = prepared.save(tmp_path / "saved")
    again = open_prepared(tmp_path / "saved", prepared.identity)
    assert saved.folder == again.folder and not again._segments
    assert torch.equal(lipsync(frames, features, unet, vae, settings, faces=again, resolution=RESOLUTION).frames,
                       cold.frames)
    with pytest.raises(ValueError, match="prepare the same frames"):
        lipsync(frames[:10], features, unet, vae, settings, faces=again, resolution=RESOLUTION)
    with pytest.raises(PreparedError, match=r"another video or with other settings: video\.sha256"):
        lipsync(frames.flip(0), features, unet, vae, settings, faces=again, resolution=RESOLUTION)


# ------------------------------------------------------------------------------------------ lipsync --prepared


@pytest.fixture(scope="module")
def without(models, clip, tmp_path_factory):
    """Each voice's frames from runs without a prepared video."""
    folder = tmp_path_factory.mktemp("without")
    return {name: read_frames(lipsync_cli(models, clip["video"], clip[name], folder / f"{name}.mp4")["out"])[0]
            for name in ("voice", "other")}


def test_lipsync_prepared_makes_the_folder_then_reuses_it_with_equal_outputs(models, clip, without, tmp_path):
    folder = tmp_path / "talk.prepared"
    first = lipsync_cli(models, clip["video"], clip["voice"], tmp_path / "a.mp4", "--prepared", str(folder))
    assert first["prepared"]["made"] and (folder / "prepared.json").is_file()
    second = lipsync_cli(models, clip["video"], clip["other"], tmp_path / "b.mp4", "--prepared", str(folder))
    assert not second["prepared"]["made"]
    assert second["stage_seconds"]["encode"] < 0.05 and second["stage_seconds"]["faces"] < 0.5
    assert first["stage_seconds"]["encode"] > 0 or first["stage_seconds"]["prepare"] > 0
    assert torch.equal(read_frames(tmp_path / "a.mp4")[0], without["voice"])
    assert torch.equal(read_frames(tmp_path / "b.mp4")[0], without["other"])
    assert second["frames"] == len(without["other"]) > first["frames"] == 20


def test_the_prepare_command_makes_what_lipsync_reuses(models, clip, without, tmp_path):
    summary = run_cli("prepare", str(clip["video"]), "--unet", str(models["unet"]), "--vae", str(models["vae"]),
                      "--vae-batch", "3", "--quiet", "--out", str(tmp_path / "p"))
    assert summary["made"] and summary["frames"] == summary["faces"] == 20 and summary["bytes"] > 0
    run = lipsync_cli(models, clip["video"], clip["other"], tmp_path / "b.mp4", "--prepared", str(tmp_path / "p"))
    assert not run["prepared"]["made"]
    assert torch.equal(read_frames(tmp_path / "b.mp4")[0], without["other"])
    again = run_cli("prepare", str(clip["video"]), "--unet", str(models["unet"]), "--vae", str(models["vae"]),
                    "--vae-batch", "3", "--quiet", "--out", str(tmp_path / "p"))
    assert not again["made"]  # a run that changed nothing says so


def test_a_folder_of_another_video_or_other_settings_is_refused_by_name(models, clip, tmp_path):
    folder = tmp_path / "p"
    run_cli("prepare", str(clip["video"]), "--unet", str(models["unet"]), "--vae", str(models["vae"]),
            "--vae-batch", "3", "--quiet", "--out", str(folder))
    before = {path.name: path.stat().st_mtime_ns for path in folder.rglob("*")}
    other = write_video(tmp_path / "other.mp4", decode_clip(shared_path(CLIP), 12), 25.0)
    with pytest.raises(PreparedError, match=r"another video or with other settings: video\.file: 'clip\.mp4' then, "
                                            r"'other\.mp4' now; video\.sha256"):
        lipsync_cli(models, other, clip["voice"], tmp_path / "o.mp4", "--prepared", str(folder))
    with pytest.raises(PreparedError, match=r"vae\.batch: 3 then, 2 now"):
        lipsync_cli(models, clip["video"], clip["voice"], tmp_path / "o.mp4", "--prepared", str(folder),
                    "--vae-batch", "2")
    with pytest.raises(PreparedError, match=r"face\.smoothing: True then, False now"):
        lipsync_cli(models, clip["video"], clip["voice"], tmp_path / "o.mp4", "--prepared", str(folder),
                    "--no-smoothing")
    assert {path.name: path.stat().st_mtime_ns for path in folder.rglob("*")} == before  # untouched
    assert not (tmp_path / "o.mp4").exists()

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(PreparedError, match="holds other files and is not a prepared video"):
        lipsync_cli(models, clip["video"], clip["voice"], tmp_path / "m.mp4", "--prepared", str(mine))
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1


def test_a_damaged_file_is_one_line_and_is_made_again_on_request(models, clip, without, tmp_path):
    folder = tmp_path / "p"
    lipsync_cli(models, clip["video"], clip["voice"], tmp_path / "a.mp4", "--prepared", str(folder))
    latents = sorted((folder / "latents").glob("*.safetensors"))[0]
    latents.write_bytes(latents.read_bytes()[:1000])
    with pytest.raises(PreparedError) as error:
        lipsync_cli(models, clip["video"], clip["other"], tmp_path / "b.mp4", "--prepared", str(folder))
    message = str(error.value)
    assert "\n" not in message and latents.name in message and "is damaged" in message
    assert "--rebuild-prepared" in message
    rebuilt = lipsync_cli(models, clip["video"], clip["other"], tmp_path / "b.mp4", "--prepared", str(folder),
                          "--rebuild-prepared")
    assert rebuilt["prepared"]["made"]
    assert torch.equal(read_frames(tmp_path / "b.mp4")[0], without["other"])

    flipped = bytearray((folder / "faces.safetensors").read_bytes())  # same size, other contents
    flipped[-1] ^= 0xFF
    (folder / "faces.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(PreparedError, match="faces.safetensors is damaged: its contents changed"):
        lipsync_cli(models, clip["video"], clip["other"], tmp_path / "c.mp4", "--prepared", str(folder))


def test_preparing_streams_the_clip_in_bounded_pieces(models, tmp_path, monkeypatch):
    """A clip of 3.5 latents files: frames are read a chunk at a time and each file is written as it is done,
    nothing of an earlier file kept in memory (the store's segment shrunk to 16 frames to keep the test short)."""
    import latentsync.prepared.make as make
    import latentsync.prepared.store as store
    from latentsync.media.frame_reader import VideoFrames
    from latentsync.prepared import file_video_identity, prepare_file, prepared_identity, vae_identity
    from latentsync.face.detect import make_detector
    from latentsync.run.job import FaceChoice
    from latentsync.sample.vae import load_vae

    monkeypatch.setattr(store, "SEGMENT", 16)
    monkeypatch.setattr(make, "SEGMENT", 16)
    frames = decode_clip(shared_path(CLIP), 56)
    video = write_video(tmp_path / "long.mp4", frames, 25.0)
    reads, held = [], []
    read = VideoFrames.read

    def counted(self, indices):
        reads.append(len(indices))
        return read(self, indices)

    put = store.PreparedVideo.put

    def watched(self, start, index, masked, reference):
        put(self, start, index, masked, reference)
        held.append(sum(len(s["index"]) for s in self._segments.values()))

    monkeypatch.setattr(VideoFrames, "read", counted)
    monkeypatch.setattr(store.PreparedVideo, "put", watched)
    vae = load_vae(models["vae"])
    identity = prepared_identity(file_video_identity(video), {}, RESOLUTION, vae_identity(vae), "cpu", 25.0)
    prepared = prepare_file(VideoFrames(video), FaceChoice(make_detector("dlib")), vae, tmp_path / "p", identity,
                            device="cpu")
    assert max(reads) <= make.CHUNK and sum(reads) == int(prepared.faces.valid.sum())
    assert held == [0, 0, 0, 0]  # four files, each on disk once made
    assert len(list((tmp_path / "p" / "latents").glob("*.safetensors"))) == 4
    again = open_prepared(tmp_path / "p", identity)
    moments = again.window_moments(np.arange(56))
    assert len(moments) == 112 and len(again._segments) == store.KEPT_SEGMENTS


def test_a_stopped_run_with_a_prepared_video_resumes_to_the_same_output(models, clip, without, tmp_path):
    """The streamed run stopped after its first window (as Ctrl-C does), then `resume`: the finished window is
    kept, the prepared folder read, and the output is the run's without either."""
    from latentsync.face.detect import make_detector
    from latentsync.run.job import FaceChoice, Job, MemoryOptions
    from latentsync.run.pipeline import ModelSet, UNetSpec
    from latentsync.run.stream import Hooks, lipsync_video_file

    def job(resume: bool) -> Job:
        return Job(clip["video"], clip["voice"], tmp_path / "out.mp4", UNetSpec(models["unet"]), models["whisper"],
                   models["vae"], FaceChoice(make_detector("auto")), SamplerSettings(steps=2, window=8),
                   memory=MemoryOptions(vae_batch=3), resume=resume, prepared=tmp_path / "p")

    def stop(done: int, total: int, crops) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lipsync_video_file(job(False), ModelSet(torch.device("cpu")), hooks=Hooks(on_window=stop))
    assert (tmp_path / "p" / "prepared.json").is_file() and not (tmp_path / "out.mp4").exists()
    summary = lipsync_video_file(job(True), ModelSet(torch.device("cpu")))
    assert summary["resumed_segments"] == 1 and not summary["prepared"]["made"]
    assert torch.equal(read_frames(tmp_path / "out.mp4")[0], without["voice"])
