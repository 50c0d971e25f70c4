"""The shipped workflows as files and in the editor: every link record matches the nodes it joins and their
schemas; in the pinned frontend and the newest one on PyPI, in the classic canvas and in Nodes 2.0, each loads
without an error, exports what our converter makes, and no two nodes overlap, before or after a run (the room a
run's previews and reports take: scripts/layout.py's after_run_height); and, in all four, the sampler's live
previews and its window/step/time-left text reach the node over ComfyUI's websocket and are shown there."""
import json
import shutil
import time

import pytest

from conftest import REPO, comfyui, missing
from scripts import layout
from test_browser import needs_vhs
from test_workflows import poc_models  # noqa: F401  (a fixture: the SyncNet and upscaler files the runs need)

WORKFLOWS = sorted(p.name for p in (REPO / "workflows").glob("*.json"))


def read(name: str) -> dict:
    return json.loads((REPO / "workflows" / name).read_text())


def declared_type(spec) -> str:
    kind = spec[0]
    return "COMBO" if isinstance(kind, list) else kind


def link_problems(workflow: dict, object_info: dict) -> list[str]:
    """Every way the links of `workflow` disagree with its nodes' input and output lists or their schemas."""
    nodes, problems = {n["id"]: n for n in workflow["nodes"]}, []
    records = {}
    for record in workflow["links"]:
        link_id, origin, origin_slot, target, target_slot, kind = record
        records[link_id] = record
        where = f"link {record}"
        if origin not in nodes or target not in nodes:
            problems.append(f"{where}: names a node that is not there")
            continue
        source, sink = nodes[origin], nodes[target]
        outputs, inputs = source.get("outputs", []), sink.get("inputs", [])
        if not 0 <= origin_slot < len(outputs) or link_id not in (outputs[origin_slot].get("links") or []):
            problems.append(f"{where}: output {origin_slot} of {source['type']} does not list it")
        elif outputs[origin_slot]["type"] not in (kind, "*"):
            problems.append(f"{where}: output {origin_slot} of {source['type']} is {outputs[origin_slot]['type']}")
        if not 0 <= target_slot < len(inputs) or inputs[target_slot].get("link") != link_id:
            names = [i["name"] for i in inputs if i.get("link") == link_id]
            problems.append(f"{where}: input {target_slot} of {sink['type']} is not it (it is {names})")
            continue
        name = inputs[target_slot]["name"]
        if inputs[target_slot]["type"] not in (kind, "*"):
            problems.append(f"{where}: input {name} of {sink['type']} is {inputs[target_slot]['type']}")
        if sink["type"] in object_info:
            spec = {**object_info[sink["type"]]["input"].get("required", {}),
                    **object_info[sink["type"]]["input"].get("optional", {})}
            if name not in spec:
                problems.append(f"{where}: {sink['type']} declares no input {name}")
            elif declared_type(spec[name]) not in (kind, "*"):
                problems.append(f"{where}: {sink['type']}.{name} is {declared_type(spec[name])}, not {kind}")
        if source["type"] in object_info:
            declared = object_info[source["type"]]["output"]
            if origin_slot >= len(declared) or declared[origin_slot] not in (kind, "*"):
                problems.append(f"{where}: {source['type']} output {origin_slot} is not {kind} in its schema")
    for node in workflow["nodes"]:
        for slot in node.get("inputs", []):
            if slot.get("link") is not None and slot["link"] not in records:
                problems.append(f"node {node['id']} input {slot['name']}: link {slot['link']} has no record")
        for slot in node.get("outputs", []):
            for link_id in slot.get("links") or []:
                if link_id not in records:
                    problems.append(f"node {node['id']} output {slot['name']}: link {link_id} has no record")
    return problems


@pytest.mark.comfyui
@pytest.mark.parametrize("name", WORKFLOWS)
def test_every_link_record_matches_the_slots_and_schemas_of_the_nodes_it_joins(object_info, name):
    assert link_problems(read(name), object_info) == []


def test_the_link_check_names_a_record_that_points_at_the_wrong_slot():
    workflow = read("latentsync_poc_scheduler.json")
    (fps,) = [link for link in workflow["links"] if link[3] == 10 and link[5] == "FLOAT"]
    fps[4] = 2  # the record of the bug: fps is input 4 of SyncNet Score, not 2 (faces)
    assert any("input 2 of LatentSyncSyncNetScore is not it" in p for p in link_problems(workflow, {}))


