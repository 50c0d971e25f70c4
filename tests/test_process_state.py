"""Optional libraries imported late (pyannote with Lightning, torchao) leave the host's environment, loggers and
warning filters as they were. Each check runs in a fresh Python, so imports made earlier cannot hide a change."""
import importlib.util
import json
import logging
import os
import subprocess
import sys
import warnings

import pytest

from conftest import REPO
from latentsync.core.process_state import KEPT_ENVIRON, contained

# Loggers a host such as ComfyUI may already have when the backend loads; the imports configure them if present.
LIGHTNING_ENVIRON = ("PYTORCH_NVML_BASED_CUDA_CHECK", "TORCHINDUCTOR_CACHE_DIR")
HOST_LOGGERS = ("opentelemetry", "lightning", "lightning.pytorch", "torchcodec", "torchao", "transformers")
PROBE = """
import json, logging, os, sys, warnings
import torch
for name in {loggers!r}:
    logging.getLogger(name)
def state():
    loggers = {{n: [l.level, l.disabled, l.propagate, len(l.handlers)]
               for n, l in logging.root.manager.loggerDict.items() if isinstance(l, logging.Logger)}}
    loggers[""] = [logging.root.level, logging.root.disabled, True, len(logging.root.handlers)]
    return {{"environ": dict(os.environ), "loggers": loggers, "filters": [repr(f) for f in warnings.filters]}}
before = state()
{action}
print(json.dumps({{"before": before, "after": state(), "imported": {module!r} in sys.modules}}))
"""


def run_probe(action: str, module: str) -> dict:
    code = PROBE.format(loggers=HOST_LOGGERS, action=action, module=module)
    # A fresh Python as a host starts it: without what an earlier test's import of Lightning may have set here.
    env = {k: v for k, v in os.environ.items() if k not in LIGHTNING_ENVIRON}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def assert_unchanged(report: dict) -> None:
    assert report["imported"], "the library was not imported: the check would prove nothing"
    before, after = report["before"], report["after"]
    changed = {key for key in set(before["environ"]) | set(after["environ"])
               if before["environ"].get(key) != after["environ"].get(key)}
    assert changed <= KEPT_ENVIRON, sorted(changed)
    assert {name: after["loggers"].get(name) for name in before["loggers"]} == before["loggers"]
    assert after["filters"] == before["filters"]


@pytest.mark.skipif(importlib.util.find_spec("pyannote") is None, reason="the pyannote extra is not installed")
def test_loading_the_pyannote_backend_leaves_the_process_as_it_was(tmp_path):
    refused = tmp_path / "not_a_checkpoint.bin"
    refused.write_bytes(b"not a checkpoint")
    action = ("from latentsync.audio.vad import detect_speech\n"
              "try:\n"
              f"    detect_speech(torch.zeros(16000), 16000, backend='pyannote', model_path={str(refused)!r})\n"
              "except ValueError:\n"
              "    pass\n"
              "assert 'PYTORCH_NVML_BASED_CUDA_CHECK' not in os.environ\n")
    assert_unchanged(run_probe(action, "lightning"))


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao is not installed")
def test_int8_quantization_leaves_the_process_as_it_was():
    action = ("from latentsync.unet.quantize import quantize_int8\n"
              "quantize_int8(torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Conv2d(4, 4, 3)))\n")
    assert_unchanged(run_probe(action, "torchao"))


def test_contained_restores_what_changed_and_keeps_what_is_new(monkeypatch):
    monkeypatch.setenv("LATENTSYNC_TEST_KEPT", "1")
    host = logging.getLogger("latentsync_test.host")
    host.setLevel(logging.WARNING)
    logging.getLogger("latentsync_test.parent.child")  # "latentsync_test.parent" is only a placeholder so far
    filters, root_handlers = list(warnings.filters), list(logging.root.handlers)
    with contained():
        os.environ["LATENTSYNC_TEST_ADDED"] = "1"
        os.environ["LATENTSYNC_TEST_KEPT"] = "changed"
        host.setLevel(logging.DEBUG)
        host.propagate = False
        logging.getLogger("latentsync_test.parent").setLevel(logging.INFO)
        logging.getLogger("latentsync_test.new").setLevel(logging.ERROR)
        logging.root.addHandler(logging.NullHandler())
        warnings.filterwarnings("ignore", message="latentsync test filter")
    assert "LATENTSYNC_TEST_ADDED" not in os.environ and os.environ["LATENTSYNC_TEST_KEPT"] == "1"
    assert host.level == logging.WARNING and host.propagate
    assert logging.getLogger("latentsync_test.parent").level == logging.NOTSET
    assert logging.root.handlers == root_handlers
    assert warnings.filters == filters
    assert logging.getLogger("latentsync_test.new").level == logging.ERROR  # a library's own new logger
