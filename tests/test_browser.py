"""The graph editor in a real Chromium (Debian's, driven by Playwright): the shipped workflows load,
queue, and the VAD timeline widget draws the detected segments."""
import json
import shutil
import time
from pathlib import Path

import pytest

from conftest import REPO, comfyui, missing, shared_path
from latentsync.media.audio import load_audio
from latentsync.audio.vad import detect_speech

pytestmark = [pytest.mark.comfyui, pytest.mark.browser]

SPEECH_GREEN = (0x26, 0x70, 0x4A)
BACKGROUND = (0x18, 0x18, 0x1C)


@pytest.fixture(scope="module")
def editor(comfy_server, tmp_path_factory):
    playwright_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        missing("Debian's chromium (apt-get install chromium)")
    comfy_server.request("POST", "/settings/Comfy.TutorialCompleted", True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=comfyui.CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.errors = []
        page.on("pageerror", lambda err: page.errors.append(str(err)))
        page.goto(comfy_server.url)
        page.wait_for_selector("canvas#graph-canvas", timeout=300_000)
        page.wait_for_function("() => window.app?.graph && window.LiteGraph?.registered_node_types?.LatentSyncVAD")
        yield page
        browser.close()


def load_workflow(page, name: str) -> dict:
    workflow = json.loads((REPO / "workflows" / name).read_text())
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    return workflow


def needs_vhs(name: str) -> bool:
    """Workflows with VideoHelperSuite nodes load in tests/test_vhs.py's server, the only one with VHS."""
    return any(n["type"].startswith("VHS_") for n in json.loads((REPO / "workflows" / name).read_text())["nodes"])


WORKFLOWS = sorted(p.name for p in (REPO / "workflows").glob("*.json"))


@pytest.mark.parametrize("name", [name for name in WORKFLOWS if not needs_vhs(name)])
def test_workflow_loads_without_missing_nodes_and_exports_like_our_converter(editor, object_info, name):
    assert_loads_and_exports_like_our_converter(editor, object_info, name)


def assert_loads_and_exports_like_our_converter(editor, object_info: dict, name: str) -> None:
    import comfyui

    workflow = load_workflow(editor, name)
    editor.wait_for_timeout(500)  # the editor reports schema problems in a toast, asynchronously
    assert editor.get_by_text("Invalid workflow").count() == 0, "the editor's schema check rejected the file"
    registered = editor.evaluate("() => Object.keys(LiteGraph.registered_node_types)")
    assert {node["type"] for node in workflow["nodes"]} <= set(registered)
    loaded = editor.evaluate("() => window.app.graph._nodes.map(n => [n.id, n.type, n.has_errors ?? false])")
    assert sorted(loaded) == sorted([n["id"], n["type"], False] for n in workflow["nodes"])
    exported = editor.evaluate("async () => (await window.app.graphToPrompt()).output")
    ours = comfyui.workflow_to_prompt(workflow, object_info)
    assert set(exported) == set(ours)
    for node_id, node in ours.items():
        assert exported[node_id]["class_type"] == node["class_type"]
        spec = object_info[node["class_type"]]["input"]
        # Declared inputs, and the widgets a frontend adds that ours exports too (VHS Video Combine's per format).
        kept = {*spec.get("required", {}), *spec.get("optional", {}), *node["inputs"]}
        assert {k: v for k, v in exported[node_id]["inputs"].items() if k in kept} == node["inputs"]


def test_a_workflow_saved_before_whisper_encode_lost_its_speech_policy_is_moved_to_the_sampler(editor):
    """Widget values are saved by position: an old Whisper Encode's two removed values would shift the rest.
    js/migrations.js takes them out and hands a "silence" policy to the sampler it feeds."""
    workflow = json.loads((REPO / "workflows" / "latentsync_basic.json").read_text())
    (whisper,) = [n for n in workflow["nodes"] if n["type"] == "LatentSyncWhisperEncode"]
    (sampler,) = [n for n in workflow["nodes"] if n["type"] == "LatentSyncSampler"]
    new_values = list(whisper["widgets_values"])
    whisper["widgets_values"] = new_values[:3] + ["silence", 5] + new_values[3:]
    whisper["inputs"] += [{"localized_name": name, "name": name, "type": kind, "widget": {"name": name}}
                          for name, kind in (("speech_policy", "COMBO"), ("crossfade_frames", "INT"))]
    editor.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    state = editor.evaluate("""(ids) => ids.map(id => { const n = window.app.graph.getNodeById(id);
        return [Object.fromEntries(n.widgets.filter(w => w.serialize !== false).map(w => [w.name, w.value])),
                n.inputs.map(i => i.name)]; })""", [whisper["id"], sampler["id"]])
    (whisper_widgets, whisper_inputs), (sampler_widgets, _) = state
    assert list(whisper_widgets.values()) == new_values
    assert not {"speech_policy", "crossfade_frames"} & set(whisper_inputs)
    assert sampler_widgets["vad_policy"] == "silence" and sampler_widgets["crossfade_frames"] == 5
    # The file as shipped (new values) is left as it is.
    load_workflow(editor, "latentsync_basic.json")
    widgets = editor.evaluate("""(id) => window.app.graph.getNodeById(id).widgets
        .filter(w => w.serialize !== false).map(w => w.value)""", whisper["id"])
    assert widgets == new_values
    vad_policy = editor.evaluate("""(id) => window.app.graph.getNodeById(id).widgets
        .find(w => w.name === 'vad_policy').value""", sampler["id"])
    assert vad_policy == "off"


def test_vad_workflow_runs_and_the_timeline_draws_the_segments(editor, comfy_server, artifacts):
    workflow = load_workflow(editor, "vad_preview.json")
    (loader,) = [n for n in workflow["nodes"] if n["type"] == "LoadAudio"]
    wav = shared_path("media/latentsync_demo1_audio.wav")
    shutil.copy(wav, comfy_server.dir("input") / loader["widgets_values"][0])
    expected = detect_speech(*load_audio(wav)).to_json()["speech"]

    editor.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    handle = editor.wait_for_function(
        """() => { const node = window.app.graph._nodes.find(n => n.type === 'LatentSyncVAD');
                   const widget = node?.widgets?.find(w => w.name === 'speech_timeline');
                   return widget?.canvas?.dataset.segments || null; }""", timeout=300_000)
    assert json.loads(handle.json_value()) == expected

    # Read back what the canvas shows: green inside a segment, background in the longest gap. Rows are
    # picked clear of the waveform and of the probability line (near the top in speech, the bottom in gaps).
    duration = detect_speech(*load_audio(wav)).duration
    gaps = [(a[1], b[0]) for a, b in zip(expected, expected[1:])]
    gap = max(gaps, key=lambda g: g[1] - g[0])
    first = expected[0]
    pixels = editor.evaluate(
        """([inSpeech, inGap]) => {
             const node = window.app.graph._nodes.find(n => n.type === 'LatentSyncVAD');
             const canvas = node.widgets.find(w => w.name === 'speech_timeline').canvas;
             const ctx = canvas.getContext('2d'), ratio = window.devicePixelRatio || 1;  // as draw() scales
             // the row above the caption, in the drawing's own size (the element may have been resized since)
             const bottom = canvas.height - Math.round(17 * ratio);
             const at = (x, y) => Array.from(ctx.getImageData(Math.round(x * canvas.width), y, 1, 1).data);
             return [at(inSpeech, bottom), at(inGap, 1)]; }""",
        [(first[0] + first[1]) / 2 / duration, (gap[0] + gap[1]) / 2 / duration])
    inside, outside = pixels
    assert all(abs(a - b) <= 8 for a, b in zip(inside[:3], SPEECH_GREEN)), inside
    assert all(abs(a - b) <= 8 for a, b in zip(outside[:3], BACKGROUND)), outside
    editor.screenshot(path=str(Path(artifacts) / "vad_preview_editor.png"))
    assert not [e for e in editor.errors if "latentsync" in e.lower() or "vad_timeline" in e]


def test_basic_lipsync_workflow_queues_from_the_editor(editor, comfy_server, lipsync_inputs, lipsync_models, artifacts):
    from media import cut_clip, cut_voice

    # A 4-frame cut of the clip, TAESD for the SD VAE and 2 steps, set in the editor as a user would: this run is
    # about queueing from the editor (tests/test_workflows.py runs the graph with the full VAE).
    video, voice = "editor_demo_4.mp4", "editor_voice_4.wav"
    cut_clip(shared_path("media/latentsync_demo1_video.mp4"), comfy_server.dir("input") / video, 4, 720)
    cut_voice(shared_path("media/latentsync_demo1_audio.wav"), comfy_server.dir("input") / voice, 4 / 25)
    load_workflow(editor, "latentsync_basic.json")
    editor.evaluate("""([video, voice]) => {
                           const widget = (type, name) => window.app.graph._nodes.find(n => n.type === type)
                                                              .widgets.find(w => w.name === name);
                           widget('LoadVideo', 'file').value = video;
                           widget('LoadAudio', 'audio').value = voice;
                           widget('VAELoader', 'vae_name').value = 'taesd';
                           widget('LatentSyncSampler', 'steps').value = 2; }""", [video, voice])
    before = set(comfy_server.get("/history"))
    editor.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    deadline = time.monotonic() + 1200
    while time.monotonic() < deadline:
        new = set(comfy_server.get("/history")) - before
        if new:
            break
        time.sleep(1)
    (prompt_id,) = new
    entry = comfy_server.get(f"/history/{prompt_id}")[prompt_id]
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"][-1]
    assert any(f["filename"].endswith(".mp4") for out in entry["outputs"].values() for f in out.get("images", []))
    editor.wait_for_function("""() => window.app.graph._nodes.some(n => n.type === 'LatentSyncSampler'
                                  && n.widgets?.some(w => w.name === 'latentsync_report'))""", timeout=300_000)
    editor.screenshot(path=str(Path(artifacts) / "latentsync_basic_editor.png"))


def test_a_mapping_typed_in_the_editor_is_saved_with_the_workflow_and_sent_in_the_prompt(editor):
    """Assign Faces to Speakers keeps its mapping as a widget value: typed in the editor, it is in the saved
    workflow, comes back when that file is opened again, and is what the prompt sends."""
    workflow = load_workflow(editor, "latentsync_two_speakers.json")
    (assign,) = [n for n in workflow["nodes"] if n["type"] == "LatentSyncAssignFaces"]
    typed = "A + C = voice 2\nB = none"
    saved = editor.evaluate("""([id, text]) => {
        const node = window.app.graph.getNodeById(id);
        node.widgets.find(w => w.name === 'mapping').value = text;
        return window.app.graph.serialize(); }""", [assign["id"], typed])
    (node,) = [n for n in saved["nodes"] if n["id"] == assign["id"]]
    assert typed in node["widgets_values"]
    load_workflow(editor, "latentsync_basic.json")  # something else in between
    editor.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", saved)
    shown = editor.evaluate("""(id) => window.app.graph.getNodeById(id).widgets
        .find(w => w.name === 'mapping').value""", assign["id"])
    assert shown == typed
    exported = editor.evaluate("async () => (await window.app.graphToPrompt()).output")
    assert exported[str(assign["id"])]["inputs"]["mapping"] == typed


def test_a_node_report_shows_every_line_and_comes_back_from_the_node_properties(editor):
    """js/node_reports.js: the report element is as high as its lines (none cut off), the last report is kept in
    the node's properties, and it is shown again when the workflow is loaded again (a reload) and when a run is
    served from cache (ComfyUI sends no UI output then for a node that is not an output node)."""
    workflow = load_workflow(editor, "latentsync_two_speakers.json")
    (detect,) = [n for n in workflow["nodes"] if n["type"] == "LatentSyncDetectFaces"]
    assert not any("latentsync_report" in n.get("properties", {}) for n in workflow["nodes"])
    measure = """async (id) => {
        const node = window.app.graph.getNodeById(id);
        window.app.canvas.centerOnNode?.(node);
        window.app.canvas.setDirty(true, true);
        await new Promise(r => setTimeout(r, 600));  // the DOM widget is placed on the next frames
        const widget = node.widgets?.find(w => w.name === 'latentsync_report');
        const el = widget?.element;
        return el ? {text: el.textContent, lines: el.textContent.split('\\n').length, scroll: el.scrollHeight,
                     client: el.clientHeight, stored: node.properties?.latentsync_report?.text ?? null} : null; }"""
    report = {"frames_with_face": 97, "frames": 100, "resolution": 256, "detector": "auto", "smoothing": True,
              "tracks": ["A", "B"], "warnings": ["3 frames have no face: they are passed through unchanged"]}
    editor.evaluate("""([id, data]) => window.app.graph.getNodeById(id)
        .onExecuted({latentsync_faces: [data]})""", [detect["id"], report])
    shown = editor.evaluate(measure, detect["id"])
    assert shown["lines"] == 3 and shown["stored"] == shown["text"], shown
    assert shown["client"] >= 3 * 16 and shown["scroll"] <= shown["client"] + 1, shown

    # Saved with the run's report, then opened again (what a page reload does): the report is back, whole.
    saved = editor.evaluate("() => window.app.graph.serialize()")
    load_workflow(editor, "latentsync_two_speakers.json")
    assert editor.evaluate(measure, detect["id"]) is None  # the shipped file has no report
    editor.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", saved)
    again = editor.evaluate(measure, detect["id"])
    assert again["text"] == shown["text"] and again["scroll"] <= again["client"] + 1, again

    # A run served from cache: only `execution_cached` arrives; a blanked element gets the stored report again.
    cached = editor.evaluate("""async (id) => {
        const node = window.app.graph.getNodeById(id);
        node.widgets.find(w => w.name === 'latentsync_report').element.textContent = '';
        window.app.api.dispatchCustomEvent('execution_cached', {nodes: [String(id)], prompt_id: 'x'});
        return node.widgets.find(w => w.name === 'latentsync_report').element.textContent; }""", detect["id"])
    assert cached == shown["text"]
    # Display only: the saved node keeps the shipped widget values, and only gains the report property.
    (saved_detect,) = [n for n in saved["nodes"] if n["id"] == detect["id"]]
    assert saved_detect["widgets_values"] == detect["widgets_values"]
    assert saved_detect["properties"]["latentsync_report"]["data"] == report
