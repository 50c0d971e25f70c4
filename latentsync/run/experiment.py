"""The PoC experiment: one clip through configurations (VAD policy, 1.5 vs 1.6, upscale, mouth restoration,
quantization, scheduler, steps, guidance, DeepCache), each scored with SyncNet on one library path. Writes
`README.md` (LSE-C, LSE-D, offset, mouth sharpness and flicker with their ratios to the source, seconds, memory),
`results.csv`, `chart.png` and an mp4 per configuration, after each one; a failing configuration (int4 without CUDA,
out of memory) is a row with its error while the run goes on. Model files are checked first, values when read.

The configs file (JSON):
    {"models": {"unet_1.5": PATH, "unet_1.6": PATH, "whisper": PATH, "vae": PATH, "syncnet": PATH,
                "s3fd": PATH (optional), "upscaler": PATH (optional), "face_restorer": PATH (optional)},
     "defaults": {"version": "1.5", "dtype": "auto", "quantization": "none", "scheduler": "ddim", "steps": 20,
                  "guidance": 1.5, "seed": 1247, "deepcache_interval": 0, "vad_policy": "off", "upscale": "none",
                  "restore": "none" | "model" (the face restorer on the mouth, before any upscale),
                  "restore_strength": 0.7, "restore_temporal": 0, ...: every sampler setting by its name},
     "score": {"crops": "pack" | "s3fd", "min_track": 50, "jpeg": "auto" | true | false (auto: on with s3fd)},
     "configs": [{"name": "baseline 256"}, {"name": "VAD skip", "vad_policy": "skip"}, ...]}
Relative model paths are read from the `--models` folder (a ComfyUI models/ folder) or the file's folder.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from ..catalogue import CATALOGUE
from ..core.errors import error_line
from ..face.align import face_fit_side
from ..face.paste import paste_back
from ..media.outputs import check_output_folder
from ..media.video import write_video
from ..score.crops import pack_face_detector
from ..score.evaluate import (CROPS, MIN_TRACK_FRAMES, SCORE_OPTIONS, FaceCrops, TrackRules, score_sync,
                              wants_jpeg)
from ..score.flicker import compare_flicker
from ..score.sharpness import compare_sharpness
from ..upscale.frames import upscale_frames
from ..upscale.models import load_upscale_model
from ..upscale.options import TEMPORAL
from ..upscale.restore import MouthBlend, load_face_restorer, restore_mouths
from .pipeline import Clip, ModelFiles, ModelSet, UNetSpec, lipsync_files, read_clip, resolve_device, resolve_dtype
from ..core.options import Option, check_all
from ..core.precision import DTYPE
from ..sample.settings import SETTINGS, SamplerSettings, one_spelling
from ..unet.loading import QUANTIZATION

REPORT_FILES = ("README.md", "results.csv", "chart.png")  # rewritten after each configuration
TABLE_COLUMNS = ("config", "LSE-C", "LSE-D", "offset", "mouth sharpness", "vs source", "mouth flicker", "vs source",
                 "seconds", "peak memory (MB)", "generated frames")
CSV_COLUMNS = ("name", "lse_c", "lse_d", "offset", "crops", "sharpness", "sharpness_ratio", "flicker", "flicker_ratio",
               "seconds", "peak_mb", "frames", "generated", "video", "error")
# Every sampler setting (sample/settings.py), the run's dtype and quantization and what only the experiment varies.
RESTORE = (Option("restore", "none", "The face restorer on the mouth, before any upscale.", choices=("none", "model")),
           Option("restore_strength", 0.7, "How much of the restored mouth replaces the generated one.", 0.0, 1.0),
           Option("restore_temporal", TEMPORAL.default, TEMPORAL.help, TEMPORAL.low, TEMPORAL.high, step=TEMPORAL.step))
KEYS = (DTYPE, QUANTIZATION, *SETTINGS, *RESTORE)
DEFAULTS = {"version": "1.5", **{key.name: key.default for key in KEYS}, "upscale": "none", "upscale_scale": 2.0}
# The models a configs file names (under --models), by default where the catalogue puts them (optional: if named).
MODEL_DEFAULTS = {key: CATALOGUE[key].path for key in ("unet_1.5", "unet_1.6", "whisper", "vae", "syncnet")} | \
    {"s3fd": None, "upscaler": None, "face_restorer": None}


def load_plan(path: str | Path, models_dir: str | Path | None = None) -> tuple[dict, list[dict], dict]:
    """(model paths, full configs, score settings) from a configs file; every config gets every default."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"configs file not found: {path}")
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(plan, dict) or not isinstance(plan.get("configs"), list):
        raise ValueError(f"{path} needs a \"configs\" list, e.g. {{\"configs\": [{{\"name\": \"baseline\"}}]}}")
    plan.pop("_about", None)
    base = Path(models_dir) if models_dir else path.parent
    models = {}
    for key, default in MODEL_DEFAULTS.items():
        value = plan.get("models", {}).get(key, default)
        models[key] = None if value is None else (Path(value) if Path(value).is_absolute() else base / value)
    defaults = DEFAULTS | _one_spelling(plan.get("defaults", {}), path)
    configs = [defaults | _one_spelling(config, path) for config in plan["configs"]]
    unknown = {k for c in configs for k in c} - set(DEFAULTS) - {"name"}
    if unknown:
        raise ValueError(f"{path}: unknown config settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    configs = [check_all(KEYS, c, lambda name, c=c: f"{path}: {name} in {c.get('name')!r}") for c in configs]
    names = [c.get("name") for c in configs]
    if None in names or len(set(names)) != len(names):
        raise ValueError(f"{path}: every config needs a unique name")
    score = {"crops": CROPS.default, "min_track": MIN_TRACK_FRAMES.default, "jpeg": "auto"} | plan.get("score", {})
    score = check_all(SCORE_OPTIONS, score, lambda name: f"{path}: score.{name}")
    if score["jpeg"] not in ("auto", True, False):
        raise ValueError(f'{path}: score.jpeg must be "auto", true or false, got {score["jpeg"]!r}')
    return models, configs, score


def _one_spelling(config: object, path: Path) -> dict:
    """`config` with the earlier spellings of sampler settings ("vad", "deepcache", ...) under their one name."""
    if not isinstance(config, dict):
        raise ValueError(f"{path}: every config and the defaults must be JSON objects, got {config!r}")
    try:
        return one_spelling(config)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc} in {config}") from exc