def test_the_layout_gives_every_group_its_own_room_and_keeps_the_nodes_inside():
    workflow = read("latentsync_two_speakers.json")
    boxes = [g["bounding"] for g in workflow["groups"]]
    assert {g["title"] for g in workflow["groups"]} >= {"Inputs", "Voice", "Model", "Sampler", "Output"}
    assert not overlapping({i: (*b, "group") for i, b in enumerate(boxes)})
    for node in workflow["nodes"]:
        (group,) = [g for g in workflow["groups"] if g["title"] == layout.group_of(node["type"])]
        x, y, w, h = group["bounding"]
        assert x <= node["pos"][0] and node["pos"][0] + node["size"][0] <= x + w, node["type"]
        assert y <= node["pos"][1] - layout.TITLE <= y + h, node["type"]


def overlapping(rects: dict, scale: float | None = None) -> list[tuple]:
    """Pairs of ids whose rectangles [x, y, w, h, type] intersect; with `scale` (screen pixels per graph unit),
    once each has the height its run output gives it (scripts/layout.py's `after_run_height`)."""
    def height(h, kind):
        return h if scale is None else layout.after_run_height(kind, h / scale) * scale

    boxes = {k: (x, y, x + w, y + height(h, t)) for k, (x, y, w, h, t) in rects.items()}
    keys = sorted(boxes)
    return [(a, rects[a][4], b, rects[b][4]) for i, a in enumerate(keys) for b in keys[i + 1:]
            if boxes[a][0] < boxes[b][2] and boxes[b][0] < boxes[a][2]
            and boxes[a][1] < boxes[b][3] and boxes[b][1] < boxes[a][3]]


# The node rectangles on screen: Nodes 2.0 nodes are DOM elements (their real size); classic nodes are drawn on
# the canvas at their bounding rectangle. Fitted first, so that every node is on screen (and rendered).
_RECTS = """async (vue) => {
    const canvas = window.app.canvas, graph = window.app.graph;
    const bounds = graph._nodes.map(n => n.boundingRect);
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const [x, y, w, h] of bounds) { x0 = Math.min(x0, x); y0 = Math.min(y0, y);
                                         x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h); }
    canvas.ds.fitToBounds([x0 - 40, y0 - 40, x1 - x0 + 80, y1 - y0 + 600], {zoom: 1});
    canvas.setDirty(true, true);
    for (let i = 0; i < 3; i++) await new Promise(r => requestAnimationFrame(r));
    await new Promise(r => setTimeout(r, 200));
    const el = canvas.canvas.getBoundingClientRect(), scale = canvas.ds.scale, out = {};
    for (const n of graph._nodes) {
        const dom = document.querySelector(`[data-node-id="${n.id}"]`);
        if (vue) {
            if (!dom) return {missing: n.id};
            const b = dom.getBoundingClientRect();
            out[n.id] = [b.left - el.left, b.top - el.top, b.width, b.height, n.type];
        } else {
            const [x, y, w, h] = n.boundingRect;
            out[n.id] = [(x + canvas.ds.offset[0]) * scale, (y + canvas.ds.offset[1]) * scale, w * scale, h * scale,
                         n.type];
        }
    }
    return {rects: out, scale}; }"""


def open_page(playwright, server):
    chromium = shutil.which("chromium")
    browser = playwright.chromium.launch(executable_path=chromium, args=comfyui.CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1800, "height": 1200})
    page.errors, page.console = [], []
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    page.on("console", lambda m: page.console.append(m.text) if m.type in ("error", "warning") else None)
    page.goto(server.url)
    page.wait_for_selector("canvas#graph-canvas", timeout=300_000)
    page.wait_for_function("() => window.app?.graph && window.LiteGraph?.registered_node_types?.LatentSyncVAD")
    return browser, page


