"""Specification of the SyncNet metric (LSE-C, LSE-D, AV offset): latentsync/syncnet.py, sync_metric.py,
s3fd.py, sync_crops.py, sync_score.py and the `score` command.

Reference: bytedance/LatentSync @ a229c39, `eval/syncnet/syncnet_eval.py SyncNetEval.evaluate` and
`eval/syncnet_detect.py`, through shared/reference/syncnet/ (see its README): random-weight golden
tensors. Tolerances are the README's: MFCC 1e-8 (float64), embeddings atol 1e-4, distance table 2e-4,
mean distances / LSE-D / LSE-C 1e-4, offset exact.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from conftest import shared_path
from syncnet_model_files import (GOLDEN, golden_syncnet_state, load_golden, write_s3fd_file,
                                 write_syncnet_file)

from latentsync.score import metric
from latentsync.media.audio import load_audio
from latentsync.cli.score import add_score_parser, crop_mode, score_command
from latentsync.media.jpeg import jpeg_round_trip
from latentsync.media.video import decode_frames
from latentsync.score.s3fd import S3FDNet, candidate_detections, decode_boxes, detect_faces, load_s3fd, nms, priors
from latentsync.score.crops import (CropTrack, ShotDetector, build_tracks, crop_face, frames_at_25fps,
                                   smoothed_geometry)
from latentsync.score.metric import SyncScoreError
from latentsync.score.evaluate import FaceCrops, TrackRules, score_sync, wants_jpeg
from latentsync.score.syncnet import SyncNet, SyncNetCheckpointError, load_syncnet

REFERENCE = "reference/syncnet"
DEMO_VIDEO, DEMO_AUDIO = "media/latentsync_demo1_video.mp4", "media/latentsync_demo1_audio.wav"
DEMO_FACE = [515.0, 630.0, 685.0, 830.0]  # the speaker's face in the first second of demo1 (1080x1920)


def manifest(name: str) -> dict:
    return json.loads(shared_path(f"{REFERENCE}/{name}").read_text())


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_golden(shared_path(GOLDEN))


@pytest.fixture(scope="module")
def syncnet_file(golden, tmp_path_factory):
    return write_syncnet_file(tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model", golden_syncnet_state(golden))


@pytest.fixture(scope="module")
def net(syncnet_file) -> SyncNet:
    return load_syncnet(syncnet_file)


@pytest.fixture(scope="module")
def golden_crops(golden) -> torch.Tensor:
    return golden["input.video_u8"][0].permute(1, 2, 3, 0).contiguous()  # [T, 224, 224, 3] BGR


# ---------------------------------------------------------------- architecture and loading

def _layer_shapes(model: torch.nn.Module, names: list[str], *inputs: torch.Tensor, call=None) -> dict:
    shapes, hooks = {}, []
    for name in names:
        module = model.get_submodule(name)
        hooks.append(module.register_forward_hook(
            lambda m, i, o, name=name: shapes.__setitem__(name, list(o.shape))))
    (call or model)(*inputs)
    for hook in hooks:
        hook.remove()
    return shapes


def test_syncnet_state_dict_matches_reference_manifest():
    keys = manifest("syncnet_keys.json")
    state = SyncNet().state_dict()
    assert {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state.items()} == keys["state_dict"]
    assert sum(p.numel() for p in SyncNet().parameters()) == keys["num_parameters"]


def test_syncnet_layer_shapes_match_reference_manifest():
    expected = manifest("syncnet_keys.json")["activation_shapes"]["per_layer"]
    model = SyncNet().to("meta").eval()  # shapes only, no arithmetic
    audio = [n for n in expected if n.startswith(("netcnnaud", "netfcaud"))]
    video = [n for n in expected if n.startswith(("netcnnlip", "netfclip"))]
    got = _layer_shapes(model, audio, torch.empty(1, 1, 13, 20, device="meta"), call=model.forward_audio)
    got |= _layer_shapes(model, video, torch.empty(1, 3, 5, 224, 224, device="meta"), call=model.forward_video)
    assert got == expected


def test_s3fd_state_dict_and_layer_shapes_match_reference_manifest():
    keys = manifest("s3fd_keys.json")
    model = S3FDNet()
    assert {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()} \
        == keys["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == keys["num_parameters"]
    expected = keys["activation_shapes_for_input_1x3x180x320"]
    meta = model.to("meta").eval()
    got = _layer_shapes(meta, list(expected), torch.empty(1, 3, 180, 320, device="meta"))
    assert got == expected
    loc, face, sizes = meta(torch.empty(1, 3, 180, 320, device="meta"))
    assert loc.shape == (1, sum(h * w for h, w in sizes), 4) and face.shape == loc.shape[:2]


def test_loaders_accept_official_files_and_explain_wrong_ones(tmp_path, syncnet_file):
    sfd = write_s3fd_file(tmp_path / "sfd_face.pth")
    assert isinstance(load_s3fd(sfd), S3FDNet)
    with pytest.raises(SyncNetCheckpointError, match="looks like the S3FD face detector"):
        load_syncnet(sfd)
    with pytest.raises(SyncNetCheckpointError, match=r"looks like the SyncNet evaluation network \(syncnet_v2"):
        load_s3fd(syncnet_file)
    for missing in (load_syncnet, load_s3fd):
        with pytest.raises(FileNotFoundError, match=r"nowhere\.model.*huggingface\.co/ByteDance/LatentSync-1\.5"):
            missing(tmp_path / "nowhere.model")
    module = tmp_path / "module.model"
    torch.save(SyncNet(), module)
    with pytest.raises(SyncNetCheckpointError, match=r"names Python code \(latentsync\.score\.syncnet\.SyncNet\).*not unpickled"):
        load_syncnet(module)
    wrapped = tmp_path / "training.pt"
    torch.save({"state_dict": {"audio_encoder.conv.weight": torch.zeros(1),
                               "visual_encoder.conv.weight": torch.zeros(1)}, "global_step": 3}, wrapped)
    with pytest.raises(SyncNetCheckpointError, match="StableSyncNet.*under 'state_dict'"):
        load_syncnet(wrapped)
    state = SyncNet().state_dict()
    state["netfcaud.3.weight"] = torch.zeros(512, 512)
    with pytest.raises(SyncNetCheckpointError, match=r"wrong shape.*netfcaud\.3\.weight"):
        load_syncnet(write_syncnet_file(tmp_path / "bad.model", state))
    # A SyncNetEval().state_dict() carries the "__S__." prefix; the counters are optional (eval never reads them).
    prefixed = {f"__S__.{k}": v for k, v in SyncNet().state_dict().items() if not k.endswith("num_batches_tracked")}
    assert isinstance(load_syncnet(write_syncnet_file(tmp_path / "prefixed.model", prefixed)), SyncNet)


# ---------------------------------------------------------------- golden parity (A: the forward, B: the offset)

def test_mfcc_matches_python_speech_features(golden):
    features = metric.mfcc(golden["input.audio_int16"].numpy())
    np.testing.assert_allclose(features, golden["input.mfcc_f64"].numpy(), rtol=0, atol=1e-8)
    snippets = metric.audio_snippets(features, 35)
    assert torch.equal(snippets, golden["input.audio_windows"])


def test_embeddings_and_distances_match_reference(golden, net, golden_crops):
    assert metric.snippet_count(40, 25600) == 35
    with torch.no_grad():
        audio_cnn = net.audio_features(golden["input.audio_windows"])
    audio = metric.audio_embeddings(net, golden["input.audio_windows"])
    video = metric.video_embeddings(net, golden_crops, 35)
    torch.testing.assert_close(audio_cnn, golden["case_a.audio_cnn_out"], atol=1e-4, rtol=0)
    torch.testing.assert_close(audio, golden["case_a.audio_embeddings"], atol=1e-4, rtol=0)
    torch.testing.assert_close(video, golden["case_a.video_embeddings"], atol=1e-4, rtol=0)
    table = metric.distance_table(video, audio)
    torch.testing.assert_close(table, golden["case_a.dists"], atol=2e-4, rtol=0)
    score = metric.score_from_distances(table, "input")
    _assert_case(score, golden, "a")


def _assert_case(score: metric.SyncScore, golden: dict, case: str, tol: float = 1e-4) -> None:
    np.testing.assert_allclose(score.distances, golden[f"case_{case}.mean_dists"].numpy(), rtol=0, atol=tol)
    assert score.lse_d == pytest.approx(golden[f"case_{case}.min_dist"].item(), abs=tol)
    assert score.lse_c == pytest.approx(golden[f"case_{case}.conf"].item(), abs=tol)
    assert score.offset == golden[f"case_{case}.av_offset"].item()
    np.testing.assert_allclose(score.framewise_conf, golden[f"case_{case}.framewise_conf"].numpy(), rtol=0, atol=2e-4)


def test_offset_sign_case(golden):
    """Case B: video embedding i is audio embedding i-3 plus noise, so the video lags by +3 frames."""
    table = metric.distance_table(golden["case_b.video_embeddings"], golden["case_b.audio_embeddings"])
    torch.testing.assert_close(table, golden["case_b.dists"], atol=2e-4, rtol=0)
    score = metric.score_from_distances(table, "input")
    _assert_case(score, golden, "b")
    assert score.offset == 3


def test_score_sync_on_golden_clip_reproduces_reference(golden, net, golden_crops):
    """The public path: RGB float frames and float audio in, exactly the reference's numbers out."""
    frames_rgb = golden_crops.flip(-1).float() / 255  # ComfyUI IMAGE layout
    waveform = golden["input.audio_int16"].float() / 32768
    score = score_sync(frames_rgb, waveform[None], 16000, 25.0, net, crops="input")
    assert score.crops == "input" and score.snippets == 35
    np.testing.assert_allclose(score.snippet_distances, golden["case_a.dists"].numpy(), rtol=0, atol=2e-4)
    _assert_case(score, golden, "a")


