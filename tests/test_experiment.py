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
    from scripts.model_files import write_lipsync_models
    from syncnet_model_files import write_syncnet_file
    from scripts.vae_files import NARROW_WIDTHS
    from upscale_model_files import write_restoreformer

    root = tmp_path_factory.mktemp("experiment")
    # A narrower SD VAE: the run is about the experiment's table and reports, not the VAE (tests/test_vae.py).
    models = write_lipsync_models(root / "models", tiny_unet_config, vae_widths=NARROW_WIDTHS)
    write_syncnet_file(models / "syncnet" / "syncnet_v2.model")
    write_restoreformer(models / "facerestore_models" / "RestoreFormer.pth")  # tiny, random
    clip = cut_clip(shared_path("media/latentsync_demo1_video.mp4"), root / "clip.mp4", 16, 540)
    voice = cut_voice(shared_path("media/latentsync_demo1_audio.wav"), root / "voice.wav", 16 / 25)
    configs = root / "configs.json"
    configs.write_text(json.dumps({
        "models": {"face_restorer": "facerestore_models/RestoreFormer.pth"},
        "defaults": {"steps": 2},
        "score": {"crops": "pack", "min_track": 8},
        "configs": [{"name": "baseline"}, {"name": "VAD skip, DPM-Solver++", "vad": "skip", "scheduler": "dpmpp_2m"},
                    # fails at once: int4 needs CUDA, and on CUDA a bf16 model (auto is fp16 there)
                    {"name": "int4", "quantization": "int4"},
                    {"name": "bicubic x2", "upscale": "bicubic"},
                    {"name": "mouth restored", "restore": "model", "restore_strength": 1.0,
                     "restore_temporal": 0.5}]}))
    return root, models, clip, voice, configs


