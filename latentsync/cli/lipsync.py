"""`python -m latentsync lipsync`: lip-sync a video (or a still image) to an audio file, written as an mp4.

The same library path as the nodes: audio -> (VAD) -> whisper features at the video's own frame rate; frames ->
faces; sampler; the output with the original soundtrack. Streamed (`run/stream.lipsync_video_file`): frames are
decoded when a window needs them and written as it finishes, so a long clip takes no more memory than a short
one; `--resume` continues a run that stopped. `--preset` (`sample/presets.py`) gives defaults that the flags
typed on the command line override, and the VRAM the run will need is said before it starts.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

from .faces import add_selection_arguments
from ..audio.vad import THRESHOLD
from .features import parse_fps
from ..audio.features import FPS
from ..face.blend import BLEND_MASK, FEATHER, GROW, Blend
from ..face.detect import DETECTOR, check_selection, make_detector
from ..face.seam import COLOUR_MATCH
from ..face.smooth import SMOOTHING
from ..media.outputs import check_output
from ..media.video import CRF
from ..prepared import PREPARED, REBUILD_PREPARED
from ..run.cluster import RayCluster
from ..run.job import STREAMED_BLEND_MASKS, FaceChoice, Job, MemoryOptions
from ..run.pipeline import DEVICE, ModelSet, UNetSpec, estimate_run_vram, resolve_device, resolve_dtype
from ..run.stream import Hooks, lipsync_video_file
from ..sample.progress import StepInfo, StepProgress, step_text
from ..sample.presets import PRESET, PRESETS, RUN_OPTION, RUN_OPTIONS, dtype_name, preset_unet_file, resolve
from ..sample.settings import SETTINGS, SamplerSettings, old_flags
from ..sample.vram import format_estimate
from ..unet.compile import COMPILE
from .options import add_option


class Typed(argparse.Action):
    """Stores a flag's value and notes that the user typed it (`typed_flags`): a preset's value gives way to it,
    not to a flag's default."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.typed_flags = {*getattr(namespace, "typed_flags", ()), self.dest}


class TypedSwitch(argparse.BooleanOptionalAction):
    """`--NAME` / `--no-NAME`, noted as typed like `Typed`."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        namespace.typed_flags = {*getattr(namespace, "typed_flags", ()), self.dest}


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per sampler setting, named, defaulted and explained by the library's table (earlier spellings,
    e.g. --vad for --vad-policy, still work)."""
    for setting in SETTINGS:
        add_option(parser, setting, *old_flags(setting.name), action=Typed)