def test_score_command_on_reference_mp4(syncnet_file):
    """Loose: the reference decodes through JPEG (and we do not), which moves random-weight numbers a lot."""
    reference = manifest("syncnet_golden_info.json")["e2e"]
    parser = argparse.ArgumentParser()
    add_score_parser(parser.add_subparsers())
    args = parser.parse_args(["score", str(shared_path(f"{REFERENCE}/syncnet_e2e.mp4")), "--syncnet",
                              str(syncnet_file), "--already-cropped", "--json"])
    result = args.run(args)
    expected = reference["reference_result_unmodified_evaluate"]
    assert result["crops"] == "input" and result["windows"] == expected["num_windows"]
    assert result["offset"] == expected["av_offset"]
    assert result["lse_d"] == pytest.approx(expected["min_dist"], abs=0.5)
    assert result["lse_c"] == pytest.approx(expected["conf"], abs=0.15)
    assert np.corrcoef(result["distances"], reference["mean_dists_rounded_1e-5"])[0, 1] > 0.99
    json.dumps(result)


def _score_cli(*arguments: str) -> dict:
    parser = argparse.ArgumentParser()
    add_score_parser(parser.add_subparsers())
    args = parser.parse_args(["score", *arguments])
    return args.run(args)


def test_jpeg_round_trip_brings_the_e2e_clip_to_the_reference(syncnet_file):
    """The reference reads its crops back from JPEG files; replaying that round trip (libavcodec mjpeg at a fixed
    qscale 3, libjpeg-turbo decode) must land within 0.1 of its LSE-D and halve the gap of the direct decode."""
    reference = manifest("syncnet_golden_info.json")["e2e"]
    expected = reference["reference_result_unmodified_evaluate"]
    common = (str(shared_path(f"{REFERENCE}/syncnet_e2e.mp4")), "--syncnet", str(syncnet_file), "--already-cropped")
    direct = _score_cli(*common, "--no-jpeg")
    result = _score_cli(*common, "--jpeg")
    assert result["jpeg"] is True and direct["jpeg"] is False
    assert result["windows"] == expected["num_windows"] and result["offset"] == expected["av_offset"]
    gap, direct_gap = abs(result["lse_d"] - expected["min_dist"]), abs(direct["lse_d"] - expected["min_dist"])
    assert gap <= 0.1 and gap <= direct_gap / 2, (result["lse_d"], direct["lse_d"], expected["min_dist"])
    assert result["lse_c"] == pytest.approx(expected["conf"], abs=0.1)
    assert np.corrcoef(result["distances"], reference["mean_dists_rounded_1e-5"])[0, 1] > 0.99


