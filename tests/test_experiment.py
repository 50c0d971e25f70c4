"""`python -m latentsync experiment`: configurations run through the library path, scored, and reported."""
import csv
import json
import subprocess
import sys

import pytest

from conftest import REPO, shared_path


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_unet_config):
    from media import cut_clip, cut_voice
    from model_files import write_lipsync_models
    from syncnet_model_files import write_syncnet_file

    root = tmp_path_factory.mktemp("experiment")
    models = write_lipsync_models(root / "models", tiny_unet_config)
    write_syncnet_file(models / "syncnet" / "syncnet_v2.model")
    clip = cut_clip(shared_path("media/latentsync_demo1_video.mp4"), root / "clip.mp4", 16, 540)
    voice = cut_voice(shared_path("media/latentsync_demo1_audio.wav"), root / "voice.wav", 16 / 25)
    configs = root / "configs.json"
    configs.write_text(json.dumps({
        "defaults": {"steps": 2},
        "score": {"crops": "pack", "min_track": 8},
        "configs": [{"name": "baseline"}, {"name": "VAD skip, DPM-Solver++", "vad": "skip", "scheduler": "dpmpp_2m"},
                    {"name": "bicubic x2", "upscale": "bicubic"}]}))
    return root, models, clip, voice, configs


def test_experiment_writes_table_csv_chart_and_videos(setup):
    root, models, clip, voice, configs = setup
    out = root / "report"
    result = subprocess.run([sys.executable, "-m", "latentsync", "experiment", "--video", str(clip), "--audio",
                             str(voice), "--configs", str(configs),
                             "--out", str(out), "--models", str(models)],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert [r["name"] for r in summary["results"]] == ["baseline", "VAD skip, DPM-Solver++", "bicubic x2"]
    table = (out / "README.md").read_text()
    assert table.count("\n| ") == 5 and "LSE-C" in table  # header, rule and 3 rows
    with open(out / "results.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 3 and all(float(r["seconds"]) > 0 and float(r["peak_mb"]) > 0 for r in rows)
    assert json.loads(rows[1]["settings"])["vad"] == "skip"
    assert (out / "chart.png").stat().st_size > 1000
    assert {p.name for p in out.glob("*.mp4")} == {r["video"] for r in rows}
    assert int(rows[1]["generated"]) < int(rows[0]["generated"]) == 16  # the pause before the voice is skipped


def test_configs_are_checked_before_anything_runs(setup, tmp_path):
    from latentsync.experiment import load_plan

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"configs": [{"name": "a", "stpes": 3}]}))
    with pytest.raises(ValueError, match="unknown config settings \\['stpes'\\]"):
        load_plan(bad)
    bad.write_text(json.dumps({"configs": [{"name": "a"}, {"name": "a"}]}))
    with pytest.raises(ValueError, match="unique name"):
        load_plan(bad)
    models, configs, score = load_plan(REPO / "bench" / "poc_experiment.json", "/models")
    assert len(configs) == 10 and score["crops"] == "s3fd" and str(models["vae"]).startswith("/models/vae/")