@pytest.fixture(scope="module")
def newest_server(comfyui_dir, tmp_path_factory):
    """A second ComfyUI serving the newest frontend on PyPI (--front-end-root), with VideoHelperSuite, so that every
    shipped workflow loads there."""
    try:
        front_end = comfyui.install_frontend()
    except Exception as error:  # noqa: BLE001 - no registry reachable: a developer machine offline
        missing(f"comfyui-frontend-package=={comfyui.NEWEST_FRONTEND} ({error})")
    server = comfyui.ComfyServer(comfyui_dir, tmp_path_factory.mktemp("comfyui-newest"), REPO, front_end_root=front_end,
                                 preview_method="auto")  # the latent-to-RGB approximation (the pinned one: TAESD)
    try:
        comfyui.install_vhs(server.dir("custom_nodes"))
    except FileNotFoundError as error:
        missing(str(error))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pages(comfy_server, newest_server):
    playwright_api = pytest.importorskip("playwright.sync_api")
    if shutil.which("chromium") is None:
        missing("Debian's chromium (apt-get install chromium)")
    from scripts import thumbnails

    for server in (comfy_server, newest_server):
        thumbnails.prepare_server(server)
    with playwright_api.sync_playwright() as p:
        opened = {"pinned": open_page(p, comfy_server), "newest": open_page(p, newest_server)}
        yield {name: page for name, (_, page) in opened.items()}
        for browser, _ in opened.values():
            browser.close()


def assert_exports_like_our_converter(page, object_info: dict, workflow: dict) -> None:
    """As tests/test_browser.py checks on the pinned frontend's classic canvas."""
    exported = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    ours = comfyui.workflow_to_prompt(workflow, object_info)
    assert set(exported) == set(ours)
    for node_id, node in ours.items():
        spec = object_info[node["class_type"]]["input"]
        kept = {*spec.get("required", {}), *spec.get("optional", {}), *node["inputs"]}
        assert exported[node_id]["class_type"] == node["class_type"]
        assert {k: v for k, v in exported[node_id]["inputs"].items() if k in kept} == node["inputs"], node_id


def has_types(page, workflow: dict) -> bool:
    return page.evaluate("(types) => types.every(t => t in LiteGraph.registered_node_types)",
                         sorted({n["type"] for n in workflow["nodes"]}))


# Console lines of the editor itself that say nothing about a workflow: the newest frontend's calls to an API this
# backend lacks (/api/jobs), missing optional files (user.css), the pinned frontend's toggle of the renderer.
_UNRELATED = ("Failed to load resource", "Jobs API", "Failed to fetch queue", "Content Security Policy",
              "is deprecated", "internal module", "legacy queue", "reading 'id'")


@pytest.mark.comfyui
@pytest.mark.browser
@pytest.mark.parametrize("front_end", ["pinned", "newest"])
@pytest.mark.parametrize("renderer", ["classic", "nodes2"])
def test_every_workflow_loads_cleanly_exports_like_our_converter_and_no_nodes_overlap(pages, object_info, front_end,
                                                                                       renderer):
    page, vue = pages[front_end], renderer == "nodes2"
    page.evaluate("async (vue) => { await window.app.extensionManager.setting.set('Comfy.VueNodes.Enabled', vue); }",
                  vue)
    page.wait_for_timeout(300)
    checked, problems = [], {}
    for name in WORKFLOWS:
        workflow = read(name)
        if not has_types(page, workflow):
            continue  # VideoHelperSuite's nodes: only the newest frontend's server has them
        page.errors.clear(), page.console.clear()
        page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
        page.wait_for_timeout(500)  # the editor reports schema problems in a toast, asynchronously
        assert page.get_by_text("Invalid workflow").count() == 0, f"{name}: the editor's schema check rejected it"
        loaded = page.evaluate("() => window.app.graph._nodes.map(n => [Number(n.id), n.type])")
        assert sorted(loaded) == sorted([n["id"], n["type"]] for n in workflow["nodes"]), name
        if not any(n["type"].startswith("VHS_") for n in workflow["nodes"]):  # VHS: tests/test_vhs.py
            assert_exports_like_our_converter(page, object_info, workflow)
        logged = [line for line in page.console + page.errors if not any(u in line for u in _UNRELATED)]
        measured = page.evaluate(_RECTS, vue)
        assert "missing" not in measured, f"{name}: node {measured.get('missing')} has no Nodes 2.0 element"
        before, after = overlapping(measured["rects"]), overlapping(measured["rects"], measured["scale"])
        if logged or after:
            problems[name] = {"logged": logged, "overlap": before, "overlap after a run": after}
        checked.append(name)
    assert len(checked) >= len(WORKFLOWS) - (front_end == "pinned"), checked
    assert problems == {}, json.dumps(problems, indent=1)



