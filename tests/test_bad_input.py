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
                        HUGE_INT: Ok("no speech stretch is that long: zero segments, as asked",
                                     lambda j: j["speech"] == [])},
    "--min-silence-ms": {"0": SPEECH, "-1": error("min_silence_ms"), "nan": error("--min-silence-ms"),
                         HUGE_INT: Ok("no pause splits the speech: one segment", lambda j: len(j["speech"]) == 1)},
    "--padding-ms": {"0": SPEECH, "-1": error("padding_ms"), "nan": error("--padding-ms"),
                     HUGE_INT: Ok("segments are clipped to the audio",
                                  lambda j: j["speech"] == [[0.0, j["duration"]]])},
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
    "--fps": {"0": error("--fps"), "-1": error("--fps"), "nan": error("--fps"), HUGE_FLOAT: error("frames", "fps")},
    "--frames": {"0": error("frames"), "-1": error("frames"), "nan": error("--frames"), HUGE_INT: error("frames")},
})
FEATURES_FLAGS += expand(FEATURES + " --speech-policy silence", {
    "--vad-threshold": {"nan": error("threshold")},
    "--crossfade-frames": {"0": Ok("no fade", frames_for(25)), "-1": error("crossfade_frames"),
                           HUGE_INT: Ok("silence fades in over the whole clip", frames_for(25))},
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
                "nan": error("--index"), HUGE_INT: Ok("no 10^12-th face: the frame is flagged", NO_FACE.check)},
})
FACES_FLAGS += expand("faces {r}/one_frame.mp4", {
    "--threshold": {"0": Ok("dlib's default", lambda j: j["frames_with_face"] == 1),
                    "-1": Ok("dlib's HOG threshold may be negative (more detections)",
                             lambda j: j["frames_with_face"] == 1),
                    "nan": error("threshold"), HUGE_FLOAT: Ok("nothing scores that high: flagged", NO_FACE.check)},
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
    "--min-track": {"0": SCORED, "-1": error("min_track"), "nan": error("--min-track"),
                    HUGE_INT: error("track")},
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
               f"{10**6}x{10**6}": error("output size", "GiB")},
})
UPSCALE_FLAGS += expand(UPSCALE + " --model {r}/tiny_x2plus.pth", {
    "--tile": {"0": error("tile"), "-1": error("tile"), "nan": error("--tile"),
               HUGE_INT: Ok("one tile for the whole image", lambda j: j["output_size"] == [66, 94])},
    "--overlap": {"0": Ok("tiles without overlap", lambda j: j["output_size"] == [66, 94]),
                  "-1": error("overlap"), "nan": error("--overlap"),
                  HUGE_INT: Ok("overlap is capped by the tile", lambda j: j["output_size"] == [66, 94])},
    "--chunk": {"0": error("chunk"), "-1": error("chunk"), "nan": error("--chunk"),
                HUGE_INT: Ok("one chunk", lambda j: j["output_size"] == [66, 94])},
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
    case(LIPSYNC.replace("{r}/clip.mp4", "{r}/still.png") + " --fps 1e12", error("frames", "fps"),
         "still image at 10^12 fps"),
]
LIPSYNC_FLAGS = expand(LIPSYNC, {
    "--steps": {"0": error("steps"), "-1": error("steps"), "nan": error("--steps"), "1000": error("DDIM", "999"),
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
LIPSYNC_FLAGS += expand(LIPSYNC + " --vad silence", {"--vad-threshold": {"nan": error("threshold"),
                                                                         "0": error("threshold")}})

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
    ("score: min_track 0", score(min_track=0), refused("3", "min_track")),
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
