"""workflows/latentsync_vhs.json with ComfyUI-VideoHelperSuite (GPL-3.0, the shared snapshot unpacked into this
file's own ComfyUI, never into the pack): VHS Load Video -> LatentSync -> VHS Video Combine with the voice.

VHS gets a server of its own (one more boot, ~15 s) rather than the session's: the other tests keep checking the
pack alone, without a second pack's Python and editor extensions, and a missing snapshot fails only these tests."""
import json

import av
import pytest

from conftest import DEMO_FRAMES, REPO, SHARED, missing
from test_browser import WORKFLOWS, assert_loads_and_exports_like_our_converter, editor, needs_vhs  # noqa: F401
# lipsync_inputs and lipsync_models are fixtures: imported here, they write into this module's own server
from test_workflows import cpu_friendly, failure, lipsync_inputs, lipsync_models, load_prompt, node_id  # noqa: F401

pytestmark = pytest.mark.comfyui

WORKFLOW = "latentsync_vhs.json"


@pytest.fixture(scope="module")
def comfy_server(comfyui_dir, tmp_path_factory):
    import comfyui

    base = tmp_path_factory.mktemp("comfyui-vhs")
    try:
        comfyui.install_vhs(base / "custom_nodes", SHARED)
    except FileNotFoundError as err:
        missing(str(err))
    server = comfyui.ComfyServer(comfyui_dir, base, REPO).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def object_info(comfy_server) -> dict:
    info = comfy_server.get("/object_info")
    assert "VHS_LoadVideo" in info, f"VideoHelperSuite did not load:\n{comfy_server.log()[-3000:]}"
    return info


def test_install_vhs_names_where_it_looked_when_the_snapshot_is_missing(tmp_path):
    import comfyui

    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere" / "comfyui" / "vhs")):
        comfyui.install_vhs(tmp_path / "custom_nodes", tmp_path / "nowhere")


def test_the_workflow_offers_vhs_to_comfyui_manager():
    workflow = json.loads((REPO / "workflows" / WORKFLOW).read_text())
    vhs = [n for n in workflow["nodes"] if n["type"].startswith("VHS_")]
    assert {n["type"] for n in vhs} == {"VHS_LoadVideo", "VHS_VideoInfo", "VHS_VideoCombine"}
    assert all(n["properties"]["cnr_id"] == "comfyui-videohelpersuite" for n in vhs)
    assert all(n.get("title") for n in workflow["nodes"])


def test_vhs_workflow_lip_syncs_the_clip_and_muxes_the_voice(comfy_server, object_info, lipsync_inputs,
                                                             lipsync_models):
    """TAESD and 2 steps, as tests/test_workflows.py runs the other graphs; the file checked is the one VHS
    reports last (its -audio.mp4)."""
    prompt = cpu_friendly(load_prompt(WORKFLOW, object_info))
    combine, sampler = node_id(prompt, "VHS_VideoCombine"), node_id(prompt, "LatentSyncSampler")
    assert prompt[combine]["inputs"]["format"] == "video/h264-mp4" and prompt[combine]["inputs"]["crf"] == 19
    assert prompt[sampler]["inputs"]["preset"] == "custom"
    prompt[sampler]["inputs"]["preset"] = "fast"  # replaces the scheduler, steps and DeepCache widgets
    history = comfy_server.run(prompt, timeout=1200)
    assert history["status"]["status_str"] == "success", failure(history)
    (summary,) = history["outputs"][sampler]["latentsync_sampler"]
    assert summary["frames"] == DEMO_FRAMES and summary["generated"] > 0
    assert summary["preset"] == "fast"
    assert {k: summary["settings"][k] for k in ("scheduler", "steps", "deepcache_interval", "guidance")} == \
        {"scheduler": "dpmpp_2m", "steps": 10, "deepcache_interval": 3, "guidance": 1.5}
    (saved,) = history["outputs"][combine]["gifs"]
    assert saved["filename"].endswith("-audio.mp4") and saved["format"] == "video/h264-mp4"
    with av.open(saved["fullpath"]) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264"
        assert sum(1 for _ in container.decode(video)) == DEMO_FRAMES
        voice_seconds = DEMO_FRAMES / 25  # write_lipsync_inputs cuts the voice to the clip's length
        assert float(audio.duration * audio.time_base) == pytest.approx(voice_seconds, abs=0.05)


def test_the_sampler_refuses_a_meta_batch_by_name(comfy_server, object_info, lipsync_inputs, lipsync_models):
    """Meta Batch Manager feeding Load Video and Video Combine: the sampler stops with the way out, instead of
    lip-syncing every batch to the start of the voice."""
    prompt = cpu_friendly(load_prompt(WORKFLOW, object_info))
    prompt["900"] = {"class_type": "VHS_BatchManager", "inputs": {"frames_per_batch": 8}}
    for loader in ("VHS_LoadVideo", "VHS_VideoCombine"):
        prompt[node_id(prompt, loader)]["inputs"]["meta_batch"] = ["900", 0]
    history = comfy_server.run(prompt, timeout=1200)
    assert history["status"]["status_str"] == "error"
    (error,) = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert error["node_type"] == "LatentSyncSampler", error
    assert "Meta Batch Manager" in error["exception_message"]
    assert "latentsync_long_video.json" in error["exception_message"]


@pytest.mark.browser
@pytest.mark.parametrize("name", [name for name in WORKFLOWS if needs_vhs(name)])
def test_vhs_workflow_loads_in_the_editor_and_exports_like_our_converter(editor, object_info, name):
    assert_loads_and_exports_like_our_converter(editor, object_info, name)
    painted_red = editor.evaluate("() => window.app.graph._nodes.filter(n => n.bgcolor === '#C00').map(n => n.type)")
    assert painted_red == []  # VHS's mark for a node whose saved widgets it could not restore