# What the editor does with the sampler's websocket messages, recorded after its own handlers ran (listeners run in
# the order they were added): each preview's node, type and size and whether the editor holds it as the node's
# preview; each progress text and the value of the node's text widget then; and, on every DOM change, whether a step's
# text and a preview picture are on screen (Nodes 2.0 nodes are DOM elements; the classic canvas draws the picture
# itself and shows the text in a DOM widget over it).
_WATCH = """async (sampler) => {
    const { api } = await import('/scripts/api.js');
    window.__watched = { previews: [], texts: [], dom: { text: null, picture: false } };
    window.__sampler = sampler;
    if (window.__watching) return;
    window.__watching = true;
    api.addEventListener('b_preview_with_metadata', async ({ detail }) => {
        const held = window.app.nodePreviewImages?.[detail.displayNodeId] ?? [];
        const entry = { node: String(detail.displayNodeId), type: detail.blob.type, held: held.length };
        window.__watched.previews.push(entry);
        const bitmap = await createImageBitmap(detail.blob);
        entry.size = [bitmap.width, bitmap.height];
    });
    api.addEventListener('progress_text', ({ detail }) => {
        const node = window.app.graph.getNodeById(Number(detail.nodeId));
        const widget = node?.widgets?.find(w => w.name === '$$node-text-preview');
        window.__watched.texts.push({ node: String(detail.nodeId), text: detail.text, shown: widget?.value ?? null });
    });
    new MutationObserver(() => {
        const vue = document.querySelector(`[data-node-id="${window.__sampler}"]`);
        const text = (vue ?? document.body).textContent.match(/window \\d+\\/\\d+, step \\d+\\/\\d+, [a-z0-9: ]*left/);
        if (text && !window.__watched.dom.text) window.__watched.dom.text = text[0];
        if (vue && [...vue.querySelectorAll('img')].some(i => i.src.startsWith('blob:')))
            window.__watched.dom.picture = true;
    }).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
    }"""


@pytest.fixture(scope="module")
def preview_servers(comfy_server, newest_server, lipsync_models, tiny_unet_config):
    """Both servers with the random-weight models and a 4-frame cut of the clip and its voice."""
    from conftest import shared_path
    from media import cut_clip, cut_voice
    from scripts.model_files import write_lipsync_models

    write_lipsync_models(newest_server.dir("models"), tiny_unet_config)
    for server in (comfy_server, newest_server):
        cut_clip(shared_path("media/latentsync_demo1_video.mp4"), server.dir("input") / "preview_4.mp4", 4, 720)
        cut_voice(shared_path("media/latentsync_demo1_audio.wav"), server.dir("input") / "preview_4.wav", 4 / 25)
    return {"pinned": comfy_server, "newest": newest_server}


@pytest.mark.comfyui
@pytest.mark.browser
@pytest.mark.parametrize(("front_end", "renderer", "seed"), [("pinned", "classic", 1), ("pinned", "nodes2", 2),
                                                             ("newest", "classic", 3), ("newest", "nodes2", 4)])
