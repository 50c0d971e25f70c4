"""The sampler nodes' live previews and progress text, through ComfyUI's own machinery: the node adapter
(`nodes/_comfy._StepReporter`) turns each step's latents into a picture with core's latent previewer and sends
the window, step and time left as the node's progress text. Run in a child process with ComfyUI's modules (as
`scripts.locales` imports the pack), so that they never load into the test process; the library's side (every
step of every window reaches a `StepProgress`) is tested in test_sampler.py."""
import json
import subprocess
import sys

from conftest import REPO

PROBE = r"""
import json, sys
from pathlib import Path
import torch
from scripts.locales import node_infos
node_infos(Path(sys.argv[1]))  # ComfyUI on the path, the pack imported as ComfyUI imports it
import types
import comfy.utils
from comfy.cli_args import args, LatentPreviewMethod
from comfy_execution.utils import CurrentNodeContext
from latentsync.sample.progress import StepInfo

args.preview_method = LatentPreviewMethod(sys.argv[2])
bars, texts = [], []
comfy.utils.set_progress_bar_global_hook(
    lambda value, total, preview, node_id=None: bars.append([value, total, None if preview is None else
                                                             [preview[0], list(preview[1].size)]]))

class PromptServer:  # stands in for server.PromptServer, whose module starts the web app's imports
    client_id = "client"
    def send_progress_text(self, text, node_id, client_id=None):
        texts.append([text, node_id])

PromptServer.instance = PromptServer()
sys.modules["server"] = types.SimpleNamespace(PromptServer=PromptServer)
comfy_module = sys.modules["latentsync_pack.nodes._comfy"]
with CurrentNodeContext("prompt", "7"):
    reporter = comfy_module.step_reporter()
    for done in range(1, 5):
        window, step = divmod(done - 1, 2)
        reporter.step(StepInfo(window, 2, step + 1, 2, done, 4, torch.randn(16, 4, 32, 32),
                               None if done == 1 else 3.0 * (4 - done)))
print(json.dumps({"bars": bars, "texts": texts}))
"""


def probe(comfyui_dir, method: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(comfyui_dir), method], cwd=REPO, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_step_moves_the_bar_with_a_preview_and_says_the_window_step_and_time_left(comfyui_dir):
    seen = probe(comfyui_dir, "auto")  # auto: the latent-to-RGB approximation without a TAESD file
    assert [bar[:2] for bar in seen["bars"]] == [[1, 4], [2, 4], [3, 4], [4, 4]]
    assert all(bar[2] is not None and bar[2][0] == "JPEG" and bar[2][1][0] > 0 for bar in seen["bars"])
    assert seen["texts"] == [["window 1/2, step 1/2, estimating time left", "7"],
                             ["window 1/2, step 2/2, 0:06 left", "7"],
                             ["window 2/2, step 1/2, 0:03 left", "7"],
                             ["window 2/2, step 2/2, 0:00 left", "7"]]


def test_comfyuis_default_none_sends_no_pictures_and_still_the_text(comfyui_dir):
    seen = probe(comfyui_dir, "none")
    assert [bar[2] for bar in seen["bars"]] == [None] * 4 and len(seen["texts"]) == 4