def test_experiment_writes_table_csv_chart_and_videos(setup):
    root, models, clip, voice, configs = setup
    out = root / "report"
    result = subprocess.run([sys.executable, "-m", "latentsync", "experiment", "--video", str(clip), "--audio",
                             str(voice), "--configs", str(configs),
                             "--out", str(out), "--models", str(models)],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 1, result.stderr[-3000:]  # finished, but a configuration failed
    summary = json.loads(result.stdout)
    assert [r["name"] for r in summary["results"]] == ["baseline", "VAD skip, DPM-Solver++", "int4", "bicubic x2",
                                                       "mouth restored"]
    assert summary["failed"] == 1 and "int4" in summary["results"][2]["error"]
    table = (out / "README.md").read_text()
    assert table.count("\n| ") == 7 and "LSE-C" in table  # header, rule and 5 rows
    assert "\n| int4 | - | - | - |" in table and "1 of 5 configs failed" in table
    with open(out / "results.csv") as file:
        rows = list(csv.DictReader(file))
    scored = [r for r in rows if not r["error"]]
    assert len(rows) == 5 and [r["name"] for r in scored] == ["baseline", "VAD skip, DPM-Solver++", "bicubic x2",
                                                              "mouth restored"]
    assert all(float(r["seconds"]) > 0 and float(r["peak_mb"]) > 0 for r in scored)
    # Mouth sharpness of each output and its ratio to the source frames': exactly 1 where no frame was generated
    # (the skip policy passes this clip through), far from 1 where the tiny random UNet painted noise.
    assert all(float(r["sharpness"]) > 0 for r in scored)
    assert rows[1]["generated"] == "0" and float(rows[1]["sharpness_ratio"]) == pytest.approx(1.0, abs=1e-9)
    assert abs(float(rows[0]["sharpness_ratio"]) - 1) > 0.5 and abs(float(rows[3]["sharpness_ratio"]) - 1) > 0.5
    assert rows[2]["sharpness"] == "" and "| mouth sharpness | vs source |" in table
    # Mouth flicker likewise: the same as the source's (1) where the clip passed through, a ratio everywhere else.
    assert all(float(r["flicker"]) > 0 and float(r["flicker_ratio"]) > 0 for r in scored)
    assert float(rows[1]["flicker_ratio"]) == pytest.approx(1.0, abs=1e-9) and rows[2]["flicker"] == ""
    assert "| mouth sharpness | vs source | mouth flicker | vs source | seconds |" in table
    # The baseline's crops with the (tiny, random) restorer's output in the mouth: the same frames generated, the
    # mouth measured differently.
    assert rows[4]["generated"] == rows[0]["generated"] and json.loads(rows[4]["settings"])["restore"] == "model"
    assert float(rows[4]["sharpness"]) != pytest.approx(float(rows[0]["sharpness"]), rel=0.02)
    baseline = next(line for line in table.splitlines() if line.startswith("| baseline |"))
    cells = [cell.strip() for cell in baseline.strip("|").split("|")]
    assert float(cells[4]) == pytest.approx(float(rows[0]["sharpness"]), abs=0.05)
    assert cells[5] == f"{float(rows[0]['sharpness_ratio']):.2f} x"
    assert float(cells[6]) == pytest.approx(float(rows[0]["flicker"]), abs=0.005)
    assert cells[7] == f"{float(rows[0]['flicker_ratio']):.2f} x"
    assert "int4" in rows[2]["error"] and "\n" not in rows[2]["error"] and rows[2]["lse_c"] == ""
    assert json.loads(rows[1]["settings"])["vad_policy"] == "skip"  # given as "vad", its earlier spelling
    assert (out / "chart.png").stat().st_size > 1000
    assert {p.name for p in out.glob("*.mp4")} == {r["video"] for r in scored}
    assert int(rows[1]["generated"]) < int(rows[0]["generated"]) == 16  # the pause before the voice is skipped


def test_the_experiment_on_a_local_ray_cluster_gives_the_same_report(setup):
    """One configuration per Ray task on two local workers: the same rows, scores and videos as the run above."""
    from latentsync.run.cluster import RayCluster
    from latentsync.run.experiment import run_experiment

    root, models, clip, voice, configs = setup
    with open(root / "report" / "results.csv") as file:  # the single-process run of the test above
        local = list(csv.DictReader(file))
    rows = run_experiment(clip, voice, configs, root / "report_ray", models_dir=models, progress=lambda line: None,
                          cluster=RayCluster("local", workers=2))
    assert [r["name"] for r in rows] == [r["name"] for r in local]
    for ours, theirs in zip(rows, local):
        assert ("error" in ours) == bool(theirs["error"])
        if "error" not in ours:
            assert ours["lse_c"] == pytest.approx(float(theirs["lse_c"]), abs=1e-4)
            assert ours["lse_d"] == pytest.approx(float(theirs["lse_d"]), abs=1e-4)
            assert ours["generated"] == int(theirs["generated"])
    with open(root / "report_ray" / "results.csv") as file:
        assert [r["name"] for r in csv.DictReader(file)] == [r["name"] for r in local]
    assert {p.name for p in (root / "report_ray").glob("*.mp4")} == {r["video"] for r in local if not r["error"]}


def test_configs_are_checked_before_anything_runs(setup, tmp_path):
    from latentsync.run.experiment import load_plan

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"configs": [{"name": "a", "stpes": 3}]}))
    with pytest.raises(ValueError, match="unknown config settings \\['stpes'\\]"):
        load_plan(bad)
    bad.write_text(json.dumps({"configs": [{"name": "a"}, {"name": "a"}]}))
    with pytest.raises(ValueError, match="unique name"):
        load_plan(bad)
    models, configs, score = load_plan(REPO / "bench" / "poc_experiment.json", "/models")
    assert len(configs) == 13 and score["crops"] == "s3fd" and str(models["vae"]).startswith("/models/vae/")
    assert [c["name"] for c in configs if c["restore"] == "model"] == ["256 + GFPGAN on the mouth"]
    assert str(models["face_restorer"]).endswith("facerestore_models/GFPGANv1.4.pth") and score["jpeg"] == "auto"
    bad.write_text(json.dumps({"configs": [{"name": "a", "restore": "GFPGAN"}]}))
    with pytest.raises(ValueError, match="restore"):
        load_plan(bad)
    bad.write_text(json.dumps({"configs": [{"name": "a", "restore": "model", "restore_temporal": 0.99}]}))
    with pytest.raises(ValueError, match="restore_temporal"):  # Restore Mouths' temporal: at most 0.95
        load_plan(bad)
    assert score["jpeg"] == "auto"  # the JPEG round trip follows the crops unless the file says otherwise
    bad.write_text(json.dumps({"score": {"jpeg": "yes"}, "configs": [{"name": "a"}]}))
    with pytest.raises(ValueError, match="score.jpeg must be"):
        load_plan(bad)


