"""bench/gpu.sh end to end on the CPU (`--device cpu --tiny`): every row of the README's table is made, and the
numbers are sane. Timings on a shared CPU say nothing; the structure and the relations between numbers do."""
from __future__ import annotations

import json
import subprocess

import pytest
from conftest import REPO, shared_path

from latentsync.sample.presets import PRESETS


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    shared_path("reference/latentsync/unet_tiny_golden.safetensors")  # the quantization rows need it
    out = tmp_path_factory.mktemp("gpu") / "bench.json"
    result = subprocess.run(["bash", "bench/gpu.sh", "--device", "cpu", "--tiny", "--out", str(out), "--windows", "1",
                             "--threads", "1"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "s/window" in result.stdout and "rel err" in result.stdout  # the readable table is printed too
    return json.loads(out.read_text())


def test_every_preset_and_version_has_a_sane_row(report):
    assert report["tiny"] and report["torch"] and report["device"].startswith("CPU")
    rows = {(row["version"], row["preset"]): row for row in report["rows"]}
    assert set(rows) == {(version, preset) for version in ("1.5", "1.6") for preset in PRESETS}
    for (version, preset), row in rows.items():
        assert "skipped" not in row, row
        assert row["resolution"] == {"1.5": 256, "1.6": 512}[version] // 4  # --tiny's quarter-size crops
        assert row["unet_s"] > 0 and row["vae_s"] > 0 and row["cpu_s"] >= 0
        assert row["total_s"] >= row["unet_s"] + row["vae_s"]
        assert row["seconds_per_window"] == pytest.approx(row["total_s"] / row["windows"])
        assert row["rtf"] == pytest.approx(row["seconds_per_window"] / (row["window_frames"] / 25))
        assert row["x_real_time"] == pytest.approx(1 / row["rtf"])
        assert row["peak_bytes"] > 0 and row["unet_weight_bytes"] > 0
        assert row["estimate"]["total"] > 0 and row["estimate"]["unet_weights"] > 0
        assert row["quantization"] == PRESETS[preset].quantization
        assert row["settings"]["window"] == row["window_frames"]
    fast = rows[("1.5", "fast")]
    assert fast["settings"]["scheduler"] == "dpmpp_2m" and fast["settings"]["deepcache_interval"] == 3
    assert rows[("1.5", "low-vram")]["unet_weight_bytes"] < 0.5 * rows[("1.5", "quality")]["unet_weight_bytes"]


def test_int8_error_is_small_and_int4_is_marked_cuda_only(report):
    models = [row["model"] for row in report["quantization"]]
    assert len(models) == 2 and models[0].startswith("golden tiny")
    for row in report["quantization"]:
        assert row["reference"] == "float32"  # on the CPU, against fp32 (fp16 on CUDA)
        assert 0 < row["int8"]["relative_error"] < 0.1
        assert 0 < row["int8"]["weight_bytes"] < 0.5 * row["reference_weight_bytes"]
        assert row["int8"]["saved_bytes"] == row["reference_weight_bytes"] - row["int8"]["weight_bytes"]
        assert "needs CUDA" in row["int4"]["skipped"]
        for name in ("fp8_e4m3fn", "Q8_0", "Q4_K"):  # the packed storages run on the CPU too
            assert 0 < row[name]["relative_error"] < 0.5, name
            assert row[name]["weight_bytes"] < 1.1 * row["int8"]["weight_bytes"], name