def test_score_command_replays_jpeg_by_default_only_with_s3fd():
    """On by default where the numbers are meant for papers (--s3fd), off otherwise; either way can be forced."""
    parser = argparse.ArgumentParser()
    add_score_parser(parser.add_subparsers())
    base = ["score", "clip.mp4", "--syncnet", "s.model"]

    def use_jpeg(args) -> bool:  # as score_command decides it
        return wants_jpeg(args.jpeg, crop_mode(args))

    assert use_jpeg(parser.parse_args([*base, "--s3fd", "sfd_face.pth"])) is True
    assert use_jpeg(parser.parse_args(base)) is False
    assert use_jpeg(parser.parse_args([*base, "--already-cropped"])) is False
    assert use_jpeg(parser.parse_args([*base, "--s3fd", "sfd_face.pth", "--no-jpeg"])) is False
    assert use_jpeg(parser.parse_args([*base, "--jpeg"])) is True


def test_score_command_with_s3fd_runs_the_reference_detector(tmp_path, syncnet_file):
    """--s3fd loads sfd_face.pth and crops with it: random detector weights find no face on the e2e clip, which
    is a clear score error (not a crash of the command itself)."""
    parser = argparse.ArgumentParser()
    add_score_parser(parser.add_subparsers())
    args = parser.parse_args(["score", str(shared_path(f"{REFERENCE}/syncnet_e2e.mp4")), "--syncnet",
                              str(syncnet_file), "--s3fd", str(write_s3fd_file(tmp_path / "sfd_face.pth"))])
    with pytest.raises(SyncScoreError, match=r"no face track to score \(s3fd boxes\)"):
        args.run(args)