def add_lipsync_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "lipsync", help="lip-sync a video or still image to an audio file and write an mp4; prints a JSON summary")
    parser.add_argument("--video", required=True, help="video file, or a still image (repeated for the audio)")
    parser.add_argument("--audio", required=True, help="the voice: an audio or video file; its original track "
                                                       "goes into the output unchanged")
    parser.add_argument("--out", required=True, help="output .mp4")
    parser.add_argument("--unet", required=True, help="latentsync_unet.pt (ByteDance/LatentSync-1.5 or -1.6)")
    parser.add_argument("--whisper", required=True, help="whisper tiny.pt (LatentSync's checkpoints/whisper)")
    parser.add_argument("--vae", required=True, help="vae-ft-mse-840000-ema-pruned.safetensors "
                                                     "(stabilityai/sd-vae-ft-mse-original)")
    parser.add_argument("--config", default="auto",
                        help="1.5 (256 px), 1.6 (512 px), a JSON config, or auto: a JSON beside the checkpoint, "
                             "else guessed from its path")
    add_option(parser, THRESHOLD, flag="--vad-threshold")
    add_settings_arguments(parser)
    add_option(parser, FPS, type=parse_fps, help="Frame rate for a still image (e.g. 25 or 30000/1001).")
    parser.add_argument("--seamless", action="store_true", help="overlap whisper's 30 s spans (long audio)")
    add_option(parser, DETECTOR)
    parser.add_argument("--insightface-dir", default=None, help="folder with det_10g.onnx and 2d106det.onnx")
    add_selection_arguments(parser)
    add_option(parser, SMOOTHING)
    add_option(parser, BLEND_MASK, choices=STREAMED_BLEND_MASKS,
               help="What is pasted back: reference: the whole crop; landmarks: lips, jaw, chin (a custom mask: "
                    "the Paste Faces Back node).")
    for option in (GROW, FEATHER):
        add_option(parser, option, help=option.help.replace("%", "%%"))  # argparse formats help with %
    add_option(parser, COLOUR_MATCH)
    bundles = "; ".join(f"{preset.name}: {preset.help.rstrip('.')}" for preset in PRESETS.values())
    add_option(parser, PRESET, default=None,  # none: the flags' defaults, as quality (and custom)
               help=f"A bundle of settings: {bundles}; custom: the flags. Flags typed beside it win.")
    for option in RUN_OPTION.values():  # dtype, quantization, vae_batch; --vae-tiling and --offload: switches
        add_option(parser, option, action=TypedSwitch if option.kind is bool else Typed)
    add_option(parser, DEVICE)
    add_option(parser, COMPILE, nargs="?", const="default", default=None,
               help=f"{COMPILE.help} A bare --compile is default.")
    add_option(parser, CRF)
    parser.add_argument("--resume", action="store_true",
                        help="continue a run that stopped (killed, out of memory, Ctrl-C, full disk): finished "
                             "windows wait in OUT.partial/ and are kept when the inputs and settings are the same")
    add_option(parser, PREPARED, metavar="DIR")
    add_option(parser, REBUILD_PREPARED)
    parser.add_argument("--ray", default=None, metavar="local|auto|ADDRESS",
                        help="run the windows on a Ray cluster (pip install ray): local starts one on this machine for "
                             "the run, auto joins the one `ray start` runs here, or the address of a cluster whose "
                             "nodes see the input and model files at the same paths")
    parser.add_argument("--workers", type=int, default=None,
                        help="with --ray: workers (default: one per GPU, else per CPU of the cluster)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(run=lipsync_command)
    return parser


def lipsync_command(args: argparse.Namespace) -> dict:
    """Run the `lipsync` command, streamed (memory does not grow with the clip); returns the JSON summary."""
    started = time.perf_counter()
    check_output(args.out, {"--video": args.video, "--audio": args.audio, "--unet": args.unet,
                            "--whisper": args.whisper, "--vae": args.vae, "--config": args.config})
    chosen = run_choices(args)
    settings = SamplerSettings.from_mapping(chosen)
    settings.validate()
    check_selection(args.select, args.index, args.position)
    device = resolve_device(args.device)
    dtype = resolve_dtype(dtype_name(chosen["dtype"], device), device)
    typed = "quantization" in getattr(args, "typed_flags", ())  # a quantization the user chose wins over a GGUF
    path, quantization = preset_unet_file(Path(args.unet), None if typed else args.preset, chosen["quantization"])
    unet = UNetSpec(path, args.config, quantization)
    memory = MemoryOptions(chosen["vae_batch"], chosen["vae_tiling"], chosen["offload"])
    options = {"models_dir": args.insightface_dir} if args.detector == "insightface" else {}
    detector = make_detector(args.detector, **options)

    tty = sys.stderr.isatty()

    def say(text: str, end: str = "") -> None:
        """Progress on stderr: a terminal's line updated in place (`end` "" leaves it open); a file or pipe gets
        one whole line each time, never carriage-return runs."""
        if args.quiet:
            return
        if tty:
            print(f"\rlipsync: {text}\x1b[K", end=end, file=sys.stderr, flush=True)  # ESC[K: clear the rest
        else:
            print(f"lipsync: {text}", file=sys.stderr, flush=True)

    class Progress(StepProgress):
        """A terminal's line follows every step; a log file gets one line per finished window, with the time
        left (`sample/progress.step_text`)."""

        def step(self, info: StepInfo) -> None:
            if tty:
                say(step_text(info), "\n" if info.done == info.total else "")
            elif info.step == info.steps:
                say(step_text(info).replace(f", step {info.step}/{info.steps}", " done"))

    progress = Progress()

    def face_progress(frames: int) -> None:
        if frames % 25 == 0:
            say(f"faces in {frames} frames")

    def prepare_progress(done: int, total: int) -> None:
        if done == total or done % 128 < 16:
            say(f"preparing {args.prepared}: {done}/{total} faces encoded", "\n")

    estimate = estimate_run_vram(unet, settings, dtype, **asdict(memory))

    def ready() -> None:  # inputs checked and models loaded (an error before it stays one line); the run next
        say(f"{args.preset or 'no'} preset; {format_estimate(estimate)}", "\n")

    cluster = None
    if args.ray:
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {args.workers}")
        cluster = RayCluster(args.ray, args.workers)
    face = FaceChoice(detector, args.select, args.index, args.position, args.smoothing)
    try:
        job = Job(args.video, args.audio, args.out, unet, args.whisper, args.vae, face, settings, device, dtype, memory,
                  compile_mode=None if args.compile == "off" else args.compile, crf=args.crf,
                  vad_threshold=args.vad_threshold, seamless=args.seamless,
                  still_fps=args.fps, resume=args.resume,
                  blend=Blend(args.blend_mask, args.mask_grow, args.mask_feather, colour_match=args.colour_match),
                  prepared=args.prepared, rebuild_prepared=args.rebuild_prepared)
        hooks = Hooks(progress=progress, face_progress=face_progress, on_ready=ready, on_prepare=prepare_progress)
        summary = lipsync_video_file(job, ModelSet(device, dtype), hooks=hooks, cluster=cluster)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"what was finished (the face track once found, then every finished window) is "
                                f"kept in {args.out}.partial: run again with --resume to continue") from None
    return {"out": str(args.out), **summary, "fps": round(summary["fps"], 6), "device": str(device),
            "dtype": str(dtype).removeprefix("torch."), "settings": vars(settings), "preset": args.preset,
            "quantization": unet.quantization, **asdict(memory), "vram_estimate": estimate,
            "seconds": round(time.perf_counter() - started, 3)}


def run_choices(args: argparse.Namespace) -> dict:
    """The sampler settings and run options of `args`: without a preset, the flags as parsed (today's behaviour);
    with one, its values under the flags the user typed (`sample/presets.resolve`)."""
    names = [setting.name for setting in SETTINGS] + list(RUN_OPTIONS)
    if args.preset in (None, "custom"):
        return {name: getattr(args, name) for name in names}
    return resolve(args.preset, {name: getattr(args, name) for name in getattr(args, "typed_flags", ())})
