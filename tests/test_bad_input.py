"""The bad-input matrix: every command of the CLI and the pack's nodes in ComfyUI, fed files and settings that
are wrong in every way a user manages (missing, empty, renamed, truncated files; NaN audio; 8 to 96 kHz;
10 ms of audio; one frame; a still image; no face; odd sizes; 23.976 / 60 fps; a vertical clip; audio 3x
longer or shorter; every numeric option at 0, negative, NaN, huge; hostile model files).

Each row says what must happen: either the documented graceful path (exit 0 and JSON the row's check accepts;
the row's `why` says which path), or one line `error: ...` naming the input at fault (exit 2). Never a
traceback, never an unexpected exception type, never an empty answer where there was input. In ComfyUI:
a validation error (HTTP 400) with a message, or an execution error whose message is one line naming the
problem, or success with the documented result; and the server still serves after the walk.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from conftest import REPO, shared_path

VOICE = "media/latentsync_demo1_audio.wav"  # 16 kHz mono; speech from 0.45 s
CLIP = "media/latentsync_demo1_video.mp4"  # 1080x1920 (vertical), 25 fps, AAC voice
SECONDS = 2.0  # the voice and the clip are cut to this
HUGE_INT, HUGE_FLOAT = str(10**12), "1e12"


# ------------------------------------------------------------------------------------------------ the files


def write_wav(path: Path, samples: np.ndarray, rate: int, float32: bool = False) -> Path:
    from scipy.io import wavfile

    data = samples.astype(np.float32) if float32 else (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    wavfile.write(str(path), rate, data)
    return path


def write_faststart_mp4(path: Path, frames: np.ndarray, rate) -> Path:
    """An mp4 whose index comes first and whose frames are all key frames: cut short, it still opens and the
    frames before the cut decode."""
    import av

    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"g": "1"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_odd_video(path: Path, frames: np.ndarray, rate: int = 25) -> Path:
    """Odd sizes need a codec without chroma subsampling: FFV1 in Matroska."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_png(path: Path, image: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(image).save(path)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Every bad (and a few good) input file, and random-weight models in the official formats."""
    from scipy.signal import resample_poly

    from hostile_files import make_target, write_hostile
    from latentsync.media.audio import load_audio
    from latentsync.media.video import write_video
    from media import read_frames, write_clip
    from scripts.model_files import write_whisper_checkpoint
    from syncnet_model_files import write_syncnet_file
    from upscale_model_files import write_realesrgan

    r = tmp_path_factory.mktemp("bad_input")
    rng = np.random.default_rng(0)
    waveform, rate = load_audio(shared_path(VOICE))
    voice = waveform.mean(0).numpy()[: int(SECONDS * rate)]
    write_wav(r / "voice.wav", voice, rate)
    for new_rate in (8000, 22050, 44100, 96000):
        ratio = Fraction(new_rate, rate)
        write_wav(r / f"voice_{new_rate}.wav", resample_poly(voice, ratio.numerator, ratio.denominator), new_rate)
    nan = voice.copy()
    nan[1000:1010] = np.nan
    write_wav(r / "nan.wav", nan, rate, float32=True)
    inf = voice.copy()
    inf[500] = np.inf
    write_wav(r / "inf.wav", inf, rate, float32=True)
    write_wav(r / "short.wav", voice[: rate // 100], rate)  # 10 ms
    write_wav(r / "silence.wav", np.zeros(int(SECONDS * rate)), rate)
    data = (r / "voice.wav").read_bytes()
    (r / "cut_header.wav").write_bytes(data[:30])
    (r / "cut_data.wav").write_bytes(data[: int(len(data) * 0.6)])
    (r / "voice_wav.mp4").write_bytes(data)  # a wav renamed .mp4
    for name in ("empty.wav", "empty.mp4", "empty.png", "empty.pt"):
        (r / name).write_bytes(b"")

    frames, fps = read_frames(shared_path(CLIP), int(SECONDS * 25))
    frames = np.ascontiguousarray(frames[:, 400:1040, 300:780])  # 480x640, vertical; the face is ~220 px wide
    write_video(r / "clip.mp4", torch.from_numpy(frames), 25.0, audio=shared_path(CLIP))  # with its voice
    (r / "clip_mp4.wav").write_bytes((r / "clip.mp4").read_bytes())  # an mp4 renamed .wav
    write_clip(r / "silent_clip.mp4", frames, 25)  # the same frames, no audio track
    write_clip(r / "one_frame.mp4", frames[:1], 25)
    write_png(r / "still.png", frames[0])
    # SyncNet's clips: one second, cropped close to the face (~220 px) so detection costs little.
    talk = np.ascontiguousarray(frames[:25, 160:500, 140:470])
    write_video(r / "talk.mp4", torch.from_numpy(talk), 25.0, audio=shared_path(CLIP))
    write_clip(r / "talk60.mp4", talk, 60)
    write_wav(r / "talk_x3.wav", np.tile(voice, 2)[: 3 * rate], rate)  # 3x longer than talk.mp4
    write_wav(r / "talk_third.wav", voice[rate // 2: rate // 2 + rate // 3], rate)  # 3x shorter (speech)
    write_clip(r / "fps23976.mp4", frames[:30], Fraction(24000, 1001))
    write_clip(r / "fps60.mp4", frames[:30], 60)
    whole = write_faststart_mp4(r / "whole.mp4", frames[:10], fps).read_bytes()
    (r / "cut.mp4").write_bytes(whole[: int(len(whole) * 0.6)])
    write_clip(r / "noise.mp4", rng.integers(0, 256, (12, 120, 160, 3), dtype=np.uint8), 25)  # no face
    write_png(r / "noise.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    for width, height in ((33, 47), (1, 1), (7, 4000)):
        write_png(r / f"odd_{width}x{height}.png", rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    write_odd_video(r / "odd_33x47.mkv", rng.integers(0, 256, (3, 47, 33, 3), dtype=np.uint8))

    write_whisper_checkpoint(r / "tiny.pt")
    write_syncnet_file(r / "syncnet_v2.model")
    write_realesrgan(r / "tiny_x2plus.pth", "x2plus")
    (r / "cut_tiny.pt").write_bytes((r / "tiny.pt").read_bytes()[:4000])
    target = make_target(r / "target.bin")
    for name in ("hostile.pt", "hostile.model", "hostile.pth"):
        write_hostile(r / name, "torchscript", target)
    return r


# ------------------------------------------------------------------------------------------ the CLI matrix


@dataclass(frozen=True)
class Ok:
    """Exit 0 with JSON that `check` accepts; `why` names the documented graceful path."""
    why: str
    check: Callable[[dict], bool]


@dataclass(frozen=True)
class Error:
    """Exit 2, and one line `error: ...` naming each of `names` (a flag may be spelled with _ or -)."""
    names: tuple[str, ...]


def error(*names: str) -> Error:
    return Error(names)


def speech_found(result: dict) -> bool:
    return bool(result["speech"]) and result["duration"] == pytest.approx(SECONDS, abs=0.05)


SPEECH = Ok("speech found in the 2 s voice", speech_found)


def frames_for(fps: float) -> Callable[[dict], bool]:
    """LatentSync's frame count for the 2 s voice: the audio's frames plus up to three (its rounding)."""
    return lambda j: j["fps"] == pytest.approx(fps) and 0 <= j["frames"] - SECONDS * fps <= 3


def run_main(capsys, argv: list[str]) -> tuple[int, str, str]:
    """`python -m latentsync ARGV` in this process: exit code, stdout, stderr."""
    from latentsync.cli import main as cli

    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse refusing a value
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_answer(code: int, out: str, err: str, expect: Ok | Error) -> None:
    assert "Traceback" not in err and "Traceback" not in out
    if isinstance(expect, Error):
        assert code == 2 and out == "", (code, out, err)
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        # An exception type in the line means an unexpected failure (a bug), not a checked input.
        assert not re.match(r"error: \w+(Error|Exception)\b", lines[0]), lines[0]
        spelled = lines[0].replace("_", "-")
        for name in expect.names:
            assert name.replace("_", "-") in spelled, (name, lines[0])
    else:
        assert code == 0 and "error" not in err, err
        result = json.loads(out)
        assert expect.check(result), (expect.why, result)


def expand(command: str, flags: dict[str, dict[str, Ok | Error]]) -> list:
    """`{flag: {value: expectation}}` for one command line -> pytest params."""
    return [pytest.param(f"{command} {flag} {value}", expect, id=f"{command.split()[0]} {flag} {value}")
            for flag, values in flags.items() for value, expect in values.items()]


def case(argv: str, expect: Ok | Error, name: str):
    return pytest.param(argv, expect, id=f"{argv.split()[0]}: {name}")


VAD_FILES = [
    case("vad {r}/nowhere.wav", error("nowhere.wav"), "missing"),
    case("vad {r}/empty.wav", error("empty.wav"), "empty"),
    case("vad {r}/voice_wav.mp4", SPEECH, "wav named .mp4"),  # FFmpeg reads the content, not the suffix
    case("vad {r}/clip_mp4.wav", SPEECH, "mp4 named .wav"),  # the clip's own soundtrack
    case("vad {r}/cut_header.wav", error("cut_header.wav"), "wav cut in its header"),
    case("vad {r}/cut_data.wav", error("cut_data.wav", "truncated"), "wav cut in its samples"),
    case("vad {r}/nan.wav", error("nan.wav", "NaN"), "NaN samples"),
    case("vad {r}/inf.wav", error("inf.wav", "infinite"), "inf samples"),
    *[case(f"vad {{r}}/voice_{rate}.wav", SPEECH, f"{rate} Hz") for rate in (8000, 22050, 44100, 96000)],
    case("vad {r}/short.wav", error("short.wav", "32 ms"), "10 ms"),
    case("vad {r}/silence.wav", Ok("silence: zero segments", lambda j: j["speech"] == []), "silence"),
    case("vad {r}/silent_clip.mp4", error("silent_clip.mp4", "no audio stream"), "video without audio"),
    case("vad {r}/still.png", error("still.png", "no audio stream"), "still image"),
]
VAD_FLAGS = expand("vad {r}/voice.wav", {
    "--threshold": {"0": error("threshold"), "-1": error("threshold"), "nan": error("threshold"),
                    HUGE_FLOAT: error("threshold")},
    "--min-speech-ms": {"0": SPEECH, "-1": error("min_speech_ms"), "nan": error("--min-speech-ms"),
                        HUGE_INT: error("--min-speech-ms", "10000")},  # the VAD node's range
    "--min-silence-ms": {"0": SPEECH, "-1": error("min_silence_ms"), "nan": error("--min-silence-ms"),
                         HUGE_INT: error("--min-silence-ms", "10000")},
    "--padding-ms": {"0": SPEECH, "-1": error("padding_ms"), "nan": error("--padding-ms"),
                     HUGE_INT: error("--padding-ms", "2000")},
})

FEATURES = "features {r}/voice.wav --whisper {r}/tiny.pt --out {r}/out/features.safetensors"
FEATURES_CASES = [
    case("features {r}/nowhere.wav --whisper {r}/tiny.pt --out {r}/out/f.safetensors", error("nowhere.wav"),
         "missing audio"),
    case("features {r}/voice.wav --whisper {r}/nowhere.pt --out {r}/out/f.safetensors", error("nowhere.pt"),
         "missing whisper"),
    case("features {r}/voice.wav --whisper {r}/empty.pt --out {r}/out/f.safetensors", error("empty.pt"),
         "empty whisper"),
    case("features {r}/voice.wav --whisper {r}/cut_tiny.pt --out {r}/out/f.safetensors", error("cut_tiny.pt"),
         "truncated whisper"),
    case("features {r}/voice.wav --whisper {r}/hostile.pt --out {r}/out/f.safetensors",
         error("hostile.pt", "nothing was loaded"), "hostile whisper"),
    case("features {r}/nan.wav --whisper {r}/tiny.pt --out {r}/out/f.safetensors", error("nan.wav", "NaN"),
         "NaN audio"),
    case("features {r}/short.wav --whisper {r}/tiny.pt --out {r}/out/f.safetensors", error("short.wav"),
         "10 ms audio"),
    case("features {r}/voice_96000.wav --whisper {r}/tiny.pt --out {r}/out/f.safetensors",
         Ok("resampled to 16 kHz: the 2 s at 25 fps", frames_for(25)), "96 kHz"),
    case(FEATURES + " --fps 24000/1001", Ok("the 2 s at 23.976 fps", frames_for(24000 / 1001)), "23.976 fps"),
    case(FEATURES + " --fps 60", Ok("the 2 s at 60 fps", frames_for(60)), "60 fps"),
    case(FEATURES + " --frames 150", Ok("audio 3x shorter than the video: the last row repeats",
                                        lambda j: j["frames"] == 150), "audio 3x shorter"),
    case(FEATURES + " --frames 17", Ok("audio 3x longer than the video: the rest is unused",
                                       lambda j: j["frames"] == 17), "audio 3x longer"),
]
FEATURES_FLAGS = expand(FEATURES, {
    "--fps": {"0": error("--fps"), "-1": error("--fps"), "nan": error("--fps"), HUGE_FLOAT: error("--fps", "240")},
    "--frames": {"0": error("frames"), "-1": error("frames"), "nan": error("--frames"), HUGE_INT: error("frames")},
})
FEATURES_FLAGS += expand(FEATURES + " --speech-policy silence", {
    "--vad-threshold": {"nan": error("--vad-threshold")},
    "--crossfade-frames": {"0": Ok("no fade", frames_for(25)), "-1": error("crossfade_frames"),
                           HUGE_INT: error("--crossfade-frames", "25")},  # the sampler setting's range
})

NO_FACE = Ok("no face: every frame flagged (null) and passed through",
             lambda j: j["frames"] >= 1 and j["frames_with_face"] == 0 and all(f["box"] is None for f in j["faces"]))
FACES_CASES = [
    case("faces {r}/nowhere.mp4", error("nowhere.mp4"), "missing"),
    case("faces {r}/empty.mp4", error("empty.mp4"), "empty"),
    case("faces {r}/voice_wav.mp4", error("voice_wav.mp4", "no video stream"), "wav named .mp4"),
    case("faces {r}/clip_mp4.wav", Ok("FFmpeg reads the content: 50 frames, a face in each",
                                      lambda j: j["frames"] == j["frames_with_face"] == 50), "mp4 named .wav"),
    case("faces {r}/cut.mp4", error("cut.mp4", "truncated"), "truncated mp4"),
    case("faces {r}/one_frame.mp4", Ok("one frame, one face", lambda j: j["frames"] == j["frames_with_face"] == 1),
         "1 frame"),
    case("faces {r}/still.png", Ok("a still image is one frame", lambda j: j["frames"] == j["frames_with_face"] == 1),
         "still image"),
    case("faces {r}/noise.mp4", NO_FACE, "no face (noise video)"),
    case("faces {r}/noise.png", NO_FACE, "no face (noise image)"),
    *[case(f"faces {{r}}/odd_{size}.png", NO_FACE, f"odd size {size}") for size in ("33x47", "1x1", "7x4000")],
    case("faces {r}/fps23976.mp4", Ok("23.976 fps kept", lambda j: j["fps"] == pytest.approx(24000 / 1001)
                                      and j["frames_with_face"] == 30), "23.976 fps"),
    case("faces {r}/fps60.mp4", Ok("60 fps kept", lambda j: j["fps"] == 60 and j["frames_with_face"] == 30),
         "60 fps"),
    case("faces {r}/clip.mp4", Ok("a face in every frame of the vertical clip",
                                  lambda j: j["height"] > j["width"] and j["frames"] == j["frames_with_face"] == 50),
         "vertical clip"),
]
FACES_FLAGS = expand("faces {r}/one_frame.mp4 --select index", {
    "--index": {"0": Ok("the only face", lambda j: j["frames_with_face"] == 1), "-1": error("index"),
                "32": Ok("no 33rd face: the frame is flagged", NO_FACE.check),
                "nan": error("--index"), HUGE_INT: error("--index", "32")},  # the node's range
})
FACES_FLAGS += expand("faces {r}/one_frame.mp4", {
    "--threshold": {"0": Ok("dlib's default", lambda j: j["frames_with_face"] == 1),
                    "-1": Ok("the detector's default", lambda j: j["frames_with_face"] == 1),
                    "-0.5": Ok("dlib's HOG threshold may be negative (more detections)",
                               lambda j: j["frames_with_face"] == 1),
                    "5": Ok("nothing scores that high: flagged", NO_FACE.check),
                    "nan": error("--threshold"), HUGE_FLOAT: error("--threshold", "5")},  # the node's range
    "--resolution": {"0": error("--resolution"), "-1": error("--resolution"), "nan": error("--resolution"),
                     HUGE_INT: error("--resolution")},
})
FACES_FLAGS += expand("faces {r}/one_frame.mp4 --select position", {
    "--position": {"0,0": Ok("the face nearest the corner", lambda j: j["frames_with_face"] == 1),
                   "-1,0.5": error("position"), "nan,0.5": error("position"), "1e12,0.5": error("position")},
})

SCORE = "score {r}/talk.mp4 --syncnet {r}/syncnet_v2.model --min-track 10"
SCORED = Ok("scored", lambda j: np.isfinite(j["lse_c"]) and np.isfinite(j["lse_d"]) and j["windows"] > 0)
SCORE_CASES = [
    case("score {r}/nowhere.mp4 --syncnet {r}/syncnet_v2.model", error("nowhere.mp4"), "missing video"),
    case("score {r}/empty.mp4 --syncnet {r}/syncnet_v2.model", error("empty.mp4"), "empty video"),
    case("score {r}/talk.mp4 --syncnet {r}/empty.pt", error("empty.pt"), "empty syncnet"),
    case("score {r}/talk.mp4 --syncnet {r}/hostile.model", error("hostile.model", "nothing was loaded"),
         "hostile syncnet"),
    case(SCORE, SCORED, "the clip's own audio"),
    case(SCORE + " --audio {r}/nan.wav", error("nan.wav", "NaN"), "NaN audio"),
    case(SCORE + " --audio {r}/short.wav", error("short.wav"), "10 ms audio"),
    case(SCORE + " --audio {r}/silence.wav", error("silent"), "silent audio"),
    case(SCORE + " --audio {r}/talk_x3.wav", SCORED, "audio 3x longer"),  # the video's length is scored
    case(SCORE + " --audio {r}/talk_third.wav", Ok("the frames the audio covers are scored, and the windows say "
                                                    "how many", lambda j: 0 < j["windows"] <= 25 / 3),
         "audio 3x shorter"),
    case(SCORE + " --audio {r}/voice_96000.wav", SCORED, "96 kHz audio"),
    case("score {r}/silent_clip.mp4 --syncnet {r}/syncnet_v2.model", error("silent_clip.mp4", "--audio"),
         "video without audio"),
    case("score {r}/one_frame.mp4 --audio {r}/voice.wav --syncnet {r}/syncnet_v2.model", error("frames"),
         "1 frame"),
    case("score {r}/noise.mp4 --audio {r}/voice.wav --syncnet {r}/syncnet_v2.model --min-track 5",
         error("no face"), "no face"),
    case("score {r}/talk60.mp4 --audio {r}/talk_third.wav --syncnet {r}/syncnet_v2.model --min-track 6", SCORED,
         "60 fps"),
]
SCORE_FLAGS = expand("score {r}/talk.mp4 --syncnet {r}/syncnet_v2.model", {
    "--min-track": {"0": SCORED, "-1": error("--min-track"), "nan": error("--min-track"),
                    HUGE_INT: error("--min-track", "1000")},  # the node's range
})

UPSCALE = "upscale {r}/odd_33x47.png --out {r}/out/up.png"
UPSCALE_CASES = [
    case("upscale {r}/nowhere.png --out {r}/out/x.png --mode bicubic --scale 2", error("nowhere.png"), "missing"),
    case("upscale {r}/empty.png --out {r}/out/x.png --mode bicubic --scale 2", error("empty.png"), "empty image"),
    case("upscale {r}/empty.mp4 --out {r}/out/x.mp4 --mode bicubic --scale 2", error("empty.mp4"), "empty video"),
    case("upscale {r}/voice_wav.mp4 --out {r}/out/x.mp4 --mode bicubic --scale 2",
         error("voice_wav.mp4", "no video stream"), "wav named .mp4"),
    case("upscale {r}/cut.mp4 --out {r}/out/x.mp4 --mode bicubic --scale 1", error("cut.mp4", "truncated"),
         "truncated mp4"),
    case("upscale {r}/one_frame.mp4 --out {r}/out/x.mp4 --mode area --scale 0.5",
         Ok("one frame", lambda j: j["frames"] == 1 and j["output_size"] == [240, 320]), "1 frame"),
    case("upscale {r}/fps23976.mp4 --out {r}/out/x.mp4 --mode bilinear --scale 0.5",
         Ok("the frame rate is kept", lambda j: j["fps"] == pytest.approx(24000 / 1001) and j["frames"] == 30),
         "23.976 fps"),
    case("upscale {r}/odd_33x47.mkv --out {r}/out/x.mp4 --mode nearest --scale 1",
         Ok("odd sizes: H.264 needs even ones, so one row and column are added",
            lambda j: j["output_size"] == [34, 48] and j["frames"] == 3), "odd-size video"),
    case("upscale {r}/odd_1x1.png --out {r}/out/x.png --mode bicubic --scale 2",
         Ok("1x1 -> 2x2", lambda j: j["output_size"] == [2, 2]), "1x1 image"),
    case("upscale {r}/odd_7x4000.png --out {r}/out/x.png --mode lanczos --scale 2",
         Ok("7x4000 -> 14x8000", lambda j: j["output_size"] == [14, 8000]), "7x4000 image"),
    case(UPSCALE + " --model {r}/tiny_x2plus.pth",
         Ok("a x2 model on odd sizes: 66x94", lambda j: j["output_size"] == [66, 94]), "model on 33x47"),
    case("upscale {r}/odd_1x1.png --out {r}/out/x.png --model {r}/tiny_x2plus.pth",
         Ok("a x2 model on one pixel", lambda j: j["output_size"] == [2, 2]), "model on 1x1"),
    case(UPSCALE + " --model {r}/empty.pt", error("empty.pt"), "empty model"),
    case(UPSCALE + " --model {r}/hostile.pth", error("hostile.pth", "nothing was loaded"), "hostile model"),
    case(UPSCALE + " --model {r}/tiny.pt", error("tiny.pt"), "whisper as upscaler"),
]
UPSCALE_FLAGS = expand(UPSCALE + " --mode bicubic", {
    "--scale": {"0": error("scale"), "-1": error("scale"), "nan": error("scale"), HUGE_FLOAT: error("scale")},
    "--size": {"0x0": error("--size"), "-1x5": error("--size"), "nanxnan": error("--size"),
               f"{10**6}x{10**6}": error("--size", "16384")},  # the Upscale node's width and height
})
UPSCALE_FLAGS += expand(UPSCALE + " --model {r}/tiny_x2plus.pth", {
    "--tile": {"0": error("tile"), "-1": error("tile"), "nan": error("--tile"),  # the Upscale node's ranges
               "4096": Ok("one tile for the whole image", lambda j: j["output_size"] == [66, 94]),
               HUGE_INT: error("--tile", "4096")},
    "--overlap": {"0": Ok("tiles without overlap", lambda j: j["output_size"] == [66, 94]),
                  "-1": error("overlap"), "nan": error("--overlap"),
                  "256": Ok("overlap is capped by the tile", lambda j: j["output_size"] == [66, 94]),
                  HUGE_INT: error("--overlap", "256")},
    "--chunk": {"0": error("chunk"), "-1": error("chunk"), "nan": error("--chunk"),
                "256": Ok("one chunk", lambda j: j["output_size"] == [66, 94]), HUGE_INT: error("--chunk", "256")},
})
UPSCALE_FLAGS += expand("upscale {r}/one_frame.mp4 --out {r}/out/crf.mp4 --mode area --scale 0.5", {
    "--crf": {"0": Ok("lossless H.264", lambda j: j["frames"] == 1), "-1": error("crf"), "nan": error("--crf"),
              HUGE_INT: error("crf")},
})

# lipsync loads the full SD VAE (slow on a CPU): only what fails before any model runs. (A truncated video is
# lip-synced up to where it stops: tests/test_stream.py.)
LIPSYNC = ("lipsync --video {r}/clip.mp4 --audio {r}/voice.wav --out {r}/out/l.mp4 --unet {r}/nowhere_unet.pt "
           "--whisper {r}/tiny.pt --vae {r}/nowhere_vae.safetensors")
LIPSYNC_CASES = [
    case(LIPSYNC.replace("{r}/clip.mp4", "{r}/nowhere.mp4"), error("nowhere.mp4"), "missing video"),
    case(LIPSYNC.replace("{r}/clip.mp4", "{r}/empty.mp4"), error("empty.mp4"), "empty video"),
    case(LIPSYNC.replace("{r}/voice.wav", "{r}/nowhere.wav"), error("nowhere.wav"), "missing audio"),
    case(LIPSYNC.replace("{r}/voice.wav", "{r}/nan.wav"), error("nan.wav", "NaN"), "NaN audio"),
    case(LIPSYNC.replace("{r}/voice.wav", "{r}/short.wav"), error("short.wav"), "10 ms audio"),
    case(LIPSYNC.replace("{r}/tiny.pt", "{r}/hostile.pt"), error("hostile.pt", "nothing was loaded"),
         "hostile whisper"),
    case(LIPSYNC.replace("{r}/clip.mp4", "{r}/still.png") + " --fps 1e12", error("--fps", "240"),
         "still image at 10^12 fps"),
]
LIPSYNC_FLAGS = expand(LIPSYNC, {
    "--steps": {"0": error("steps"), "-1": error("steps"), "nan": error("--steps"), "1000": error("steps", "200"),
                HUGE_INT: error("steps")},
    "--fast-steps": {"0": error("fast_steps"), "-1": error("fast_steps"), HUGE_INT: error("fast_steps")},
    "--guidance": {"-1": error("guidance"), "nan": error("guidance"), "inf": error("guidance"),
                   HUGE_FLOAT: error("guidance")},
    "--seed": {"-1": error("seed"), "nan": error("--seed"), str(2**64): error("seed")},
    "--deepcache": {"-1": error("deepcache")},
    "--window": {"0": error("window"), "-1": error("window"), HUGE_INT: error("window")},
    "--crossfade": {"-1": error("crossfade")},
    "--min-silence": {"-1": error("min_silence"), "nan": error("min_silence")},
    "--fps": {"0": error("--fps"), "nan": error("--fps")},
    "--crf": {"-1": error("crf"), HUGE_INT: error("crf")},
})
LIPSYNC_FLAGS += expand(LIPSYNC + " --vad silence", {"--vad-threshold": {"nan": error("--vad-threshold"),
                                                                         "0": error("--vad-threshold")}})

CLI_MATRIX = (VAD_FILES + VAD_FLAGS + FEATURES_CASES + FEATURES_FLAGS + FACES_CASES + FACES_FLAGS + SCORE_CASES
              + SCORE_FLAGS + UPSCALE_CASES + UPSCALE_FLAGS + LIPSYNC_CASES + LIPSYNC_FLAGS)


@pytest.mark.parametrize("argv, expect", CLI_MATRIX)
def test_cli(root, capsys, one_thread, argv, expect):
    code, out, err = run_main(capsys, [part.format(r=root) for part in argv.split()])
    check_answer(code, out, err, expect)
    from hostile_files import intact

    assert intact(root / "target.bin")


@pytest.mark.parametrize("argv, expect", [
    ("vad {r}/nan.wav", error("nan.wav", "NaN")),
    ("lipsync --video {r}/clip.mp4 --audio {r}/voice.wav --out {r}/out/x.mp4 --unet u.pt --whisper w.pt --vae v.st "
     "--steps nan", error("--steps")),
], ids=["NaN audio", "argparse refusal"])
def test_cli_process_prints_no_traceback(root, argv, expect):
    """The same answers from a real `python -m latentsync` (nothing else writes to stderr)."""
    out = subprocess.run([sys.executable, "-m", "latentsync", *argv.format(r=root).split()], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    check_answer(out.returncode, out.stdout, out.stderr, expect)


# ------------------------------------------------------------------------------------- the ComfyUI matrix


@dataclass(frozen=True)
class Refused:
    """HTTP 400: node_errors on `node` with a message naming each of `names`."""
    node: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class Fails:
    """The run stops with an execution error on `node_type`: one line naming each of `names`."""
    node_type: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class Runs:
    """The run succeeds; `why` names the documented graceful path that `check(history, server)` accepts."""
    why: str
    check: Callable[[dict, object], bool]


def refused(node: str, *names: str) -> Refused:
    return Refused(node, names)


def fails(node_type: str, *names: str) -> Fails:
    return Fails(node_type, names)


def load_audio(name: str) -> dict:
    return {"class_type": "LoadAudio", "inputs": {"audio": name}}


def empty_image(width: int, height: int, batch: int = 2) -> dict:
    return {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": batch,
                                                   "color": 0x808080}}


def save(node: str) -> dict:
    return {"class_type": "SaveImage", "inputs": {"images": [node, 0], "filename_prefix": "bad_input"}}


def vad(audio: str = "bad_voice.wav", **settings) -> dict:
    inputs = {"threshold": 0.5, "min_speech_ms": 250, "min_silence_ms": 100, "padding_ms": 30, "backend": "jit"}
    return {"1": load_audio(audio), "2": {"class_type": "LatentSyncVAD",
                                         "inputs": {"audio": ["1", 0], **inputs, **settings}}}


def whisper(audio: str = "bad_voice.wav", **settings) -> dict:
    inputs = {"whisper_model": "bad_input_tiny.pt", "fps": 25.0, "frames": 0, "seamless": False,
              "precision": "auto"}
    return {"1": load_audio(audio), "2": {"class_type": "LatentSyncWhisperEncode",
                                         "inputs": {"audio": ["1", 0], **inputs, **settings}}}


def faces(image: tuple[int, int] = (64, 64), **settings) -> dict:
    inputs = {"resolution": "256", "detector": "dlib", "select": "largest", "index": 0, "position_x": 0.5,
              "position_y": 0.4, "threshold": -1.0}
    return {"1": empty_image(*image),
            "2": {"class_type": "LatentSyncDetectFaces", "inputs": {"images": ["1", 0], **inputs, **settings}},
            "3": {"class_type": "LatentSyncPasteFaces", "inputs": {"images": ["1", 0], "faces": ["2", 0],
                                                                   "crops": ["2", 1]}},
            "4": save("3")}


def video_faces(video: str) -> dict:
    prompt = faces()
    prompt["1"] = {"class_type": "LoadVideo", "inputs": {"file": video}}
    prompt["5"] = {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}}
    prompt["2"]["inputs"]["images"] = prompt["3"]["inputs"]["images"] = ["5", 0]
    return prompt


def upscale(image: tuple[int, int] = (33, 47), **settings) -> dict:
    inputs = {"method": "bicubic", "model_name": "none", "scale": 2.0, "width": 0, "height": 0, "tile": 512,
              "overlap": 32, "chunk": 8, "precision": "auto"}
    return {"1": empty_image(*image),
            "2": {"class_type": "LatentSyncUpscale", "inputs": {"images": ["1", 0], **inputs, **settings}},
            "4": save("2")}


def unet(name: str) -> dict:
    return {"1": {"class_type": "LatentSyncUNetLoader", "inputs": {"unet_name": name, "version": "1.5",
                                                                  "dtype": "auto", "quantization": "none"}}}


def score(**settings) -> dict:
    inputs = {"fps": 25.0, "syncnet_model": "bad_input_syncnet.model", "crops": "pack", "s3fd_model": "none",
              "min_track": 5}
    return {"1": empty_image(64, 64, 12), "2": load_audio("bad_voice.wav"),
            "3": {"class_type": "LatentSyncSyncNetScore", "inputs": {"images": ["1", 0], "audio": ["2", 0],
                                                                    **inputs, **settings}}}


def vad_ui(history: dict) -> dict:
    return history["outputs"]["2"]["latentsync_vad"][0]


def saved_sizes(history: dict, server) -> set[tuple[int, int]]:
    from PIL import Image

    return {Image.open(server.dir("output") / f["subfolder"] / f["filename"]).size
            for f in history["outputs"]["4"]["images"]}


VOICE_FOUND = Runs("speech found", lambda h, s: speech_found(vad_ui(h)))
NO_FACE_PASSES = Runs("no face: flagged, and the frames pass through unchanged",
                      lambda h, s: h["outputs"]["2"]["latentsync_faces"][0]["frames_with_face"] == 0)
NAN = float("nan")

COMFY_MATRIX = [
    # LatentSyncVAD: files through the core LoadAudio, then every numeric input.
    ("vad: missing file", vad("bad_nowhere.wav"), refused("1", "bad_nowhere.wav")),
    # Files are decoded by ComfyUI's own LoadAudio / LoadVideo: their answers, one line naming the file...
    ("vad: empty file", vad("bad_empty.wav"), fails("LoadAudio", "bad_empty.wav")),
    ("vad: wav cut in its header", vad("bad_cut_header.wav"), fails("LoadAudio", "bad_cut_header.wav")),
    # ...but a file cut in its samples is decoded as far as it goes, without a word (the pack sees only tensors).
    ("vad: wav cut in its samples", vad("bad_cut_data.wav"),
     Runs("ComfyUI's LoadAudio gives the 1.2 s that are there", lambda h, s: vad_ui(h)["duration"] < 0.7 * SECONDS)),
    ("vad: NaN samples", vad("bad_nan.wav"), fails("LatentSyncVAD", "NaN")),
    ("vad: inf samples", vad("bad_inf.wav"), fails("LatentSyncVAD", "infinite")),
    ("vad: 10 ms", vad("bad_short.wav"), fails("LatentSyncVAD", "32 ms")),
    ("vad: 8 kHz", vad("bad_voice_8000.wav"), VOICE_FOUND),
    ("vad: 96 kHz", vad("bad_voice_96000.wav"), VOICE_FOUND),
    ("vad: mp4 named .wav", vad("bad_clip_mp4.wav"), VOICE_FOUND),
    ("vad: silence", vad("bad_silence.wav"), Runs("silence: zero segments", lambda h, s: vad_ui(h)["speech"] == [])),
    ("vad: threshold 0", vad(threshold=0.0), refused("2", "threshold")),
    ("vad: threshold -1", vad(threshold=-1.0), refused("2", "threshold")),
    ("vad: threshold NaN", vad(threshold=NAN), refused("2", "threshold")),  # the schema check refuses NaN
    ("vad: threshold huge", vad(threshold=1e12), refused("2", "threshold")),
    ("vad: threshold a string", vad(threshold="loud"), refused("2", "threshold")),
    ("vad: min_speech_ms -1", vad(min_speech_ms=-1), refused("2", "min_speech_ms")),
    ("vad: min_silence_ms NaN", vad(min_silence_ms=NAN), refused("2", "min_silence_ms")),
    ("vad: padding_ms huge", vad(padding_ms=10**12), refused("2", "padding_ms")),
    # LatentSyncWhisperEncode
    ("whisper: fps 0", whisper(fps=0.0), refused("2", "fps")),
    ("whisper: fps NaN", whisper(fps=NAN), refused("2", "fps")),
    ("whisper: fps huge", whisper(fps=1e12), refused("2", "fps")),
    ("whisper: frames -1", whisper(frames=-1), refused("2", "frames")),
    ("whisper: frames huge", whisper(frames=10**12), refused("2", "frames")),
    ("whisper: frames a string", whisper(frames="many"), refused("2", "frames")),
    ("whisper: NaN audio", whisper("bad_nan.wav"), fails("LatentSyncWhisperEncode", "NaN")),
    # LatentSyncDetectFaces + PasteFaces on frames without a face, odd sizes
    ("faces: empty video", video_faces("bad_empty.mp4"), fails("GetVideoComponents", "bad_empty.mp4")),
    ("faces: truncated video", video_faces("bad_cut.mp4"),
     Runs("ComfyUI's LoadVideo gives the frames before the cut",
          lambda h, s: 0 < h["outputs"]["2"]["latentsync_faces"][0]["frames_with_face"] < 10)),
    ("faces: 1 frame", video_faces("bad_one_frame.mp4"),
     Runs("one frame, one face", lambda h, s: h["outputs"]["2"]["latentsync_faces"][0]["frames_with_face"] == 1)),
    ("faces: 33x47", faces((33, 47)), NO_FACE_PASSES),
    ("faces: 1x1", faces((1, 1)), NO_FACE_PASSES),
    ("faces: 7x4000", faces((7, 4000)), NO_FACE_PASSES),
    ("faces: index -1", faces(select="index", index=-1), refused("2", "index")),
    ("faces: index huge", faces(select="index", index=10**12), refused("2", "index")),
    ("faces: position NaN", faces(select="position", position_x=NAN), refused("2", "position")),
    ("faces: threshold NaN", faces(threshold=NAN), refused("2", "threshold")),
    ("faces: threshold a string", faces(threshold="strict"), refused("2", "threshold")),
    # LatentSyncUpscale
    ("upscale: 1x1", upscale((1, 1)), Runs("2x2", lambda h, s: saved_sizes(h, s) == {(2, 2)})),
    ("upscale: 7x4000", upscale((7, 4000), method="area", scale=0.5),
     Runs("4x2000", lambda h, s: saved_sizes(h, s) == {(4, 2000)})),
    ("upscale: model on 33x47", upscale(method="model", model_name="bad_input_x2plus.pth"),
     Runs("66x94", lambda h, s: saved_sizes(h, s) == {(66, 94)})),
    ("upscale: scale 0", upscale(scale=0.0), refused("2", "scale")),
    ("upscale: scale NaN", upscale(scale=NAN), refused("2", "scale")),
    ("upscale: width huge", upscale(width=10**12, height=10), refused("2", "width")),
    ("upscale: tile a string", upscale(tile="big"), refused("2", "tile")),
    # LatentSyncUNetLoader and LatentSyncSyncNetScore
    ("unet: empty file", unet("bad_input_empty.pt"), fails("LatentSyncUNetLoader", "bad_input_empty.pt")),
    ("unet: hostile file", unet("bad_input_hostile.pt"),
     fails("LatentSyncUNetLoader", "bad_input_hostile.pt", "nothing was loaded")),
    ("score: fps NaN", score(fps=NAN), refused("3", "fps")),
    ("score: min_track -1", score(min_track=-1), refused("3", "min_track")),
    ("score: no face", score(), fails("LatentSyncSyncNetScore", "no face")),
]


@pytest.fixture(scope="module")
def comfy_inputs(comfy_server, root):
    """The bad files in ComfyUI's input folder and the models in its model folders, named bad_*."""
    for name in ("voice.wav", "nan.wav", "inf.wav", "short.wav", "voice_8000.wav", "voice_96000.wav",
                 "clip_mp4.wav", "silence.wav", "empty.wav", "cut_header.wav", "cut_data.wav", "empty.mp4", "cut.mp4",
                 "one_frame.mp4"):
        shutil.copy(root / name, comfy_server.dir("input") / f"bad_{name}")
    models = comfy_server.dir("models")
    for source, folder, name in (("tiny.pt", "whisper", "bad_input_tiny.pt"),
                                 ("tiny_x2plus.pth", "upscale_models", "bad_input_x2plus.pth"),
                                 ("syncnet_v2.model", "syncnet", "bad_input_syncnet.model"),
                                 ("empty.pt", "latentsync", "bad_input_empty.pt"),
                                 ("hostile.pt", "latentsync", "bad_input_hostile.pt")):
        (models / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(root / source, models / folder / name)
    return comfy_server


def one_line(message: str) -> bool:
    return "\n" not in message.strip() and "Traceback" not in message


@pytest.mark.comfyui
@pytest.mark.parametrize("prompt, expect", [pytest.param(p, e, id=name) for name, p, e in COMFY_MATRIX])
def test_comfyui(comfy_inputs, prompt, expect):
    server = comfy_inputs
    status, reply = server.queue(prompt)
    if isinstance(expect, Refused):
        assert status == 400, reply
        errors = reply["node_errors"][expect.node]["errors"]
        assert errors and all(e["message"] for e in errors), reply
        text = json.dumps(errors)
        for name in expect.names:
            assert name in text, (name, errors)
        return
    assert status == 200, reply
    history = server.wait(reply["prompt_id"])
    if isinstance(expect, Fails):
        assert history["status"]["status_str"] == "error", history["status"]
        (error,) = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
        assert error["node_type"] == expect.node_type, error
        assert one_line(error["exception_message"]), error["exception_message"]
        for name in expect.names:
            assert name in error["exception_message"], (name, error["exception_message"])
    else:
        assert history["status"]["status_str"] == "success", history["status"]
        assert expect.check(history, server), expect.why


@pytest.mark.comfyui
def test_comfyui_still_serves_after_the_walk(comfy_inputs, root):
    from hostile_files import intact

    assert intact(root / "target.bin")
    stats = comfy_inputs.get("/system_stats")
    assert stats["system"]["comfyui_version"] == "0.3.75"
    history = comfy_inputs.run(vad("bad_voice.wav"))  # and still runs a good prompt
    assert history["status"]["status_str"] == "success" and speech_found(vad_ui(history))


# --- issue 29: no command writes over its inputs, and a run that changed nothing says so


def digests(*paths: Path) -> dict[Path, str]:
    """Each file's SHA-256: compared before and after a command, to show that no input lost a byte."""
    import hashlib

    return {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}


@pytest.fixture(scope="module")
def clash(root) -> Path:
    """A folder of its own (the clashes write links and copies) with the inputs the clash cases name."""
    folder = root / "clash"
    folder.mkdir()
    for name in ("clip.mp4", "voice.wav", "tiny.pt", "odd_1x1.png"):
        shutil.copy(root / name, folder / name)
    (folder / "link.mp4").symlink_to(folder / "clip.mp4")
    (folder / "link.wav").symlink_to("voice.wav")  # relative, as users make them
    (folder / "hard.png").hardlink_to(folder / "odd_1x1.png")
    (folder / "models.json").write_text(json.dumps({"models": {}, "configs": [{"name": "clip"}]}))
    (folder / "existing").mkdir()
    return folder


LIPSYNC_INTO = ("lipsync --video {c}/clip.mp4 --audio {c}/voice.wav --out {out} --unet {c}/nowhere_unet.pt "
                "--whisper {c}/tiny.pt --vae {c}/nowhere_vae.safetensors")
CLASHES = [
    # (argv, names the one line must hold): the missing UNet is never reached, so the clash is found first.
    (LIPSYNC_INTO.format(c="{c}", out="{c}/clip.mp4"), ("--out", "--video", "same file")),
    (LIPSYNC_INTO.format(c="{c}", out="./clip.mp4"), ("--out", "--video", "same file")),
    (LIPSYNC_INTO.format(c="{c}", out="{c}/../clash/clip.mp4"), ("--out", "--video")),
    (LIPSYNC_INTO.format(c="{c}", out="{c}/link.mp4"), ("--video", "symbolic link")),
    (LIPSYNC_INTO.format(c="{c}", out="{c}/voice.wav"), ("--out", "--audio")),
    (LIPSYNC_INTO.format(c="{c}", out="link.wav"), ("--out", "--audio", "symbolic link")),
    (LIPSYNC_INTO.format(c="{c}", out="{c}/tiny.pt"), ("--out", "--whisper")),
    (LIPSYNC_INTO.format(c="{c}", out="{c}/existing"), ("--out", "existing folder")),
    ("features {c}/voice.wav --whisper {c}/tiny.pt --out {c}/voice.wav", ("--out", "audio", "same file")),
    ("features {c}/voice.wav --whisper {c}/tiny.pt --out ./tiny.pt", ("--out", "--whisper")),
    ("features {c}/voice.wav --whisper {c}/tiny.pt --out {c}/existing", ("--out", "existing folder")),
    ("upscale {c}/odd_1x1.png --out {c}/odd_1x1.png --mode bicubic --scale 2", ("--out", "input", "same file")),
    ("upscale {c}/odd_1x1.png --out {c}/hard.png --mode bicubic --scale 2", ("--out", "input", "hard link")),
    ("upscale {c}/odd_1x1.png --out {c}/existing --mode bicubic --scale 2", ("--out", "existing folder")),
    ("upscale {c}/clip.mp4 --out {c}/link.mp4 --mode nearest --scale 1", ("input", "symbolic link")),
    # The experiment writes {config name}.mp4 in its folder: a config named "clip" would replace the clip.
    ("experiment --video {c}/clip.mp4 --audio {c}/voice.wav --configs {c}/models.json --out {c}",
     ("--out", "clip.mp4", "--video")),
    ("experiment --video {c}/clip.mp4 --audio {c}/voice.wav --configs {c}/models.json --out {c}/voice.wav",
     ("--out", "existing file")),
]


@pytest.mark.parametrize("argv, names", CLASHES, ids=[" ".join(a.split()[:1] + a.split()[-6:]) for a, _ in CLASHES])
def test_no_command_writes_over_its_inputs(clash, capsys, monkeypatch, argv, names):
    """The output compared with every input by file identity (links followed), refused before anything loads
    with one line naming the clash (exit 2); an existing folder as --out refused at once. Every file keeps its
    bytes, and nothing new appears beside them."""
    monkeypatch.chdir(clash)
    before = digests(*(p for p in clash.iterdir() if p.is_file()))
    listing = sorted(p.name for p in clash.iterdir())
    code, out, err = run_main(capsys, argv.format(c=clash).split())
    check_answer(code, out, err, error(*names))
    assert digests(*before) == before
    assert sorted(p.name for p in clash.iterdir()) == listing  # no OUT.partial/, no report files


def test_a_faceless_clip_says_that_nothing_was_done(root, capsys):
    """`faces` on a clip without a face: exit 0 (the documented pass-through), a `warnings` entry in the JSON and
    the same as a `warning:` line on stderr."""
    code, out, err = run_main(capsys, ["faces", str(root / "noise.mp4")])
    assert code == 0, err
    result = json.loads(out)
    assert result["frames_with_face"] == 0
    assert [w for w in result["warnings"] if "no face was found in any of the 12 frames" in w], result["warnings"]
    assert f"warning: {result['warnings'][0]}" in err.splitlines()
    code, out, err = run_main(capsys, ["faces", str(root / "one_frame.mp4")])
    assert code == 0 and json.loads(out)["warnings"] == [] and "warning" not in err


@pytest.fixture(scope="module")
def tiny_models(root) -> dict[str, Path]:
    """The tiny random-weight UNet (its config beside it) and a narrow random SD VAE, as files."""
    from scripts.model_files import write_tiny_unet
    from scripts.vae_files import NARROW_WIDTHS, write_sd_vae

    config = json.loads(shared_path("reference/latentsync/unet_tiny_config.json").read_text())["unet_config"]
    return {"unet": write_tiny_unet(root / "tiny_unet" / "latentsync_unet.pt", config, resolution=64),
            "vae": write_sd_vae(root / "narrow_vae.safetensors", widths=NARROW_WIDTHS), "whisper": root / "tiny.pt"}


@pytest.mark.parametrize("video, audio, policy, expected", [
    ("noise.mp4", "voice.wav", "off", "no face was found in any of the 12 frames"),
    ("talk.mp4", "silence.wav", "skip", "no speech was found in the audio and vad_policy 'skip'"),
], ids=["no face", "no speech with skip"])
def test_a_lipsync_that_changes_nothing_says_so(root, tiny_models, capsys, video, audio, policy, expected):
    """The streamed `lipsync` on a clip without a face, or on silence with vad_policy skip: exit 0 with the
    frames passed through, `generated_frames: 0`, and a warning saying why (JSON and stderr); inputs intact."""
    inputs = digests(root / video, root / audio, *tiny_models.values())
    out = root / "out" / f"nothing_{policy}.mp4"
    argv = ["lipsync", "--video", str(root / video), "--audio", str(root / audio), "--out", str(out),
            "--unet", str(tiny_models["unet"]), "--whisper", str(tiny_models["whisper"]), "--vae",
            str(tiny_models["vae"]), "--vad-policy", policy, "--steps", "2", "--quiet"]
    code, stdout, err = run_main(capsys, argv)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["generated_frames"] == 0 and out.is_file()
    (said,) = [w for w in result["warnings"] if expected in w]
    assert "nothing was lip-synced" in said and f"warning: {said}" in err.splitlines()
    assert digests(*inputs) == inputs


def test_the_in_memory_sampler_reports_why_nothing_was_generated(root, tiny_models):
    """What the sampler nodes show: `lipsync` (in memory) on frames without a face returns them unchanged with
    the reason in its stats; with a face and speech, no such warning."""
    from sampler_fixtures import PoolVAE, fake_features

    from latentsync.media.video import read_frames
    from latentsync.sample.sampler import lipsync
    from latentsync.sample.settings import SamplerSettings
    from latentsync.unet.files import choose_config
    from latentsync.unet.loading import load_unet

    unet = load_unet(tiny_models["unet"], choose_config(tiny_models["unet"], "auto").config)
    frames, _ = read_frames(root / "noise.mp4")
    result = lipsync(frames, fake_features(len(frames)), unet, PoolVAE(), SamplerSettings(steps=1), resolution=64)
    assert int(result.generated.sum()) == 0
    assert torch.equal((result.frames * 255).round().to(torch.uint8), frames)
    (said,) = result.stats["warnings"]
    assert "no face was found in any of the 12 frames" in said


@pytest.mark.comfyui
def test_comfyui_detect_faces_says_no_face_on_the_node(comfy_inputs):
    """The Detect Faces node's report (what js/node_reports.js shows on the node) carries the warning."""
    history = comfy_inputs.run(faces((64, 64)))
    assert history["status"]["status_str"] == "success"
    (report,) = history["outputs"]["2"]["latentsync_faces"]
    assert report["frames_with_face"] == 0
    (said,) = report["warnings"]
    assert "no face was found in any of the 2 frames" in said and "unchanged" in said


# --- issue 29: rotated phone videos
# Phones store frames landscape and flag how players turn them: a display matrix in the track header (`tkhd`).
# Every decode of the pack must show the frames as players do, say so, and write outputs upright without a flag.


def shown_by_matrix(stored: np.ndarray, a: int, b: int, c: int, d: int) -> np.ndarray:
    """What a player shows for a stored `[H, W, 3]` frame under the display matrix [a b 0; c d 0; 0 0 1]: the
    specification's mapping itself (ISO 14496-12: the point (x, y), y down, is shown at (a x + c y, b x + d y)),
    pixel by pixel, with no rotation helper of numpy or the pack."""
    h, w = stored.shape[:2]
    y, x = np.mgrid[:h, :w] + 0.5  # pixel centres
    u, v = a * x + c * y, b * x + d * y
    col, row = (u - u.min()).astype(int), (v - v.min()).astype(int)
    shown = np.zeros((row.max() + 1, col.max() + 1, 3), stored.dtype)
    shown[row, col] = stored
    return shown


def write_display_matrix(path: Path, a: int, b: int, c: int, d: int) -> Path:
    """Set the display matrix of an mp4's first track in place, as a phone writes it: [a b 0; c d 0; 0 0 1] in
    the `tkhd` box (16.16 fixed point, the last column 2.30). The encoded frames keep every byte."""
    import struct

    data = bytearray(path.read_bytes())

    def boxes(start: int, end: int):
        while start < end:
            size, kind = struct.unpack_from(">I4s", data, start)
            yield kind, start + 8, start + size
            start += size

    moov = next((s, e) for kind, s, e in boxes(0, len(data)) if kind == b"moov")
    trak = next((s, e) for kind, s, e in boxes(*moov) if kind == b"trak")
    tkhd = next(s for kind, s, _ in boxes(*trak) if kind == b"tkhd")
    # version/flags (4), times, track id and duration (20 or 32 by version), reserved, layer, group, volume (16)
    matrix_at = tkhd + (40 if data[tkhd] == 0 else 52)
    struct.pack_into(">9i", data, matrix_at, a << 16, b << 16, 0, c << 16, d << 16, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))
    return path


def raw_decode(path: Path) -> tuple[np.ndarray, list]:
    """The frames as stored (PyAV alone, nothing turned) and the first frame's display matrix (None: no flag)."""
    import av

    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    side = frames[0].side_data.get("DISPLAYMATRIX")
    matrix = None if side is None else np.frombuffer(bytes(side), "=i4").tolist()
    return np.stack([f.to_ndarray(format="rgb24") for f in frames]), matrix


# The matrices players meet, by what they do to the stored frame: (a, b, c, d) of [a b 0; c d 0; 0 0 1].
PHONE_MATRICES = {
    "90": (0, 1, -1, 0),  # 90° clockwise (`rotate=90`): a phone held upright, the most common
    "180": (-1, 0, 0, -1),  # upside down
    "270": (0, -1, 1, 0),  # 270° clockwise (`rotate=270`)
    # Turned 90° counter-clockwise, then mirrored left-right (a front camera): the order matters, the other one
    # (mirror, then turn) is the transpose (0, 1, 1, 0).
    "mirrored": (0, -1, -1, 0),
}


@pytest.mark.parametrize("linear", [(a, b, c, d) for a, b, c, d in
                                    [(1, 0, 0, 1), (0, 1, -1, 0), (-1, 0, 0, -1), (0, -1, 1, 0),
                                     (-1, 0, 0, 1), (1, 0, 0, -1), (0, 1, 1, 0), (0, -1, -1, 0)]],
                         ids=["identity", "cw90", "180", "cw270", "hflip", "vflip", "transpose", "antitranspose"])
def test_the_display_matrix_turns_frames_as_the_specification_says(linear):
    """All eight right-angle display matrices (four turns, each plain and mirrored), at FFmpeg's fixed-point
    scale: the frame the pack shows is the one the specification's mapping gives, shape and every pixel."""
    from latentsync.media.orientation import orientation_from_matrix

    a, b, c, d = linear
    stored = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    orientation = orientation_from_matrix([a << 16, b << 16, 0, c << 16, d << 16, 0, 0, 0, 1 << 30])
    shown = orientation.apply(stored)
    assert np.array_equal(shown, shown_by_matrix(stored, a, b, c, d))
    assert shown.flags.c_contiguous and orientation.size(10, 6) == shown.shape[1::-1]
    assert (orientation.warning("x.mp4") is None) == (linear == (1, 0, 0, 1))


@pytest.fixture(scope="module")
def phone_clips(root) -> dict[str, tuple[Path, np.ndarray]]:
    """For each of PHONE_MATRICES, `phone_NAME.mp4`: 10 frames of the vertical 480x640 clip stored so that the
    matrix shows them upright (landscape for the quarter turns), with the clip's voice, and the upright frames.
    The flag is checked with PyAV alone."""
    from latentsync.media.video import write_video
    from media import read_frames as decode_raw

    upright, _ = decode_raw(root / "clip.mp4", 10)
    clips = {}
    for name, (a, b, c, d) in PHONE_MATRICES.items():
        # A right-angle matrix's inverse is its transpose: store what (a, c, b, d) shows.
        stored = np.stack([shown_by_matrix(frame, a, c, b, d) for frame in upright])
        path = root / f"phone_{name}.mp4"
        write_video(path, torch.from_numpy(stored), 25.0, audio=shared_path(CLIP))
        write_display_matrix(path, a, b, c, d)
        _, matrix = raw_decode(path)
        assert matrix is not None and [m // 65536 for m in (matrix[0], matrix[1], matrix[3], matrix[4])] == [a, b, c, d]
        clips[name] = (path, upright)
    return clips


def close_to(frames: np.ndarray, upright: np.ndarray) -> bool:
    """The same pictures within H.264's noise (crf 18: a few grey levels on average)."""
    return frames.shape == upright.shape and float(np.abs(frames.astype(int) - upright).mean()) < 4


@pytest.mark.parametrize("name", PHONE_MATRICES)
def test_every_reader_gives_a_phone_video_upright(phone_clips, name):
    """`read_frames`, `decode_frames`, `VideoFrames` (first pass, then reads forward and back) and
    `VideoChunkReader` give exactly the stored frames turned as the specification says, which are the upright
    clip within codec noise; `video_info` and the readers' sizes are the upright ones; the readers say why."""
    from latentsync.media.frame_reader import VideoFrames
    from latentsync.media.video import decode_frames, read_frames, video_info
    from latentsync.media.video_stream import VideoChunkReader

    path, upright = phone_clips[name]
    before = digests(path)
    stored, _ = raw_decode(path)
    expected = np.stack([shown_by_matrix(frame, *PHONE_MATRICES[name]) for frame in stored])
    assert close_to(expected, upright) and not close_to(stored, upright)

    assert np.array_equal(read_frames(path)[0].numpy(), expected)
    assert np.array_equal(np.stack(list(decode_frames(path)[0])), expected)
    info = video_info(path)
    assert (info.width, info.height, info.frames) == (480, 640, 10)
    with VideoFrames(path, cache_bytes=0) as frames:
        assert (frames.width, frames.height) == (480, 640)
        assert np.array_equal(np.stack(list(frames.scan())), expected)
        assert np.array_equal(frames.read([9, 2, 5, 0]), expected[[9, 2, 5, 0]])
        said = frames.orientation_warning
    with VideoChunkReader(path) as reader:
        assert (reader.width, reader.height) == (480, 640)
        assert np.array_equal(np.concatenate([chunk for chunk, _ in reader.chunks(4)]), expected)
        assert reader.orientation_warning == said
    assert said.startswith(f"phone_{name}.mp4: the file asks for ") and "(display matrix)" in said
    assert "frames are read upright" in said and ("mirror" in said) == (name == "mirrored")
    if name != "mirrored":
        assert f"a {name}° clockwise rotation" in said
    assert digests(path) == before


@pytest.mark.parametrize("name", PHONE_MATRICES)
def test_faces_finds_the_face_in_every_frame_of_a_phone_video(phone_clips, capsys, one_thread, name):
    """`faces` on a phone video: a face in each of the 10 frames, a vertical frame, and the warning (JSON and
    stderr); the file keeps its bytes."""
    path, _ = phone_clips[name]
    before = digests(path)
    code, out, err = run_main(capsys, ["faces", str(path)])
    check_answer(code, out, err, Ok("upright: a face in every frame",
                                    lambda j: j["frames"] == j["frames_with_face"] == 10
                                    and (j["width"], j["height"]) == (480, 640)))
    (said,) = json.loads(out)["warnings"]
    assert f"phone_{name}.mp4: the file asks for" in said and f"warning: {said}" in err.splitlines()
    assert digests(path) == before


@pytest.mark.parametrize("name", ["90", "mirrored"])
def test_upscale_writes_a_phone_video_upright(phone_clips, root, capsys, name):
    """`upscale --mode nearest --scale 1` on a phone video writes the upright frames (vertical, within codec noise)
    with no rotation flag, and the warning; the input keeps its bytes."""
    path, upright = phone_clips[name]
    before = digests(path)
    out = root / "out" / f"upright_{name}.mp4"
    code, stdout, err = run_main(capsys, ["upscale", str(path), "--out", str(out), "--mode", "nearest",
                                          "--scale", "1"])
    check_answer(code, stdout, err, Ok("upright output", lambda j: j["input_size"] == j["output_size"] == [480, 640]))
    (said,) = json.loads(stdout)["warnings"]
    assert f"phone_{name}.mp4: the file asks for" in said
    written, matrix = raw_decode(out)
    assert matrix is None and close_to(written, upright)
    assert digests(path) == before


def test_lipsync_lip_syncs_a_phone_video_upright(phone_clips, root, tiny_models, capsys):
    """The streamed `lipsync` (tiny random-weight UNet and VAE) on a phone video: the face is found, frames are
    generated, the output is vertical with no rotation flag, and the warning says the file was turned."""
    path, _ = phone_clips["90"]
    inputs = digests(path, root / "voice.wav", *tiny_models.values())
    out = root / "out" / "phone_lipsync.mp4"
    argv = ["lipsync", "--video", str(path), "--audio", str(root / "voice.wav"), "--out", str(out),
            "--unet", str(tiny_models["unet"]), "--whisper", str(tiny_models["whisper"]), "--vae",
            str(tiny_models["vae"]), "--steps", "1", "--quiet"]
    code, stdout, err = run_main(capsys, argv)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["generated_frames"] > 0 and (result["width"], result["height"]) == (480, 640)
    assert [w for w in result["warnings"] if "phone_90.mp4: the file asks for a 90° clockwise rotation" in w]
    written, matrix = raw_decode(out)
    assert matrix is None and written.shape[1:] == (640, 480, 3)
    assert digests(*inputs) == inputs


@pytest.mark.comfyui
def test_comfyui_video_info_gives_the_upright_size_of_a_phone_video(comfy_inputs, phone_clips):
    """Video Info on a phone video from Load Video: the upright width and height (the video-file sampler reads its
    VIDEO through the same `VideoFrames`, and its note's `warnings` get the warning from `lipsync_stream`)."""
    path, _ = phone_clips["90"]
    shutil.copy(path, comfy_inputs.dir("input") / "bad_phone_90.mp4")
    history = comfy_inputs.run({
        "1": {"class_type": "LoadVideo", "inputs": {"file": "bad_phone_90.mp4"}},
        "2": {"class_type": "LatentSyncVideoInfo", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 2]}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["2", 3]}}})
    assert history["status"]["status_str"] == "success", history["status"]
    assert (history["outputs"]["3"]["text"], history["outputs"]["4"]["text"]) == (["480"], ["640"])


@pytest.mark.parametrize("value", range(1, 9))
def test_a_photo_is_read_as_viewers_show_it(root, value):
    """A still image's EXIF orientation (1-8) turns its pixels exactly as Pillow's `exif_transpose` does, in every
    reader (`read_frames`, `decode_frames`, `VideoFrames`), and the readers say so (none for 1: as stored)."""
    from PIL import Image, ImageOps

    from latentsync.media.frame_reader import VideoFrames
    from latentsync.media.video import decode_frames, read_frames

    stored = np.random.default_rng(value).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    path = root / f"exif_{value}.png"
    exif = Image.Exif()
    exif[0x0112] = value
    Image.fromarray(stored).save(path, exif=exif)
    before = digests(path)
    with Image.open(path) as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    assert np.array_equal(read_frames(path)[0][0].numpy(), expected)
    assert np.array_equal(next(decode_frames(path)[0]), expected)
    with VideoFrames(path) as frames:
        assert (frames.height, frames.width) == expected.shape[:2]
        said = frames.orientation_warning
    assert (said is None) == (value == 1)
    if value != 1:
        assert said.startswith(f"exif_{value}.png: the file asks for") and "(EXIF orientation)" in said
    assert digests(path) == before


def test_faces_finds_the_face_of_a_photo_stored_sideways(root, capsys, one_thread):
    """A portrait photo stored sideways with EXIF orientation 6 (how phones save them): `faces` finds the face
    in the upright picture and says it turned it; `upscale` writes the upright picture."""
    from PIL import Image

    path = root / "sideways_photo.jpg"
    upright = np.asarray(Image.open(root / "still.png").convert("RGB"))
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers turn it 90° clockwise
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(path, exif=exif, quality=95)
    before = digests(path)
    code, out, err = run_main(capsys, ["faces", str(path)])
    check_answer(code, out, err, Ok("upright: the face found", lambda j: j["frames_with_face"] == 1
                                    and (j["width"], j["height"]) == (480, 640)))
    (said,) = json.loads(out)["warnings"]
    assert "a 90° clockwise rotation (EXIF orientation)" in said and f"warning: {said}" in err.splitlines()
    written = root / "out" / "upright_photo.png"
    code, out, err = run_main(capsys, ["upscale", str(path), "--out", str(written), "--mode", "nearest",
                                       "--scale", "1"])
    check_answer(code, out, err, Ok("upright", lambda j: j["output_size"] == [480, 640] and j["warnings"]))
    assert np.abs(np.asarray(Image.open(written)).astype(int) - upright).mean() < 4
    assert digests(path) == before


# --- issue 29: model files named for what they are

# A minimal ONNX ModelProto: ir_version 8, an empty graph, opset 17 (what the structural check looks for).
MINIMAL_ONNX = b"\x08\x08" + b"\x3a\x00" + b"\x42\x02\x10\x11"
# Each misnamed file of the `misnamed` fixture, with what its one line must say besides its name.
MISNAMED_AS = {
    "zip.safetensors": ("is a PyTorch zip checkpoint named .safetensors", "rename it to .pt", "nothing was loaded"),
    "legacy.safetensors": ("is a Python pickle (PyTorch legacy checkpoint) named .safetensors", "rename it to .pt",
                           "nothing was loaded"),
}
MISNAMED_UNET = "{r}/misnamed/tiny_unet/latentsync_unet.pt"


@pytest.fixture(scope="module")
def misnamed(root) -> Path:
    """root/misnamed: a torch.save zip and a legacy torch.save pickle named .safetensors, plain pickles of every
    protocol named .safetensors, an insightface folder whose det_10g.onnx is a protocol-0 pickle, other formats by
    their bytes, and a tiny UNet (so that lipsync reaches the VAE)."""
    import pickle

    from scripts.model_files import write_tiny_unet

    folder = root / "misnamed"
    (folder / "insightface").mkdir(parents=True)
    state = {"conv.weight": torch.zeros(2, 2)}
    torch.save(state, folder / "zip.safetensors")
    torch.save(state, folder / "legacy.safetensors", _use_new_zipfile_serialization=False)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        (folder / f"pickle{protocol}.safetensors").write_bytes(pickle.dumps({"w": [0.5, 1.5]}, protocol=protocol))
    (folder / "insightface" / "det_10g.onnx").write_bytes(pickle.dumps({"graph": [1.0]}, protocol=0))
    (folder / "insightface" / "2d106det.onnx").write_bytes(MINIMAL_ONNX)
    (folder / "tiny.onnx").write_bytes(MINIMAL_ONNX)
    (folder / "cut.onnx").write_bytes(MINIMAL_ONNX[:-1])
    (folder / "zip.onnx").write_bytes((folder / "zip.safetensors").read_bytes())
    (folder / "model.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(16))
    (folder / "text.pt").write_bytes(b"(not a pickle, only text)\n")
    from safetensors.torch import save_file

    save_file(state, str(folder / "real.safetensors"))
    config = json.loads(shared_path("reference/latentsync/unet_tiny_config.json").read_text())["unet_config"]
    write_tiny_unet(Path(MISNAMED_UNET.format(r=root)), config, resolution=64)
    return folder


MISNAMED_COMMANDS = {  # loader: a command line that reaches it before any heavy compute ({f}: the misnamed file)
    "whisper": "features {r}/voice.wav --whisper {f} --out {r}/out/misnamed.safetensors",
    "unet": "lipsync --video {r}/clip.mp4 --audio {r}/voice.wav --out {r}/out/misnamed.mp4 --unet {f} "
            "--whisper {r}/tiny.pt --vae {r}/nowhere_vae.safetensors",
    # lipsync loads whisper, then the UNet, then the VAE: the tiny UNet lets the VAE's turn come.
    "vae": "lipsync --video {r}/clip.mp4 --audio {r}/voice.wav --out {r}/out/misnamed.mp4 --unet " + MISNAMED_UNET
           + " --whisper {r}/tiny.pt --vae {f}",
    "syncnet": "score {r}/talk.mp4 --syncnet {f}",
    "s3fd": "score {r}/talk.mp4 --syncnet {r}/syncnet_v2.model --s3fd {f}",  # S3FD is loaded first
    "upscaler": "upscale {r}/odd_33x47.png --out {r}/out/misnamed.png --model {f}",
}
MISNAMED_CLI = [
    *[pytest.param(argv.replace("{f}", "{r}/misnamed/" + name), (name, *said), id=f"{loader}: {name}")
      for loader, argv in MISNAMED_COMMANDS.items() for name, said in MISNAMED_AS.items()],
    pytest.param("faces {r}/one_frame.mp4 --detector insightface --insightface-dir {r}/misnamed/insightface",
                 ("det_10g.onnx is a Python pickle, not an ONNX model", "nothing was loaded"),
                 id="insightface: a pickle named det_10g.onnx"),
]


@pytest.mark.parametrize("argv, names", MISNAMED_CLI)
def test_cli_names_a_model_file_for_what_it_is(root, misnamed, capsys, argv, names):
    """A PyTorch checkpoint or a pickle named .safetensors (which torch.load itself would read as safetensors:
    "header too large"), and a pickle named .onnx, given to every loader the CLI reaches: one line that names
    the file, what it really is and what to rename it to; every input file keeps its bytes."""
    args = [Path(a) for a in argv.format(r=root).split()]
    inputs = digests(*(a for a in args if a.is_file()), *(f for a in args if a.is_dir() for f in a.iterdir()))
    assert any(path.parent.name in ("misnamed", "insightface") for path in inputs)
    code, out, err = run_main(capsys, list(map(str, args)))
    check_answer(code, out, err, error(*names))
    assert digests(*inputs) == inputs


def test_the_face_restorer_names_a_model_file_for_what_it_is(misnamed):
    """Restore Mouths' loader has no CLI flag: the library call, for both misnamed files."""
    from latentsync.upscale.restore import FaceRestorerError, load_face_restorer

    for name, said in MISNAMED_AS.items():
        path = misnamed / name
        before = digests(path)
        with pytest.raises(FaceRestorerError) as caught:
            load_face_restorer(path)
        message = str(caught.value)
        assert "\n" not in message and message.startswith(f"{path} ") and all(s in message for s in said), message
        assert digests(path) == before


def test_file_format_tells_every_model_format_by_its_bytes(misnamed):
    """What a file is comes from its bytes, never its name: pickles of protocols 0 and 1 (no 0x80 header) too,
    ONNX by its protobuf structure, GGUF by its magic."""
    import importlib.util

    from latentsync.checkpoint import file_format, is_onnx

    expected = {"zip.safetensors": "torch-zip", "zip.onnx": "torch-zip", "legacy.safetensors": "torch-legacy",
                "real.safetensors": "safetensors", "tiny.onnx": "onnx", "insightface/2d106det.onnx": "onnx",
                "insightface/det_10g.onnx": "pickle", "cut.onnx": "unknown", "model.gguf": "gguf",
                "text.pt": "unknown", **{f"pickle{p}.safetensors": "pickle" for p in range(6)}}
    assert {name: file_format(misnamed / name) for name in expected} == expected
    spec = importlib.util.find_spec("onnxruntime")  # real models, where onnxruntime ships its examples
    shipped = list((Path(spec.origin).parent / "datasets").glob("*.onnx")) if spec and spec.origin else []
    assert all(is_onnx(path) and file_format(path) == "onnx" for path in shipped), shipped
    for path in shipped[:2]:
        cut = misnamed / f"cut_{path.name}"
        cut.write_bytes(path.read_bytes()[:-3])
        assert not is_onnx(cut), cut


@pytest.mark.parametrize("name, said", [
    ("pickle0.safetensors", "is a Python pickle named .safetensors: rename it to .pkl"),
    ("pickle2.safetensors", "is a Python pickle named .safetensors: rename it to .pkl"),
    ("pickle5.safetensors", "is a Python pickle named .safetensors: rename it to .pkl"),
    ("zip.onnx", "is a PyTorch zip checkpoint named .onnx: rename it to .pt"),
    ("model.gguf", "is a GGUF model, not a safetensors or PyTorch checkpoint"),
    ("tiny.onnx", "is an ONNX model, not a safetensors or PyTorch checkpoint"),
])
def test_every_checkpoint_message_says_what_the_file_is(misnamed, name, said):
    from latentsync.checkpoint import CheckpointError, read_checkpoint

    path = misnamed / name
    before = digests(path)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path, "a test model")
    message = str(caught.value)
    assert message == f"{path} {said}; nothing was loaded; expected a test model", message
    assert digests(path) == before


@pytest.mark.parametrize("name, said", [
    ("insightface/det_10g.onnx", "is a Python pickle, not an ONNX model"),
    ("zip.onnx", "is a PyTorch zip checkpoint, not an ONNX model"),
    ("legacy.safetensors", "is a Python pickle (PyTorch legacy checkpoint), not an ONNX model"),
    ("cut.onnx", "is not an ONNX model: its bytes (starting b'\\x08\\x08:\\x00B\\x02\\x10') lack ONNX's structure"),
])
def test_onnx_files_are_checked_before_onnxruntime_sees_them(misnamed, name, said):
    from latentsync.checkpoint import CheckpointError, check_onnx

    assert check_onnx(misnamed / "tiny.onnx") == misnamed / "tiny.onnx"
    with pytest.raises(CheckpointError) as caught:
        check_onnx(misnamed / name, "get it there")
    message = str(caught.value)
    assert message.startswith(f"{misnamed / name} {said}") and message.endswith("; nothing was loaded. get it there")


def restore_mouths(model_name: str) -> dict:
    inputs = {"model_name": model_name, "strength": 0.7, "feather": 0.03, "size": 0, "chunk": 4,
              "precision": "auto"}
    prompt = faces()
    prompt["3"] = {"class_type": "LatentSyncRestoreMouths",
                   "inputs": {"images": ["2", 1], "faces": ["2", 0], **inputs}}
    return prompt


MISNAMED_MODELS = {  # ComfyUI model folder: (file in it, copied from misnamed/)
    "latentsync": ("bad_misnamed_unet.safetensors", "zip.safetensors"),
    "upscale_models": ("bad_misnamed_up.safetensors", "legacy.safetensors"),
    "facerestore_models": ("bad_misnamed_restorer.safetensors", "zip.safetensors"),
}
MISNAMED_COMFY = [
    ("unet loader: PyTorch zip named .safetensors", unet("bad_misnamed_unet.safetensors"),
     fails("LatentSyncUNetLoader", "bad_misnamed_unet.safetensors", *MISNAMED_AS["zip.safetensors"])),
    ("upscale: legacy pickle named .safetensors", upscale(method="model", model_name="bad_misnamed_up.safetensors"),
     fails("LatentSyncUpscale", "bad_misnamed_up.safetensors", *MISNAMED_AS["legacy.safetensors"])),
    ("restore mouths: PyTorch zip named .safetensors", restore_mouths("bad_misnamed_restorer.safetensors"),
     fails("LatentSyncRestoreMouths", "bad_misnamed_restorer.safetensors", *MISNAMED_AS["zip.safetensors"])),
]


@pytest.fixture(scope="module")
def misnamed_models(comfy_inputs, misnamed) -> list[Path]:
    """The misnamed files in ComfyUI's model folders."""
    copies = []
    for folder, (name, source) in MISNAMED_MODELS.items():
        (comfy_inputs.dir("models") / folder).mkdir(parents=True, exist_ok=True)
        copies.append(Path(shutil.copy(misnamed / source, comfy_inputs.dir("models") / folder / name)))
    return copies


@pytest.mark.comfyui
@pytest.mark.parametrize("prompt, expect", [pytest.param(p, e, id=name) for name, p, e in MISNAMED_COMFY])
def test_comfyui_names_a_model_file_for_what_it_is(comfy_inputs, misnamed_models, prompt, expect):
    """The nodes that load model files from their folders: an execution error of one line naming the file, what
    it is and what to rename it to; the files keep their bytes."""
    before = digests(*misnamed_models)
    status, reply = comfy_inputs.queue(prompt)
    assert status == 200, reply
    history = comfy_inputs.wait(reply["prompt_id"])
    assert history["status"]["status_str"] == "error", history["status"]
    (failure,) = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert failure["node_type"] == expect.node_type, failure
    message = failure["exception_message"]
    assert one_line(message) and all(name in message for name in expect.names), message
    assert digests(*misnamed_models) == before


# --- issue 29: quiet start and minor points
# A normal run says only what the pack has to say: no third-party warnings on stderr (--debug shows them), progress
# to a pipe as whole lines; and the minor points: odd sizes, the retimed count, --vad-threshold, what a partial
# folder holds, the experiment's model files.


def stderr_lines(err: str) -> list[str]:
    assert "\r" not in err, repr(err[:300])  # to a pipe: whole lines, never carriage-return runs
    return err.splitlines()


def latentsync(*argv: str) -> subprocess.CompletedProcess:
    """`python -m latentsync ARGV` in a fresh process (third-party imports happen anew), stderr a pipe; torch on
    one thread, as the in-process tests run it."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "latentsync", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def quiet_files(root) -> dict[str, Path]:
    """talk.mp4's 25 frames (a face in each) cut to 329x339 in a lossless mkv (odd sizes), and the same face
    with a variable frame rate: 12 frames 1/25 s apart, then 10 frames 2/25 s apart."""
    import av

    from media import read_frames as decode_raw

    talk, _ = decode_raw(root / "talk.mp4", 25)
    odd = write_odd_video(root / "talk_329x339.mkv", np.ascontiguousarray(talk[:, :339, :329]))
    variable = root / "talk_vfr.mp4"
    with av.open(str(variable), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = talk.shape[2], talk.shape[1] // 2 * 2, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 50)
        pts = 0
        for image, gap in zip(talk, [2] * 12 + [4] * 10):
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[: stream.height]), format="rgb24")
            picture.pts, picture.time_base = pts, stream.codec_context.time_base
            container.mux(stream.encode(picture))
            pts += gap
        container.mux(stream.encode(None))
    return {"odd": odd, "variable": variable}


@pytest.fixture(scope="module")
def plain_run(root, quiet_files, tiny_models) -> tuple[subprocess.CompletedProcess, dict, Path]:
    """One `lipsync` as a user starts it (int8, so torchao loads; no --quiet, stderr a pipe) on the odd-size clip
    with talk.mp4's second of voice: the run, and the inputs' digests before it."""
    inputs = digests(quiet_files["odd"], root / "talk.mp4", *tiny_models.values())
    out = root / "out" / "quiet_start.mp4"
    run = latentsync("lipsync", "--video", str(quiet_files["odd"]), "--audio", str(root / "talk.mp4"), "--out",
                     str(out), "--unet", str(tiny_models["unet"]), "--whisper", str(tiny_models["whisper"]), "--vae",
                     str(tiny_models["vae"]), "--quantization", "int8", "--steps", "1", "--window", "16")
    assert run.returncode == 0, run.stderr[-3000:]
    return run, inputs, out


def test_lipsync_starts_without_third_party_warnings(plain_run):
    """torchao's registrations with torch's pytree and diffusers' note on torchao's types (logged) and any
    `warnings.warn` of the imports stay off stderr: every line is the pack's own, `lipsync:` or `warning:`."""
    run, inputs, _ = plain_run
    lines = stderr_lines(run.stderr)
    assert lines and all(line.startswith(("lipsync: ", "warning: ")) for line in lines), run.stderr
    assert "Warning" not in run.stderr and "warn(" not in run.stderr
    assert digests(*inputs) == inputs


def test_lipsync_progress_to_a_pipe_is_one_line_a_window(plain_run):
    """25 frames (one line for the first pass's 25), 25 output frames in two windows of one step: each finished
    window a line of its own with the time left, in order, after the faces."""
    run, inputs, _ = plain_run
    lines = stderr_lines(run.stderr)
    windows = [line for line in lines if line.startswith("lipsync: window ")]
    assert [line.split(",")[0] for line in windows] == ["lipsync: window 1/2 done", "lipsync: window 2/2 done"]
    assert all(line.endswith(" left") for line in windows), windows
    assert lines.index("lipsync: faces in 25 frames") < lines.index(windows[0])
    assert digests(*inputs) == inputs


def test_odd_frame_sizes_are_said_to_lose_a_row_and_a_column(plain_run):
    """329x339 frames: H.264's yuv420p needs even sizes, so the output is 328x338 and the run says so, in the JSON
    and as a `warning:` line."""
    run, inputs, out = plain_run
    result = json.loads(run.stdout)
    said = "329x339 frames are written as 328x338: H.264 needs even sizes"
    assert said in result["warnings"] and f"warning: {said}" in run.stderr.splitlines()
    assert (result["width"], result["height"]) == (328, 338) and result["generated_frames"] > 0
    from latentsync.media.video import read_frames

    frames, _ = read_frames(out)
    assert frames.shape[1:] == (338, 328, 3)
    assert digests(*inputs) == inputs


def test_debug_shows_what_the_libraries_said_as_they_loaded(root, tiny_models):
    """--debug: the same notes, as `debug: latentsync.third_party: ...` lines (the faceless noise clip: no frame
    is generated, the models load all the same)."""
    inputs = digests(root / "noise.mp4", root / "voice.wav", *tiny_models.values())
    run = latentsync("lipsync", "--video", str(root / "noise.mp4"), "--audio", str(root / "voice.wav"), "--out",
                     str(root / "out" / "debug.mp4"), "--unet", str(tiny_models["unet"]), "--whisper",
                     str(tiny_models["whisper"]), "--vae", str(tiny_models["vae"]), "--quantization", "int8",
                     "--quiet", "--debug")
    assert run.returncode == 0, run.stderr[-3000:]
    lines = stderr_lines(run.stderr)
    assert all(line.startswith(("debug: ", "warning: ")) for line in lines), run.stderr
    noted = [line for line in lines if line.startswith("debug: latentsync.third_party: ")]
    assert any("torch.utils._pytree" in line or "torchao" in line for line in noted), run.stderr
    assert digests(*inputs) == inputs


def test_hushed_keeps_warnings_and_library_logs_for_debug(caplog, capfd):
    """The mechanism itself: inside `hushed`, a `warnings.warn` and a record on a listed logger reach neither
    stderr nor the caller's warnings; both are said again at DEBUG on `latentsync.third_party`."""
    import logging
    import warnings

    from latentsync.core.process_state import hushed

    noisy = logging.getLogger("latentsync_test.noisy")
    with caplog.at_level(logging.DEBUG, logger="latentsync.third_party"), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with hushed(["latentsync_test.noisy"]):
            warnings.warn("scripting is deprecated", FutureWarning)
            noisy.warning("an enum registered twice")
    assert seen == [] and capfd.readouterr().err == ""
    said = [r.getMessage() for r in caplog.records if r.name == "latentsync.third_party"]
    assert any(m.startswith("FutureWarning: scripting is deprecated") for m in said), said
    assert "latentsync_test.noisy: an enum registered twice" in said
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "latentsync.third_party")
    assert not noisy.filters  # the filter goes with the block


def test_the_experiment_loads_the_face_restorers_without_torch_warnings(root, tiny_models):
    """`experiment` with a mouth-restored configuration: loading a face restorer builds spandrel-extra-arches'
    registry, which scripts CodeFormer's parts with torch.jit.script (deprecated, torch says) as it imports; stderr
    has only the experiment's own lines. The file given is an upscaler, so the configuration fails right after
    that import (a row with its error, exit 1) instead of restoring and scoring for a minute."""
    configs = root / "quiet_configs.json"
    configs.write_text(json.dumps({
        "models": {"unet_1.5": str(tiny_models["unet"]), "whisper": str(tiny_models["whisper"]),
                   "vae": str(tiny_models["vae"]), "syncnet": str(root / "syncnet_v2.model"),
                   "face_restorer": str(root / "tiny_x2plus.pth")},
        "defaults": {"steps": 1}, "configs": [{"name": "mouth restored", "restore": "model"}]}))
    inputs = digests(root / "talk.mp4", configs, root / "tiny_x2plus.pth", *tiny_models.values())
    run = latentsync("experiment", "--video", str(root / "talk.mp4"), "--audio", str(root / "talk.mp4"),
                     "--configs", str(configs), "--out", str(root / "out" / "quiet_experiment"))
    assert run.returncode == 1, run.stderr[-3000:]
    (row,) = json.loads(run.stdout)["results"]
    assert "tiny_x2plus.pth is an upscaler" in row["error"]  # failed after the restorers' registry was built
    lines = stderr_lines(run.stderr)
    assert lines and all(line.startswith("[1/1] mouth restored") for line in lines), run.stderr
    assert "jit" not in run.stderr and "Warning" not in run.stderr
    assert digests(*inputs) == inputs


def test_the_experiment_checks_every_model_file_before_the_first_configuration(root, tiny_models, capsys):
    """A face restorer missing for the second configuration: refused before the first one runs, in one line naming
    the file and the configuration; no mp4 and no report are written."""
    missing = root / "nowhere" / "GFPGANv1.4.pth"
    configs = root / "restorer_missing.json"
    configs.write_text(json.dumps({
        "models": {"unet_1.5": str(tiny_models["unet"]), "whisper": str(tiny_models["whisper"]),
                   "vae": str(tiny_models["vae"]), "syncnet": str(root / "syncnet_v2.model"),
                   "face_restorer": str(missing)},
        "configs": [{"name": "baseline"}, {"name": "mouth restored", "restore": "model"}]}))
    inputs = digests(root / "talk.mp4", configs, *tiny_models.values())
    out = root / "out" / "restorer_missing"
    code, stdout, err = run_main(capsys, ["experiment", "--video", str(root / "talk.mp4"), "--audio",
                                          str(root / "talk.mp4"), "--configs", str(configs), "--out", str(out)])
    check_answer(code, stdout, err, error(str(missing), "configuration 'mouth restored' needs the face restorer",
                                          "models.face_restorer"))
    assert "[1/2]" not in err and not list(out.glob("*.mp4")) and not (out / "README.md").exists()
    assert digests(*inputs) == inputs


def test_the_retiming_warning_gives_the_output_frame_count(root, quiet_files, tiny_models, capsys, one_thread):
    """A variable frame rate: 22 frames over 1.16 s, placed on a constant clock at their average rate (about 19
    fps, 24 ticks), lip-synced to one second of voice (`audio_shorter` stop: fewer frames): the warning gives the
    count the output has, not the retimed clock's."""
    import re

    import av

    from latentsync.media.frame_reader import VideoFrames

    video = quiet_files["variable"]
    inputs = digests(video, root / "talk.mp4", *tiny_models.values())
    out = root / "out" / "retimed.mp4"
    code, stdout, err = run_main(capsys, [
        "lipsync", "--video", str(video), "--audio", str(root / "talk.mp4"), "--out", str(out), "--unet",
        str(tiny_models["unet"]), "--whisper", str(tiny_models["whisper"]), "--vae", str(tiny_models["vae"]),
        "--steps", "1", "--quiet"])
    assert code == 0, err
    result = json.loads(stdout)
    (said,) = [w for w in result["warnings"] if "the frame rate varies" in w]
    with av.open(str(out)) as container:
        written = sum(1 for _ in container.decode(video=0))
    reader = VideoFrames(video)
    for _ in reader.scan():
        pass
    clock = len(reader.constant_rate_index(result["fps"]))
    assert written == result["frames"] < clock and result["input_frames"] == 22, (written, result, clock)
    assert said.endswith(f"the output has {written} frames") and "its 22 frames" in said
    assert not re.search(rf"\b{clock}\b", said), said
    assert digests(*inputs) == inputs


def test_the_demo_offline_says_so_after_one_look_up(tmp_path):
    """scripts/demo.py's downloads where the hub does not answer (its address a closed local port): one look-up,
    then "offline: skipping downloads", in seconds: no retries, no exception text, nothing on stderr."""
    import os
    import time

    code = ("import pathlib, sys; sys.path.insert(0, 'scripts'); import demo; "
            f"print(demo.fetch_weights(pathlib.Path({str(tmp_path)!r}), download=True))")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"} | {"HF_ENDPOINT": "http://127.0.0.1:9"}
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    said, missing = run.stdout.splitlines()
    assert said == "[demo] offline: skipping downloads" and "latentsync_unet.pt" in missing
    assert run.stderr == "" and time.monotonic() - started < 30
    assert not list(tmp_path.iterdir())  # nothing half-downloaded


@pytest.mark.parametrize("left, holds", [
    ({}, "holds only its settings (it stopped before its face track was done)"),
    ({"faces": True}, "holds its face track, but no finished segment yet"),
    ({"faces": True, "segments": 2}, "holds 2 finished segments"),
], ids=["killed before the faces", "killed in the windows' first", "killed later"])
def test_a_partial_folder_is_refused_for_what_it_holds(tmp_path, left, holds):
    """A run killed before any segment finished leaves OUT.partial/ with the face track at most: the refusal to
    start over (no --resume) says what it holds, not "the finished part"; the folder keeps every byte."""
    from latentsync.media.partial import PartialOutput, ResumeRefused

    out, job = tmp_path / "out.mp4", {"format": 1, "video": {"size": 10}}
    partial = PartialOutput(out, job, resume=False)
    if left.get("faces"):
        partial.save_arrays("faces", boxes=np.zeros((3, 4), np.float32))
    for index in range(left.get("segments", 0)):
        partial.segment_path(f"w{index:05d}").write_bytes(b"a segment")
    partial.segment_path("w99999").with_name("w99999.mp4.tmp").write_bytes(b"half a segment")  # not finished
    before = digests(*(p for p in partial.folder.iterdir()))
    with pytest.raises(ResumeRefused) as refused:
        PartialOutput(out, job, resume=False)
    message = str(refused.value)
    assert holds in message and "finished part" not in message and "--resume" in message
    assert "\n" not in message and digests(*(p for p in partial.folder.iterdir())) == before
