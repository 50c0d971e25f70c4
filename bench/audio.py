"""Whisper feature extraction speed on CPU: real-time factor for 60 s of audio (goal <= 0.05), and the seam.

Random whisper-tiny weights do the same arithmetic as the released ones. Prints the reference spans
and the seamless (overlapping) spans, each as RTF, as a ratio of the goal and as a ratio of the
reference measured in this run. Then the seam: on the shared voices looped to the same length, the feature
step at each 30 s span boundary relative to the median step around it (`features.step_ratios`: ~1 is
ordinary), for both, beside the 99th percentile of that ratio over all rows (what speech itself does).

    python -m bench.audio [--seconds 60] [--repeats 3] [--threads N]
"""
from __future__ import annotations

import argparse
import time

import torch

from pathlib import Path

from latentsync.audio.features import extract_features, seam_discontinuity, span_seams, step_ratios
from latentsync.audio.whisper import TINY, WhisperEncoder

GOAL_RTF = 0.05


def best_time(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    encoder = WhisperEncoder(TINY).eval()
    t = torch.arange(int(args.seconds * 16000)) / 16000
    audio = 0.3 * torch.sin(2 * torch.pi * 220 * t) * torch.sin(2 * torch.pi * 3 * t) ** 2 + 0.02 * torch.randn(t.shape)
    extract_features(audio[:16000], 16000, encoder)  # warm-up: one window, first-call allocations

    print(f"whisper-tiny features, {args.seconds:g} s of audio, CPU, {torch.get_num_threads()} threads, "
          f"best of {args.repeats}")
    baseline = None
    for label, seamless in (("reference spans", False), ("seamless spans", True)):
        seconds = best_time(lambda: extract_features(audio, 16000, encoder, fps=25, seamless=seamless), args.repeats)
        rtf = seconds / args.seconds
        baseline = baseline or seconds
        print(f"{label:18s} {seconds:7.3f} s   RTF {rtf:.4f}   {rtf / GOAL_RTF:.2f}x the goal ({GOAL_RTF})   "
              f"{seconds / baseline:.2f}x reference")

    voices = [Path(__file__).resolve().parents[2] / "shared" / "media" / f"latentsync_demo{i}_audio.wav" for i in (1, 3)]
    if all(path.is_file() for path in voices):
        from latentsync.media.audio import load_audio, to_mono_16k

        speech = torch.cat([to_mono_16k(*load_audio(path)) for path in voices])
        speech = speech.repeat(int(args.seconds * 16000) // len(speech) + 1)[: int(args.seconds * 16000)]
        for label, seamless in (("reference spans", False), ("seamless spans", True)):
            rows = extract_features(speech, 16000, encoder, fps=25, seamless=seamless).features
            seams = [seam_discontinuity(rows, seam) for seam in span_seams(rows.shape[0])]
            typical = float(torch.quantile(step_ratios(rows)[1:], 0.99))
            print(f"{label:18s} step ratio at the 30 s seams: {', '.join(f'{v:.2f}' for v in seams)}   "
                  f"(99th percentile over all rows: {typical:.2f})")


if __name__ == "__main__":
    main()
