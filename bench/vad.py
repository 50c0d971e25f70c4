"""VAD benchmark: real-time factor of the VAD node's library path on 60 s of speech (silero JIT and ONNX,
and pyannote when its extra is installed), idle and under load, and the time to import the pack inside
ComfyUI's Python path (goal: under 1 s, no heavy imports).

"Under load" repeats the measurement while a busy-loop process (started and stopped here) occupies one core,
as another job would (issue 20: 100x slower when silero's tiny calls ran on two threads). Goal for silero:
RTF under load at most 2x the idle one and at most 0.02 (pyannote is shown, not judged). The baseline row runs silero JIT on
the caller's thread count, as the VAD did before the fix.

    python -m bench.vad [--seconds 60] [--repeats 3] [--audio FILE] [--pyannote-model PYTORCH_MODEL.BIN]

pyannote runs a random-weight segmentation-3.0-sized model unless --pyannote-model names a real one (same
compute either way).

Without --audio, the 60 s signal is espeak-ng speech with pauses (or, without espeak-ng, a shared voice
track looped). Ratios are measured in this run, on this machine.
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from bench.busy import one_core_busy
from latentsync.audio import vad
from latentsync.media.audio import load_audio, to_mono_16k
from latentsync.audio.vad import BACKENDS, detect_speech

REPO = Path(__file__).resolve().parents[1]

TEXT = ("Lip sync should only move the mouth when someone speaks. "
        "Silence costs diffusion time and makes the face mumble. ")


def speech_signal(seconds: float, audio: str | None) -> torch.Tensor:
    if audio:
        source = to_mono_16k(*load_audio(audio))
    elif shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "voice.wav"
            subprocess.run(["espeak-ng", "-w", str(wav), TEXT], check=True)
            voice = to_mono_16k(*load_audio(wav))
        source = torch.cat([voice, torch.zeros(16000)])  # a one-second pause after each sentence
    else:
        source = to_mono_16k(*load_audio(REPO.parent / "shared/media/latentsync_demo1_audio.wav"))
    repeats = int(seconds * 16000 // source.numel()) + 1
    return source.repeat(repeats)[: int(seconds * 16000)]


@contextlib.contextmanager
def threads_as_before_issue_20():
    """The VAD loop on the caller's thread count (the baseline): its thread limit replaced by a no-op."""
    limit = vad.single_threaded
    vad.single_threaded = contextlib.nullcontext
    try:
        yield
    finally:
        vad.single_threaded = limit


def best_time(audio: torch.Tensor, repeats: int, **kwargs) -> tuple[float, int]:
    """Fastest of `repeats` runs of detect_speech, and the number of segments found."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        segments = detect_speech(audio, 16000, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times), len(segments.speech)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--audio", help="use this file instead of the built-in speech")
    parser.add_argument("--comfyui", type=Path, help="ComfyUI folder for the import timing (default: the cache)")
    parser.add_argument("--pyannote-model", type=Path, help="a pyannote segmentation checkpoint")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    model_path = {"pyannote": args.pyannote_model}
    try:
        import pyannote.audio  # noqa: F401

        if model_path["pyannote"] is None:
            from scripts.model_files import write_pyannote_segmentation

            model_path["pyannote"] = write_pyannote_segmentation(Path(tmp.name) / "pytorch_model.bin")
    except ImportError:
        print("pyannote.audio is not installed: its backend is skipped")

    audio = speech_signal(args.seconds, args.audio)
    seconds = audio.numel() / 16000
    print(f"audio: {seconds:.1f} s at 16 kHz; torch threads: {torch.get_num_threads()}")
    runs = {b: {"backend": b, "model_path": model_path.get(b)} for b in BACKENDS
            if b != "pyannote" or model_path["pyannote"] is not None}
    for kwargs in runs.values():
        detect_speech(audio[:16000], 16000, **kwargs)  # load the model outside the timing
    # The baseline: silero JIT on the caller's threads. (silero's onnxruntime session has always had one
    # thread; pyannote's batched chunks keep the caller's threads, as whisper and the UNet do.)
    baseline = f"jit, {torch.get_num_threads()} threads as before issue 20"
    idle, loaded, segments = {}, {}, {}
    for timings, load in ((idle, contextlib.nullcontext), (loaded, one_core_busy)):
        with load():
            for name, kwargs in runs.items():
                timings[name], segments[name] = best_time(audio, args.repeats, **kwargs)
            with threads_as_before_issue_20():
                timings[baseline], segments[baseline] = best_time(audio, args.repeats, **runs["jit"])
    print(f"{'backend':38} {'idle s':>7} {'idle RTF':>9} {'load s':>7} {'load RTF':>9} {'load/idle':>10} "
          f"{'segments':>9}  goal: load <= 2x idle and RTF <= 0.02")
    for name in idle:
        ratio, rtf = loaded[name] / idle[name], loaded[name] / seconds
        goal = "" if name in (baseline, "pyannote") else "met" if ratio <= 2 and rtf <= 0.02 else "MISSED"
        print(f"{name:38} {idle[name]:7.3f} {idle[name] / seconds:9.4f} {loaded[name]:7.3f} {rtf:9.4f} "
              f"{ratio:10.2f} {segments[name]:9d}  {goal}")
    print("time ratios vs silero jit, idle: " + ", ".join(f"{b} {t / idle['jit']:.2f}" for b, t in idle.items()))
    print("time ratios vs silero jit, under load: "
          + ", ".join(f"{b} {t / loaded['jit']:.2f}" for b, t in loaded.items()))

    from scripts import comfyui

    folder = args.comfyui or Path.home() / ".cache/comfyui-latentsync" / f"ComfyUI-{comfyui.COMFYUI_VERSION}"
    if (folder / "main.py").exists():
        result = comfyui.measure_pack_import(folder, REPO)
        heavy = sorted({m.split(".")[0] for m in result["new_modules"]} - {"pack"})
        print(f"pack import: {result['import_seconds'] * 1000:.1f} ms; with node list and model folders: "
              f"{result['load_seconds'] * 1000:.1f} ms (goal < 1000 ms, ratio {result['load_seconds']:.4f}); "
              f"modules added besides the pack's own: {heavy or 'none'}")
    else:
        print(f"pack import: skipped, no ComfyUI at {folder} (run scripts/setup.sh)")


if __name__ == "__main__":
    main()
