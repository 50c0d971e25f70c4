"""VAD benchmark: real-time factor of the VAD node's library path on 60 s of speech (silero JIT and ONNX,
and pyannote when its extra is installed), and the time to import the pack inside ComfyUI's Python path
(goal: under 1 s, no heavy imports).

    python bench/vad.py [--seconds 60] [--repeats 3] [--audio FILE] [--pyannote-model PYTORCH_MODEL.BIN]

pyannote runs a random-weight segmentation-3.0-sized model unless --pyannote-model names a real one (same
compute either way).

Without --audio, the 60 s signal is espeak-ng speech with pauses (or, without espeak-ng, a shared voice
track looped). Ratios are measured in this run, on this machine.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts"), str(REPO / "tests")]

from latentsync.audio import load_audio, to_mono_16k  # noqa: E402
from latentsync.vad import BACKENDS, detect_speech  # noqa: E402

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
            from model_files import write_pyannote_segmentation

            model_path["pyannote"] = write_pyannote_segmentation(Path(tmp.name) / "pytorch_model.bin")
    except ImportError:
        print("pyannote.audio is not installed: its backend is skipped")

    audio = speech_signal(args.seconds, args.audio)
    print(f"audio: {audio.numel() / 16000:.1f} s at 16 kHz; torch threads: {torch.get_num_threads()}")
    print(f"{'backend':8} {'best s':>8} {'RTF':>8} {'x real time':>12} {'segments':>9}")
    best = {}
    for backend in BACKENDS:
        if backend == "pyannote" and model_path["pyannote"] is None:
            continue
        kwargs = {"backend": backend, "model_path": model_path.get(backend)}
        detect_speech(audio[:16000], 16000, **kwargs)  # load the model outside the timing
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            segments = detect_speech(audio, 16000, **kwargs)
            times.append(time.perf_counter() - start)
        best[backend] = min(times)
        rtf = best[backend] / args.seconds
        print(f"{backend:8} {best[backend]:8.3f} {rtf:8.4f} {1 / rtf:12.0f} {len(segments.speech):9d}")
    print("time ratios vs silero jit: " + ", ".join(f"{b} {t / best['jit']:.2f}" for b, t in best.items()))

    import comfyui

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