def _real_crop() -> np.ndarray:
    """A 224x224 face crop of demo1's first frame, uint8 RGB."""
    from latentsync.media.shots import resize_linear

    it, _, _ = decode_frames(shared_path(DEMO_VIDEO))
    frame = next(it)
    x0, y0, x1, y1 = (int(v) for v in DEMO_FACE)
    return resize_linear(np.ascontiguousarray(frame[y0 - 40:y1 + 40, x0 - 60:x1 + 60]), 224, 224)


def test_jpeg_round_trip_is_a_mild_deterministic_per_frame_loss():
    crop = _real_crop()
    other = np.ascontiguousarray(crop[::-1, ::-1])
    frames = np.stack([crop, other, crop])
    out = jpeg_round_trip(frames)
    assert out.shape == frames.shape and out.dtype == np.uint8
    change = np.abs(out.astype(np.int16) - frames).mean(axis=(1, 2, 3))
    assert np.all((change >= 0.5) & (change <= 3.0)), change  # lossy, but the face is still the face
    np.testing.assert_array_equal(out, jpeg_round_trip(frames))  # deterministic
    np.testing.assert_array_equal(out[0], out[2])  # frame-independent: no rate control carried across frames
    np.testing.assert_array_equal(jpeg_round_trip(frames[:1])[0], out[0])
    np.testing.assert_array_equal(jpeg_round_trip(np.stack([other, crop]))[1], out[0])
    coarser = jpeg_round_trip(frames[:1], qscale=12)
    assert np.abs(coarser.astype(np.int16) - crop).mean() > change[0]
    with pytest.raises(ValueError, match="uint8 RGB"):
        jpeg_round_trip(frames.astype(np.float32))


# ---------------------------------------------------------------- alignment on a real clip

def test_shifting_real_audio_by_k_frames_shifts_the_distance_table(net):
    """demo1 with the golden (random) weights: delaying the audio by k frames moves column k of the
    per-snippet table to column k + k', independent of what the network learned."""
    it, _, _ = decode_frames(shared_path(DEMO_VIDEO))
    frames = np.stack([next(it) for _ in range(21)])
    waveform, rate = load_audio(shared_path(DEMO_AUDIO))
    assert rate == 16000
    base, length = 10 * 640, 21 * 640

    def table(shift: int) -> np.ndarray:
        audio = waveform[:, base - shift * 640:base - shift * 640 + length]
        return score_sync(frames, audio, rate, 25.0, net, FaceCrops(face_boxes=[DEMO_FACE] * 21),
                          tracks=TrackRules(min_track=15)).snippet_distances

    reference = table(0)
    snippets = reference.shape[0]
    assert snippets == 16
    for shift in (3, -2):
        shifted = table(shift)
        checked = 0
        for i in range(snippets):
            for k in range(31):
                moved, original = i + k - 15, i + k - 15 - shift  # audio snippets compared
                # Snippet 0 of each slice starts on an un-pre-emphasised sample, so it is not a shifted copy.
                if 1 <= moved < snippets and 1 <= original < snippets and 0 <= k - shift < 31:
                    assert shifted[i, k] == pytest.approx(reference[i, k - shift], abs=1e-3)
                    checked += 1
        assert checked > 150


# ---------------------------------------------------------------- bad input

