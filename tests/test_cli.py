"""`python -m latentsync vad`: the library path without ComfyUI, printing JSON."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, shared_path
from latentsync.media.audio import load_audio
from latentsync.audio.vad import detect_speech


def run_cli(*args, offline=False):
    cmd = [sys.executable, "-m", "latentsync", *map(str, args)]
    if offline:  # a fresh network namespace with no interfaces: any download attempt would fail
        cmd = [shutil.which("unshare"), "-rn", *cmd]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("backend", ["jit", "onnx"])
def test_vad_cli_prints_the_library_segments_offline(backend):
    wav = shared_path("media/latentsync_demo1_audio.wav")
    out = run_cli("vad", wav, "--backend", backend, "--threshold", "0.45", offline=bool(shutil.which("unshare")))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    expected = detect_speech(*load_audio(wav), threshold=0.45, backend=backend).to_json()
    assert result == expected
    assert set(result) == {"duration", "speech"} and result["duration"] == pytest.approx(9.6, abs=0.01)


def test_vad_cli_reads_the_audio_of_a_video():
    out = run_cli("vad", shared_path("media/latentsync_demo1_video.mp4"), "--min-silence-ms", "300")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["duration"] == pytest.approx(10.0, abs=0.1) and result["speech"]


def test_vad_cli_errors_are_one_clear_line(tmp_path):
    out = run_cli("vad", tmp_path / "missing.wav")
    assert out.returncode == 2 and "missing.wav" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("vad", shared_path("media/latentsync_demo1_audio.wav"), "--threshold", "2")
    assert out.returncode == 2 and "threshold" in out.stderr


def test_faces_cli_finds_the_face_with_auto_and_honours_no_smoothing(tmp_path, capsys, monkeypatch):
    """`faces VIDEO --detector auto --json` on a short cut of the shared clip finds the face and says which
    detector and smoothing it used; `--no-smoothing` reaches the tracker: the same boxes (smoothing moves the
    points only), other points, near the steadied ones."""
    from media import cut_clip

    import latentsync.cli.faces as faces_cli
    from latentsync.cli import main as cli

    clip = cut_clip(shared_path("media/latentsync_demo1_video.mp4"), tmp_path / "clip.mp4", 8, 640)
    out = run_cli("faces", clip, "--detector", "auto", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["frames"] == 8 and result["frames_with_face"] > 0
    assert (result["detector"], result["smoothing"]) == ("auto", True)

    tracks, made = [], faces_cli.track_from_faces

    def kept(*args, **kwargs):  # the track the command reports, points and all
        tracks.append(made(*args, **kwargs))
        return tracks[-1]

    monkeypatch.setattr(faces_cli, "track_from_faces", kept)
    for flag, smoothing in (("--smoothing", True), ("--no-smoothing", False)):
        assert cli.main(["faces", str(clip), "--detector", "auto", "--json", flag]) == 0
        assert json.loads(capsys.readouterr().out)["smoothing"] is smoothing
    steady, plain = tracks
    assert steady.valid.sum() == plain.valid.sum() == result["frames_with_face"]
    assert np.array_equal(steady.boxes, plain.boxes, equal_nan=True)
    seen = steady.valid & plain.valid
    moved = np.abs(steady.points3[seen] - plain.points3[seen]).max(axis=(1, 2))
    width = (plain.boxes[seen, 2] - plain.boxes[seen, 0]).min()
    assert moved.max() > 0.1 and moved.max() < 0.1 * width, (moved, width)  # steadied, not moved elsewhere


# ------------------------------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """Files cut short: an mp4 whose index comes first (so it opens) and whose frames stop part-way, a WAV cut
    inside its header, and a .safetensors cut in half."""
    import av
    import torch
    from safetensors.torch import save_file

    from media import read_frames

    root = tmp_path_factory.mktemp("damaged")
    frames, rate = read_frames(shared_path("media/latentsync_demo1_video.mp4"), 10, 270)
    whole = root / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("mpeg4", rate=rate)  # intra-heavy: frames before the cut still decode
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"g": "1"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    data = whole.read_bytes()
    (root / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])
    wav = shared_path("media/latentsync_demo1_audio.wav").read_bytes()
    (root / "cut.wav").write_bytes(wav[:30])
    save_file({"weight": torch.zeros(4096)}, str(root / "whole.safetensors"))
    (root / "cut.safetensors").write_bytes((root / "whole.safetensors").read_bytes()[:2000])
    return root


def assert_one_error_line(out, *names):
    """`out`: a finished `python -m latentsync` process."""
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    return assert_error_text(out.stderr, *names)


def assert_error_text(stderr: str, *names: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for name in names:
        assert name in lines[0]
    return lines[0]


def run_main(capsys, *args) -> tuple[int, str]:
    """The CLI in this process (no second torch import): exit code and stderr."""
    from latentsync.cli import main as cli

    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as exit_:  # argparse refusing a value, in one line naming the flag
        code = exit_.code
    captured = capsys.readouterr()
    assert code != 2 or captured.out == ""
    return code, captured.err


def test_a_truncated_video_names_the_file_and_the_frame(damaged, capsys):
    line = assert_one_error_line(run_cli("faces", damaged / "cut.mp4"), "cut.mp4")
    assert re.search(r"after [1-9]\d* frames? of the 10", line) and "truncated" in line
    code, err = run_main(capsys, "upscale", damaged / "cut.mp4", "--out", damaged / "up.mp4", "--mode", "bicubic",
                         "--scale", "1")
    assert code == 2 and re.search(r"after [1-9]\d* frames? of the 10", assert_error_text(err, "cut.mp4"))


def test_a_truncated_checkpoint_is_one_error_line(damaged):
    wav = shared_path("media/latentsync_demo1_audio.wav")
    assert_one_error_line(run_cli("score", damaged / "whole.mp4", "--audio", wav, "--syncnet",
                                  damaged / "cut.safetensors"), "cut.safetensors")


@pytest.mark.parametrize("command, blamed", [
    (["vad", "{root}/cut.wav"], "cut.wav"),
    (["score", "{root}/whole.mp4", "--audio", "{root}/cut.wav", "--syncnet", "{root}/whole.safetensors"], "cut.wav"),
    (["faces", "{root}/whole.mp4", "--select", "position", "--position", "nan,0.5"], "position"),
    (["lipsync", "--video", "{root}/whole.mp4", "--audio", "{root}/cut.wav", "--out", "{root}/out.mp4", "--unet",
      "u.pt", "--whisper", "w.pt", "--vae", "v.safetensors", "--select", "index", "--index", "-1"], "index"),
], ids=["vad-truncated-wav", "score-truncated-wav", "faces-nan-position", "lipsync-negative-index"])
def test_damaged_inputs_are_one_error_line(damaged, capsys, command, blamed):
    code, err = run_main(capsys, *[part.format(root=damaged) for part in command])
    assert code == 2
    assert_error_text(err, blamed)


def test_debug_adds_the_traceback_before_or_after_the_command(damaged, capsys):
    out = run_cli("--debug", "faces", damaged / "cut.mp4")
    assert out.returncode == 2 and "Traceback" in out.stderr
    assert out.stderr.splitlines()[-1].startswith("error: ") and "cut.mp4" in out.stderr.splitlines()[-1]
    code, err = run_main(capsys, "faces", damaged / "cut.mp4", "--debug")
    assert code == 2 and "Traceback" in err and err.splitlines()[-1].startswith("error: ")


def test_any_failure_becomes_one_line_and_an_interrupt_exits_130(monkeypatch, capsys):
    from latentsync.cli import main as cli

    wav = str(shared_path("media/latentsync_demo1_audio.wav"))
    failures = {"multi-line": RuntimeError("CUDA out of memory.\n  Tried to allocate 2 GiB\n\nfree 1 GiB"),
                "unexpected": KeyError("speech"), "interrupt": KeyboardInterrupt()}
    expected = {"multi-line": "error: CUDA out of memory. Tried to allocate 2 GiB; free 1 GiB",
                "unexpected": "error: KeyError: 'speech'", "interrupt": "error: interrupted"}
    for name, exc in failures.items():
        def fail(args, exc=exc):
            raise exc

        monkeypatch.setattr(cli, "_vad", fail)
        code = cli.main(["vad", wav])
        err = capsys.readouterr().err
        assert (code, err) == (130 if name == "interrupt" else 2, expected[name] + "\n"), name