class PeakMemory:
    """Peak memory during a block: CUDA's allocator peak on a GPU, else the process's resident set, sampled."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            process = psutil.Process()

            def sample():
                while not self._stop.wait(0.05):
                    self.peak = max(self.peak, process.memory_info().rss)

            self.peak = process.memory_info().rss
            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()


def run_config(config: dict, clip: Clip, models: dict, model_set: ModelSet, video: Path,
               score_settings: dict) -> dict:
    """Lip-sync and score one configuration, writing its mp4 to `video`; returns its result row."""
    device = model_set.device
    dtype = resolve_dtype(config["dtype"], device)
    settings = SamplerSettings.from_mapping(config)
    settings.validate()
    version = config["version"]
    unet = UNetSpec(_need(models, f"unet_{version}"), version, config["quantization"])
    started = time.perf_counter()
    with PeakMemory(device) as memory:
        files = ModelFiles(unet, _need(models, "whisper"), _need(models, "vae"))
        run = lipsync_files(clip, model_set, files, settings, dtype=dtype)
        result = run.result
        frames = result.frames
        if config["restore"] != "none" or config["upscale"] != "none":
            crops = _restore(result.crops, result, config, models, device)
            crops = _upscale(crops, result, config, models, device)
            frames = paste_back(clip.frames[torch.as_tensor(result.source_index)], result.faces, crops)
    seconds = time.perf_counter() - started
    write_video(video, frames, clip.fps, audio=clip.audio_path)
    score = _score(frames, clip, models, model_set, score_settings)
    return {"name": config["name"], "lse_c": score.lse_c, "lse_d": score.lse_d, "offset": score.offset,
            "crops": score.crops, **_mouth_measures(frames, clip, result), "seconds": seconds,
            "peak_mb": memory.peak / 2**20, "frames": len(frames), "generated": int(result.generated.sum()),
            "video": video.name, "warnings": result.stats["warnings"],
            "settings": {k: v for k, v in config.items() if k != "name"}}


def run_experiment(video: str | Path, audio: str | Path, configs_file: str | Path, out_dir: str | Path, *,
                   models_dir: str | Path | None = None, device: str | None = None,
                   progress=print, cluster=None) -> list[dict]:
    """Run every configuration of `configs_file` on one clip; the report in `out_dir` is rewritten after each.
    Returns one row per configuration, in the file's order; a failed one has "error" (one line) instead of
    scores. With `cluster` (a `cluster.RayCluster`) each configuration is a task on its workers."""
    models, configs, score_settings = load_plan(configs_file, models_dir)
    names = video_names([c["name"] for c in configs])
    inputs = {"--video": video, "--audio": audio, "--configs": configs_file,
              **{f"the {key} model": path for key, path in models.items()}}
    out_dir = check_output_folder(out_dir, [*REPORT_FILES, *names], inputs)
    check_model_files(models, configs, score_settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch_device = resolve_device(device)
    clip = read_clip(video, audio)
    if clip.still:
        raise ValueError(f"{video} is a still image; the experiment needs a video (its frame rate matters)")
    model_set = ModelSet(torch_device)
    context = {"video": str(video), "audio": str(audio), "device": str(torch_device), "configs": str(configs_file),
               "fps": clip.fps, "frames": len(clip.frames)}
    if cluster is not None:
        return _run_on_cluster(cluster, configs, names, clip, models, str(torch_device), score_settings, out_dir,
                               context, progress)
    rows = []
    for index, (config, file_name) in enumerate(zip(configs, names), 1):
        progress(f"[{index}/{len(configs)}] {config['name']}")
        rows.append(_run_or_record(config, clip, models, model_set, out_dir / file_name, score_settings))
        if "error" in rows[-1]:
            progress(f"[{index}/{len(configs)}] {config['name']} failed: {rows[-1]['error']}")
        for warning in rows[-1].get("warnings", ()):
            progress(f"[{index}/{len(configs)}] {config['name']}: warning: {warning}")
        write_report(rows, out_dir, context)
    return rows


def config_task(config: dict, file_name: str, clip: Clip, models: dict, device: str,
                score_settings: dict) -> tuple[dict, bytes | None]:
    """One configuration on a cluster's worker: its row, and its mp4's bytes (None when it failed)."""
    with tempfile.TemporaryDirectory() as folder:
        video = Path(folder) / file_name
        row = _run_or_record(config, clip, models, ModelSet(torch.device(device)), video, score_settings)
        return row, video.read_bytes() if video.is_file() else None


def _run_on_cluster(cluster, configs: list[dict], names: list[str], clip: Clip, models: dict, device: str,
                    score_settings: dict, out_dir: Path, context: dict, progress) -> list[dict]:
    rows: dict[int, dict] = {}
    for name in names:
        (out_dir / name).unlink(missing_ok=True)  # an mp4 left by an earlier run must not pass for this one's

    def gathered(index: int, result: tuple[dict, bytes | None]) -> None:
        row, data = result
        if data is not None:
            (out_dir / names[index]).write_bytes(data)
        rows[index] = row
        progress(f"[{len(rows)}/{len(configs)}] {row['name']}" + (f" failed: {row['error']}" if "error" in row else ""))
        write_report([rows[i] for i in sorted(rows)], out_dir, context)

    items = [(config, name, clip, models, device, score_settings) for config, name in zip(configs, names)]
    cluster.map(config_task, items, device, gathered)
    return [rows[i] for i in range(len(configs))]


def _run_or_record(config: dict, clip: Clip, models: dict, model_set: ModelSet, video: Path,
                   score_settings: dict) -> dict:
    """`run_config`'s row, or a row with the error: one configuration's failure is a result, not the end."""
    video.unlink(missing_ok=True)  # an mp4 left by an earlier run must not pass for this one's
    started = time.perf_counter()
    try:
        return run_config(config, clip, models, model_set, video, score_settings)
    except Exception as exc:  # noqa: BLE001 -- recorded in the report; KeyboardInterrupt still stops the run
        model_set.drop_unets()  # a half-loaded or oversized UNet is not worth keeping
        if model_set.device.type == "cuda":
            torch.cuda.empty_cache()  # what the failed configuration held (an OOM) is needed by the next one
        return {"name": config["name"], "error": error_line(exc), "seconds": time.perf_counter() - started,
                "settings": {k: v for k, v in config.items() if k != "name"}}


def video_names(names: list[str]) -> list[str]:
    """One distinct mp4 name per configuration: names that slug alike ("Run A", "run-a") get _2, _3, ... in
    the order of the configs file, so reruns write the same files."""
    taken, files = set(), []
    for name in names:
        base = candidate = slug(name)
        number = 2
        while candidate in taken:
            candidate, number = f"{base}_{number}", number + 1
        taken.add(candidate)
        files.append(f"{candidate}.mp4")
    return files


def write_report(rows: list[dict], out_dir: Path, context: dict) -> None:
    """README.md, results.csv and chart.png for the rows so far; a failed row (with "error") says why."""
    from PIL import Image

    done = [r for r in rows if "error" not in r]
    failed = len(rows) - len(done)
    lines = ["# LatentSync experiment", "",
             f"Clip `{context['video']}` ({context['frames']} frames at {context['fps']:g} fps) with "
             f"`{context['audio']}`, on {context['device']}; configs from `{context['configs']}`.",
             "LSE-C: SyncNet confidence (higher is better); LSE-D: distance (lower is better); offset in frames "
             f"at 25 fps; crops: {done[0]['crops'] if done else '-'}.", "",
             "Mouth sharpness: Laplacian variance over the regenerated mouth (median over the frames; higher is "
             "sharper). Mouth flicker: mean luma change of the mouth from one frame to the next (0-255; lower is "
             "steadier). vs source: each one's ratio to the same measure on the source frames.", "",
             "| " + " | ".join([*TABLE_COLUMNS, *(["error"] if failed else [])]) + " |",
             "| --- |" + " ---: |" * (len(TABLE_COLUMNS) - 1) + (" --- |" if failed else "")]
    lines += [_table_row(r, failed > 0) for r in rows]
    lines += ["", "Settings per config are in `results.csv`; each config's video is beside this file."]
    if failed:
        lines += [f"{failed} of {len(rows)} configs failed; their error is in the last column."]
    _replace_file(out_dir / REPORT_FILES[0], ("\n".join(lines) + "\n").encode("utf-8"))
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=[*CSV_COLUMNS, "settings"])
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in CSV_COLUMNS} | {"settings": json.dumps(row["settings"])})
    _replace_file(out_dir / REPORT_FILES[1], table.getvalue().encode("utf-8"))
    chart = io.BytesIO()
    Image.fromarray(bar_chart([r["name"] for r in rows], [r.get("lse_c") for r in rows])).save(chart, format="png")
    _replace_file(out_dir / REPORT_FILES[2], chart.getvalue())


def _replace_file(path: Path, data: bytes) -> None:
    # Written beside and renamed: a run stopped mid-write leaves the previous complete report, not half a file.
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def _table_row(row: dict, error_column: bool) -> str:
    if "error" in row:
        cells = [row["name"], *["-"] * 7, f"{row['seconds']:.1f}", "-", "-", row["error"]]
    else:
        cells = [row["name"], f"{row['lse_c']:.3f}", f"{row['lse_d']:.3f}", f"{row['offset']:+d}",
                 _number(row.get("sharpness"), "{:.1f}"), _number(row.get("sharpness_ratio"), "{:.2f} x"),
                 _number(row.get("flicker"), "{:.2f}"), _number(row.get("flicker_ratio"), "{:.2f} x"),
                 f"{row['seconds']:.1f}", f"{row['peak_mb']:.0f}", f"{row['generated']}/{row['frames']}"]
        cells += [""] if error_column else []
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"  # a bare "|" would split a cell


def _number(value: float | None, pattern: str) -> str:
    """A measure in the table; "-" where there is none (an older row, or no frame with a face)."""
    return "-" if value is None or not math.isfinite(value) else pattern.format(value)


def bar_chart(names: list[str], values: list[float | None], width: int = 720, bar: int = 28) -> np.ndarray:
    """LSE-C per config as horizontal bars, names and values written in; None (a failed config) says so."""
    from PIL import Image, ImageDraw

    height = 40 + bar * len(names)
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((10, 10), "LSE-C (higher is better)", fill=(0, 0, 0))
    top = max(max((v for v in values if v is not None), default=0.0), 1e-6)
    for i, (name, value) in enumerate(zip(names, values)):
        y = 34 + i * bar
        draw.text((10, y + 8), name[:32], fill=(0, 0, 0))
        if value is None:
            draw.text((226, y + 8), "failed", fill=(170, 30, 30))
            continue
        length = int((width - 300) * max(value, 0) / top)
        draw.rectangle([220, y + 4, 220 + length, y + bar - 4], fill=(38, 112, 74))
        draw.text((226 + length, y + 8), f"{value:.2f}", fill=(0, 0, 0))
    return np.asarray(image)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "config"


def check_model_files(models: dict, configs: list[dict], score_settings: dict) -> None:
    """Before any configuration runs: a missing model file, in one line naming it and the first one that needs it."""
    for config in configs:
        optional = {"face_restorer": config["restore"] == "model", "upscaler": config["upscale"] == "model",
                    "s3fd": score_settings["crops"] == "s3fd"}
        for key in [f"unet_{config['version']}", "whisper", "vae", "syncnet", *(k for k, on in optional.items() if on)]:
            _need(models, key, config["name"])


def _need(models: dict, key: str, config: str | None = None) -> Path:
    path = models.get(key)
    if path is None or not Path(path).is_file():
        what = CATALOGUE[key].what if key in CATALOGUE else f"the {key.replace('_', ' ')} model"
        needs = f"configuration {config!r} needs {what}" if config else what
        raise FileNotFoundError(f"{needs}, not found: {path} (set models.{key} in the configs file, or --models)")
    return Path(path)


def _restore(crops, result, config, models, device):
    """The generated crops with their mouths restored by the face restorer (`"restore": "model"`), or as they are."""
    if config["restore"] == "none":
        return crops
    model = load_face_restorer(_need(models, "face_restorer"), device=device)
    blend = MouthBlend(config["restore_strength"], temporal=config["restore_temporal"])
    return restore_mouths(crops, result.faces.mask, model, blend=blend, device=device)


def _upscale(crops, result, config, models, device):
    method = config["upscale"]
    if method == "none":
        return crops
    if method == "model":
        method = load_upscale_model(_need(models, "upscaler"), device=device)
    # As large as the faces appear in the frames, and never smaller than asked.
    side = face_fit_side(result.faces, minimum=round(result.faces.resolution * config["upscale_scale"]))
    return upscale_frames(crops, method, size=(side, side), device=device)


def _score(frames, clip: Clip, models: dict, model_set: ModelSet, settings: dict):
    syncnet = model_set.syncnet(_need(models, "syncnet"))
    extra = {"face_boxes": pack_face_detector()}
    if settings["crops"] == "s3fd":
        extra = {"s3fd": model_set.s3fd(_need(models, "s3fd"))}
    source = FaceCrops(settings["crops"], jpeg=wants_jpeg(settings["jpeg"], settings["crops"]), **extra)
    return score_sync(frames, clip.waveform, clip.sample_rate, clip.fps, syncnet, source,
                      tracks=TrackRules(min_track=settings["min_track"]))


def _mouth_measures(frames, clip: Clip, result) -> dict:
    """Mouth sharpness and flicker against the source frames, read one at a time (no second copy of the clip)."""
    source = [(clip.frames[int(i)] for i in result.source_index) for _ in range(2)]
    sharpness = compare_sharpness(frames, source[0], result.faces)
    flicker = compare_flicker(frames, source[1], result.faces)
    return {"sharpness": sharpness["generated"], "sharpness_ratio": sharpness["ratio"],
            "flicker": flicker["generated"], "flicker_ratio": flicker["ratio"]}