def test_short_clip_silent_audio_and_no_face_fail_clearly(net):
    speech = torch.sin(torch.arange(16000) * 0.05) * 0.3
    frames = np.full((40, 224, 224, 3), 128, np.uint8)
    with pytest.raises(SyncScoreError, match="5 frames at 25 fps; the metric needs at least 6"):
        score_sync(frames[:5], speech, 16000, 25, net, crops="input")
    with pytest.raises(SyncScoreError, match="silent"):
        score_sync(frames, torch.zeros(16000), 16000, 25, net, crops="input")
    with pytest.raises(SyncScoreError, match="audio is 0.20 s long"):
        score_sync(frames, speech[:3200], 16000, 25, net, crops="input")
    with pytest.raises(SyncScoreError, match="no face track.*found in 0 of 60 frames"):
        score_sync(np.zeros((60, 64, 64, 3)), speech, 16000, 25, net, FaceCrops(face_boxes=[None] * 60))
    with pytest.raises(SyncScoreError, match="no face track.*only 40 frames"):
        score_sync(frames, speech, 16000, 25, net,
                   FaceCrops(face_boxes=lambda batch: [[[10, 10, 200, 200]]] * len(batch)))
    with pytest.raises(SyncScoreError, match="needs face boxes"):
        score_sync(frames, speech, 16000, 25, net)


def test_score_command_without_audio_or_face_says_what_to_do(tmp_path, syncnet_file):
    import av

    silent_video = tmp_path / "no_audio.mp4"
    with av.open(str(silent_video), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 64
        for _ in range(8):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")))
        out.mux(stream.encode(None))
    args = argparse.Namespace(video=str(silent_video), audio=None, syncnet=str(syncnet_file), s3fd=None,
                              already_cropped=True, min_track=50, device="cpu", json=True)
    with pytest.raises(ValueError, match="no audio stream; pass --audio"):
        score_command(args)
    args.already_cropped, args.audio = False, str(shared_path(DEMO_AUDIO))
    with pytest.raises(ValueError, match="face"):  # the pack's detector finds none in a black clip
        score_command(args)


# ---------------------------------------------------------------- S3FD decoding and crops (no trained weights)

def test_prior_boxes_and_decoding():
    prior = priors((64, 96), [(16, 24), (8, 12)])
    assert prior.shape == (16 * 24 + 8 * 12, 4)
    torch.testing.assert_close(prior[1], torch.tensor([1.5 * 4 / 96, 0.5 * 4 / 64, 16 / 96, 16 / 64]))
    torch.testing.assert_close(prior[16 * 24], torch.tensor([4 / 96, 4 / 64, 32 / 96, 32 / 64]))
    boxes = decode_boxes(torch.zeros(2, 4), prior[:2])
    torch.testing.assert_close(boxes[0], torch.tensor([-6 / 96, -6 / 64, 10 / 96, 10 / 64]))  # centre 2, size 16
    shifted = decode_boxes(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), prior[:1])
    assert shifted[0, 0] - boxes[0, 0] == pytest.approx(0.1 * 16 / 96)


def test_nms_and_candidate_stage():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 12]], float)
    scores = np.array([0.8, 0.9, 0.7, 0.95])
    assert nms(boxes, scores, 0.3).tolist() == [3, 2]
    assert nms(boxes, scores, 0.95).tolist() == [3, 1, 0, 2]
    prior = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.52, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]])
    found = candidate_detections(torch.zeros(3, 4), torch.tensor([0.6, 0.99, 0.01]), prior)
    assert found.shape == (1, 5) and found[0, 0] == pytest.approx(0.99)


def test_detect_faces_returns_confident_merged_boxes_in_frame_pixels():
    net = _always_a_face_s3fd()
    image = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    found = detect_faces(net, image, scale=0.5)  # the net sees 64x64; boxes come back in 128x128 pixels
    assert len(found) >= 1 and (found[:, 4] > 0.9).all()
    np.testing.assert_allclose(found[:, 2] - found[:, 0], 128, atol=1e-3)
    for i in range(len(found)):
        for j in range(i):
            assert nms(found[[j, i], :4], np.array([1.0, 0.5]), 0.1).tolist() == [0, 1]


def _always_a_face_s3fd() -> S3FDNet:
    """Zero weights; the stride-16 head calls every 64 px prior a face, so boxes sit at fixed places."""
    net = S3FDNet().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.conf[2].bias.copy_(torch.tensor([-10.0, 10.0]))
    return net