def test_the_editor_shows_every_steps_preview_and_the_time_left_on_the_sampler(pages, preview_servers, front_end,
                                                                               renderer, seed):
    """latentsync_basic queued from the editor (2 steps, one window; a seed of its own, so that no run is served from
    the cache): the pinned server previews with TAESD, the newest with the latent-to-RGB approximation."""
    page, server, vue = pages[front_end], preview_servers[front_end], renderer == "nodes2"
    page.evaluate("async (vue) => { await window.app.extensionManager.setting.set('Comfy.VueNodes.Enabled', vue); }",
                  vue)
    workflow = read("latentsync_basic.json")
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    (sampler,) = [str(n["id"]) for n in workflow["nodes"] if n["type"] == "LatentSyncSampler"]
    page.evaluate("""(seed) => {
        const widget = (type, name) => window.app.graph._nodes.find(n => n.type === type)
                                           .widgets.find(w => w.name === name);
        widget('LoadVideo', 'file').value = 'preview_4.mp4';
        widget('LoadAudio', 'audio').value = 'preview_4.wav';
        widget('VAELoader', 'vae_name').value = 'taesd';
        widget('LatentSyncSampler', 'steps').value = 2;
        widget('LatentSyncSampler', 'seed').value = seed; }""", seed)
    page.evaluate(_WATCH, sampler)
    before = set(server.get("/history"))
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    deadline, new = time.monotonic() + 600, set()
    while not new and time.monotonic() < deadline:
        time.sleep(0.5)
        new = set(server.get("/history")) - before
    (prompt_id,) = new
    entry = server.get(f"/history/{prompt_id}")[prompt_id]
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"][-1]
    page.wait_for_function("() => window.__watched.previews.every(p => p.size)")
    watched = page.evaluate("() => window.__watched")
    steps = ["window 1/1, step 1/2, estimating time left", "window 1/1, step 2/2, 0:00 left"]
    assert watched["texts"] == [{"node": sampler, "text": text, "shown": text} for text in steps]
    previews = watched["previews"]
    assert len(previews) == len(steps), previews
    assert all(p["node"] == sampler and p["type"] == "image/jpeg" and p["held"] == 1 for p in previews), previews
    assert all(p["size"][0] == p["size"][1] > 0 for p in previews), previews  # a face: square
    if vue:
        assert watched["dom"]["picture"], "the Nodes 2.0 sampler never showed a preview picture"
    if not (vue and front_end == "pinned"):  # the pinned frontend's Nodes 2.0 (a beta there) draws no progress text
        assert watched["dom"]["text"] == steps[0], watched["dom"]



# Every shipped workflow runs for real once (1 step, TAESD and tests/test_workflows.py's other CPU-friendly values), on
# the shortest input it needs: 4 frames; the 24-frame cut where SyncNet needs speech (the PoC graphs: their shared
# samplers come from ComfyUI's cache) and where the graph loads its own names only (VideoHelperSuite's, on the
# newest server, the one with VHS); 16 frames of two people.
RUN = {name: "4" for name in ("latentsync_basic.json", "latentsync_long_video.json", "latentsync_many_voices.json",
                              "latentsync_upscale.json", "latentsync_vad_ab.json")}
RUN.update({name: None for name in ("vad_preview.json", "latentsync_poc_vad_ab.json", "latentsync_poc_quant.json",
                                    "latentsync_poc_scheduler.json", "latentsync_two_speakers.json",
                                    "latentsync_vhs.json")})
TWO_FRAMES, TWO_SCRIPT = 16, ((1, 0.0, 0.3), (2, 0.34, 0.64))
VOICE_B = "latentsync_demo_voice_b.wav"  # latentsync_many_voices' second voice
SHORT = {"latentsync_demo.mp4": "preview_4.mp4", "latentsync_demo_voice.wav": "preview_4.wav",
         VOICE_B: "preview_4_b.wav"}  # the 4-frame cuts (preview_servers writes the first two)


def _files(output) -> list[tuple[str, str, str]]:
    """(type, subfolder, filename) of every file a node's UI output names."""
    if isinstance(output, dict):
        if "filename" in output and "type" in output:
            return [(output["type"], output.get("subfolder", ""), output["filename"])]
        return [f for value in output.values() for f in _files(value)]
    if isinstance(output, list):
        return [f for value in output for f in _files(value)]
    return []