def test_video_names_are_distinct_and_stable():
    from latentsync.run.experiment import video_names

    names = ["Run A", "run-a", "run_a_2", "RUN A!", "", "?"]
    files = video_names(names)
    assert files == ["run_a.mp4", "run_a_2.mp4", "run_a_2_2.mp4", "run_a_3.mp4", "config.mp4", "config_2.mp4"]
    assert video_names(names) == files and len(set(files)) == len(files)


def test_a_failing_configuration_is_a_row_and_the_run_goes_on(tmp_path, monkeypatch):
    """The report is rewritten after every configuration, so a crash later loses nothing already measured."""
    from media import cut_clip

    from latentsync.run import experiment

    clip = cut_clip(shared_path("media/latentsync_demo1_video.mp4"), tmp_path / "clip.mp4", 2, 128)
    configs = tmp_path / "configs.json"
    configs.write_text(json.dumps({"configs": [{"name": "Run A"}, {"name": "run-a", "steps": 3},
                                               {"name": "broken | badly"}, {"name": "last"}]}))
    out = tmp_path / "report"
    seen = []

    def fake_run_config(config, clip, models, model_set, video, score_settings):
        table = (out / "README.md").read_text() if seen else ""
        seen.append((config["name"], video.name, max(table.count("\n| ") - 2, 0)))  # rows already reported
        if config["name"].startswith("broken"):
            raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")
        video.write_bytes(b"mp4")
        return {"name": config["name"], "lse_c": 7.5, "lse_d": 6.5, "offset": 1, "crops": "pack",
                "sharpness": 12.3, "sharpness_ratio": 0.8, "flicker": 1.5, "flicker_ratio": 1.2, "seconds": 1.0,
                "peak_mb": 10.0, "frames": 2, "generated": 2, "video": video.name,
                "settings": {k: v for k, v in config.items() if k != "name"}}

    monkeypatch.setattr(experiment, "run_config", fake_run_config)
    for name in filter(None, experiment.MODEL_DEFAULTS.values()):  # every model file is checked before the run
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    lines = []
    rows = experiment.run_experiment(clip, shared_path("media/latentsync_demo1_audio.wav"), configs, out,
                                     device="cpu", progress=lines.append)
    assert seen == [("Run A", "run_a.mp4", 0), ("run-a", "run_a_2.mp4", 1), ("broken | badly", "broken_badly.mp4", 2),
                    ("last", "last.mp4", 3)]
    assert [r["name"] for r in rows] == ["Run A", "run-a", "broken | badly", "last"]
    assert rows[2]["error"] == "CUDA out of memory. Tried to allocate 2 GiB" and "lse_c" not in rows[2]
    assert any(line.endswith("broken | badly failed: CUDA out of memory. Tried to allocate 2 GiB") for line in lines)
    table = (out / "README.md").read_text()
    assert "| broken \\| badly | - | - | - |" in table and table.count("\n| ") == 6
    assert "| last | 7.500 | 6.500 | +1 | 12.3 | 0.80 x | 1.50 | 1.20 x | 1.0 | 10 | 2/2 |  |" in table
    assert "| broken \\| badly | - | - | - | - | - | - | - | " in table
    with open(out / "results.csv") as file:
        assert [r["error"] for r in csv.DictReader(file)] == ["", "", rows[2]["error"], ""]
    assert (out / "chart.png").stat().st_size > 500 and not list(out.glob("*.partial"))
    assert sorted(p.name for p in out.glob("*.mp4")) == ["last.mp4", "run_a.mp4", "run_a_2.mp4"]