def test_s3fd_path_from_frames_to_score(net, golden):
    """The reference crop path end to end (detector, shots, tracks, crops, one score per track, mean)."""
    frames = np.repeat(np.random.default_rng(2).integers(0, 255, (1, 256, 256, 3), dtype=np.uint8), 16, axis=0)
    waveform = golden["input.audio_int16"][:16 * 640].float() / 32768
    score = score_sync(frames, waveform, 16000, 25, net, FaceCrops("s3fd", s3fd=_always_a_face_s3fd()),
                       tracks=TrackRules(min_track=10))
    assert score.crops == "s3fd" and len(score.tracks) >= 2  # the two boxes NMS at IoU 0.1 keeps
    assert all(t.snippets == 11 and t.crops == "s3fd" for t in score.tracks)
    assert score.lse_c == pytest.approx(np.mean([t.lse_c for t in score.tracks]))
    assert score.offset == int(np.mean([t.offset for t in score.tracks]))
    assert len(score.to_json()["tracks"]) == len(score.tracks)


def test_crop_geometry_on_given_boxes():
    frame = np.random.default_rng(1).integers(0, 255, (400, 500, 3), dtype=np.uint8)
    # Half-size 80 makes the 2.8·s square exactly 224 px: rows cy-80 .. cy+144, columns cx-112 .. cx+112.
    assert np.array_equal(crop_face(frame, 300.0, 200.0, 80.0), frame[120:344, 188:412])
    corner = crop_face(frame, 50.0, 40.0, 80.0)
    assert (corner[:40] == 110).all() and (corner[:, :62] == 110).all()
    assert np.array_equal(corner[40:, 62:], frame[:184, :162])
    track = CropTrack(np.arange(30), np.tile([[260.0, 120.0, 340.0, 280.0]], (30, 1)))
    np.testing.assert_allclose(smoothed_geometry(track), np.tile([[300.0, 200.0, 80.0]], (30, 1)))


def test_tracks_follow_the_reference_rules():
    face, small = [100.0, 100.0, 260.0, 260.0], [400.0, 400.0, 450.0, 450.0]
    detections = [np.array([face, small]) if i not in range(20, 30) else np.array([small]) for i in range(120)]
    detections[70] = np.array([[300.0, 300.0, 460.0, 460.0]])  # a jump: not the same face
    tracks = build_tracks(detections, [(0, 120)])
    assert len(tracks) == 1  # the small face is too small, the jumped box too short-lived
    track = tracks[0]
    assert (track.first, track.last) == (0, 119)
    np.testing.assert_allclose(track.boxes[25], face)  # interpolated over the 10 missed frames
    # Tracks end at shot cuts: 0-59 holds only 50 detections (not more than 50), 60-119 holds 59.
    assert [(t.first, t.last) for t in build_tracks(detections, [(0, 60), (60, 120)])] == [(60, 119)]
    assert build_tracks(detections, [(0, 49), (49, 120)])[0].first == 49  # a 49-frame shot is not even tried
    long_gap = [np.array([face]) if i < 60 or i >= 90 else np.zeros((0, 4)) for i in range(150)]
    assert [(t.first, t.last) for t in build_tracks(long_gap, [(0, 150)])] == [(0, 59), (90, 149)]


def test_shots_and_25_fps_resampling():
    shots = ShotDetector()
    for i in range(60):
        color = (200, 30, 30) if i < 20 or i >= 25 and i < 40 else (30, 30, 200)
        shots.add(np.full((32, 32, 3), color, np.uint8))
    assert shots.shots() == [(0, 20), (20, 40), (40, 60)]  # the cut back at 25 is within 15 frames of 20
    picked = [i for i, _ in frames_at_25fps(range(600), 30.0)]
    assert len(picked) == 500 and picked[:6] == [0, 1, 2, 4, 5, 6] and picked[-1] == 599
    assert [i for i, _ in frames_at_25fps(range(7), 25)] == list(range(7))
    assert [i for i, _ in frames_at_25fps(range(10), 50)] == [0, 2, 4, 6, 8]
    assert len([i for i, _ in frames_at_25fps(range(240), 24)]) == 250


def test_score_cli_with_the_packs_face_crops(tmp_path, syncnet_file):
    import json
    import subprocess
    import sys

    from conftest import REPO
    from media import cut_clip

    clip = cut_clip(shared_path("media/latentsync_demo1_video.mp4"), tmp_path / "clip.mp4", 40, 540)
    out = subprocess.run([sys.executable, "-m", "latentsync", "score", str(clip), "--audio", str(shared_path(DEMO_AUDIO)),
                          "--syncnet", str(syncnet_file), "--min-track", "20", "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["crops"] == "pack" and len(result["distances"]) == 31 and result["windows"] > 0