@pytest.fixture(scope="module")
def real_runs(comfy_server, newest_server, object_info, preview_servers, poc_models):  # noqa: F811
    """{workflow: {node id: UI output}} from real runs of RUN, with every file they name copied to the other server
    too. The editors load the workflows' own input names (their previews), so both servers have them."""
    from conftest import shared_path, write_lipsync_inputs
    from media import cut_voice, write_clip
    from test_workflows import cpu_friendly, failure, load_prompt
    from two_people import stems, two_person_frames, write_wav

    for server in (comfy_server, newest_server):
        write_lipsync_inputs(server)
        cut_voice(shared_path("media/latentsync_demo3_audio.wav"), server.dir("input") / SHORT[VOICE_B], 4 / 25)
        write_clip(server.dir("input") / "latentsync_two_people.mp4", two_person_frames(TWO_FRAMES), 25)
        for number, samples in stems(TWO_FRAMES / 25, TWO_SCRIPT).items():
            write_wav(server.dir("input") / f"latentsync_speaker_{number}.wav", samples)
    runs, newest_info = {}, newest_server.get("/object_info")
    for name, inputs in RUN.items():
        server, other, info = (newest_server, comfy_server, newest_info) if needs_vhs(name) else \
            (comfy_server, newest_server, object_info)
        prompt = cpu_friendly(load_prompt(name, info))
        for node in prompt.values():  # one step: what a run shows takes the same room after 1 step as after 20
            if "steps" in node["inputs"] and node["class_type"].startswith("LatentSync"):
                node["inputs"]["steps"] = 1
        if inputs == "4":
            for node in prompt.values():
                if node["class_type"] in ("LoadVideo", "LoadAudio"):
                    key = "file" if node["class_type"] == "LoadVideo" else "audio"
                    node["inputs"][key] = SHORT[node["inputs"][key]]
        history = server.run(prompt, timeout=1200)
        assert history["status"]["status_str"] == "success", f"{name}: {failure(history)}"
        runs[name] = history["outputs"]
        for kind, sub, filename in _files(history["outputs"]):
            target = other.dir(kind) / sub / filename
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(server.dir(kind) / sub / filename, target)
    return runs


_REPLAY = """async (outputs) => {
    const { api } = await import('/scripts/api.js');
    for (const [node, output] of Object.entries(outputs))
        api.dispatchCustomEvent('executed', { node, display_node: node, output, prompt_id: 'run' }); }"""


# Every picture and video on the page has loaded (a video: its size is known).
_LOADED = """() => [...document.querySelectorAll('video')].every(v => v.readyState >= 1)
                 && [...document.images].every(i => i.complete)"""


@pytest.mark.comfyui
@pytest.mark.browser
@pytest.mark.parametrize("front_end", ["pinned", "newest"])
@pytest.mark.parametrize("renderer", ["classic", "nodes2"])
def test_after_a_real_run_no_nodes_overlap_and_none_keeps_growing(pages, real_runs, front_end, renderer):
    """Each real run's outputs reach the editor as ComfyUI sends them (an `executed` message per node, through the
    frontend's own handler): reports, previews, timelines, plots and videos take their real room. A node whose
    drawing feeds its own size (the VAD timeline once did, in the pinned Nodes 2.0) never settles, and fails."""
    page, vue = pages[front_end], renderer == "nodes2"
    page.evaluate("async (vue) => { await window.app.extensionManager.setting.set('Comfy.VueNodes.Enabled', vue); }",
                  vue)
    problems, checked = {}, []
    for name, outputs in real_runs.items():
        if not has_types(page, read(name)):
            continue  # VideoHelperSuite's nodes: only the newest frontend's server has them
        checked.append(name)
        page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", read(name))
        page.evaluate(_REPLAY, outputs)
        measured, heights = settled(page, vue)
        if measured is None:
            problems[name] = {"still growing after 15 s (graph units, 0.5 s apart)": heights}
        elif overlapping(measured["rects"]):
            problems[name] = {"overlap after the run": overlapping(measured["rects"])}
    assert len(checked) == len(WORKFLOWS) - (front_end == "pinned"), checked
    assert problems == {}, json.dumps(problems, indent=1)


def settled(page, vue: bool, timeout: float = 15.0) -> tuple[dict | None, dict]:
    """The node rectangles once every picture and video has loaded and two measurements 0.5 s apart give every
    node the same height in graph units; (None, the last two measurements' differing heights) if that never
    comes (the classic canvas makes a video's player when it first draws the node: measuring draws it)."""
    deadline, last = time.monotonic() + timeout, None
    while True:
        measured = page.evaluate(_RECTS, vue)
        heights = {k: (r[4], round(r[3] / measured["scale"])) for k, r in measured["rects"].items()}
        if heights == last and page.evaluate(_LOADED):
            return measured, {}
        if time.monotonic() > deadline:
            return None, {k: [last.get(k), h] for k, h in heights.items() if last and last.get(k) != h}
        last = heights
        page.wait_for_timeout(500)
