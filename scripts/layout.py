"""Lay out the shipped workflows so that no two nodes overlap in either renderer of either frontend (the classic
canvas and Nodes 2.0, on the pinned frontend and the newest), before and after a run, with titled groups.

Node sizes are measured in the real editor (Chromium, Playwright) in the four modes; each node gets the largest
of its four sizes plus the room its run output takes (`after_run_height`: video and image previews, reports). Nodes
are stacked in their group, groups in columns by role (inputs, voice, faces, model, sampler, scores, output).
tests/test_workflow_layout.py checks the result in all four modes, with the same after-run room, and after
real runs of the workflows that run on random weights, with their real outputs.

    python -m scripts.layout                    # every workflow
    python -m scripts.layout latentsync_basic   # only the named ones
then re-make their thumbnails: python -m scripts.thumbnails <names>
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"

# Height (graph units) a node gains once it has run: a video or image preview below its widgets, a report. A video
# player is as tall as a portrait (9:16) clip at the node's width, with its controls: measured after real runs of
# the demo clip (tests/test_workflow_layout.py), 472 units on the classic canvas and 574 in the pinned Nodes 2.0.
PREVIEW, REPORT, VIDEO = 320, 100, 600
AFTER_RUN = {
    "VHS_LoadVideo": VIDEO,  # the chosen file's player
    "SaveVideo": VIDEO, "VHS_VideoCombine": VIDEO, "SaveImage": PREVIEW, "PreviewImage": PREVIEW,
    "LatentSyncDetectFaces": PREVIEW + REPORT, "LatentSyncSyncNetScore": PREVIEW + REPORT,
    "LatentSyncAssignFaces": PREVIEW + REPORT, "LatentSyncVAD": PREVIEW + REPORT,
    "LatentSyncWhisperEncode": REPORT, "LatentSyncUNetLoader": REPORT, "LatentSyncSampler": REPORT,
    "LatentSyncSpeakersSampler": REPORT, "LatentSyncSampleVideo": REPORT, "LatentSyncSpeaker": REPORT,
    "LatentSyncDiarize": REPORT, "LatentSyncPrepareVideo": REPORT,
}

# Heights some nodes reach with their preview, whether it is already shown (a file that exists) or not yet.
AT_LEAST = {"LoadVideo": 620}

# Groups, left to right; a node's group is its type's role.
GROUPS = [
    ("Inputs", "#3f789e", {"LoadVideo", "GetVideoComponents", "LoadAudio", "LoadImage", "VHS_LoadVideo",
                           "VHS_VideoInfo", "LatentSyncVideoInfo"}),
    ("Voice", "#8A8", {"LatentSyncVAD", "LatentSyncWhisperEncode", "LatentSyncSpeaker", "LatentSyncDiarize",
                       "AudioMerge"}),
    ("Faces", "#a1309b", {"LatentSyncDetectFaces", "LatentSyncAssignFaces", "LatentSyncPrepareVideo"}),
    ("Model", "#b58b2a", {"LatentSyncUNetLoader", "VAELoader"}),
    ("Sampler", "#b06634", {"LatentSyncSampler", "LatentSyncSpeakersSampler", "LatentSyncSampleVideo",
                            "LatentSyncUpscale", "LatentSyncRestoreMouths", "LatentSyncPasteFaces"}),
    ("Scores", "#444", {"LatentSyncSyncNetScore"}),
    ("Output", "#88A", {"CreateVideo", "SaveVideo", "VHS_VideoCombine", "SaveImage", "PreviewImage"}),
]
# Groups that share a column (the first one's), stacked: short groups beside each other would leave gaps.
SAME_COLUMN = {"Model": "Faces"}
# A group taller than this continues in another column of nodes: about the side of a square holding every node
# (a square template thumbnail), 1500 at least.
MAX_STACK = 1500
TITLE = 30  # the node title bar above `pos` (classic; Nodes 2.0 draws its header in the same place)
GAP, PAD, GROUP_TITLE, COLUMN_GAP = 40, 20, 50, 80
FONT_SIZE = 24


def group_of(node_type: str) -> str:
    for title, _, types in GROUPS:
        if node_type in types:
            return title
    return "Sampler"


def after_run_height(node_type: str, height: float) -> float:
    """A node rectangle's height (title included) once its run output is shown."""
    if node_type in AT_LEAST:
        return max(height, AT_LEAST[node_type])
    return height + AFTER_RUN.get(node_type, 0)


def layout(workflow: dict, sizes: dict) -> dict:
    """`workflow` with new node positions and one titled group per role; `sizes[node id]` = (width, height) of
    the node's rectangle, title included, the largest over the renderers."""
    members: dict[str, list] = {}
    for node in sorted(workflow["nodes"], key=lambda n: (n["pos"][1], n["pos"][0], n["id"])):
        members.setdefault(group_of(node["type"]), []).append(node)
    columns: list[list[str]] = []
    for title, _, _ in GROUPS:
        if title not in members:
            continue
        host = SAME_COLUMN.get(title)
        column = next((c for c in columns if host in c), None) if host else None
        column.append(title) if column is not None else columns.append([title])
    area = sum((sizes[n["id"]][0] + GAP) * (after_run_height(n["type"], sizes[n["id"]][1]) + GAP)
               for n in workflow["nodes"])
    most = max(MAX_STACK, 1.3 * area ** 0.5)
    groups, x = [], 40.0
    for column in columns:
        node_width = max(sizes[n["id"]][0] for title in column for n in members[title])
        y, column_width = 40.0, 0.0
        for title in column:
            top, stacks = y, [[]]
            for node in members[title]:  # split into stacks of at most MAX_STACK (one node at least)
                height = after_run_height(node["type"], sizes[node["id"]][1]) + GAP
                if stacks[-1] and sum(h for _, h in stacks[-1]) + height > most:
                    stacks.append([])
                stacks[-1].append((node, height))
            for number, stack in enumerate(stacks):
                y = top + GROUP_TITLE
                for node, height in stack:
                    node["pos"] = [round(x + PAD + number * (node_width + GAP)), round(y + TITLE)]
                    y += height
            bottom = top + GROUP_TITLE + max(sum(h for _, h in stack) for stack in stacks) - GAP + PAD
            width = len(stacks) * (node_width + GAP) - GAP + 2 * PAD
            color = next(c for t, c, _ in GROUPS if t == title)
            groups.append({"id": len(groups) + 1, "title": title, "bounding": [round(x), round(top), round(width),
                                                                                round(bottom - top)],
                           "color": color, "font_size": FONT_SIZE, "flags": {}})
            y, column_width = bottom + GAP, max(column_width, width)
        x += column_width + COLUMN_GAP
    workflow["groups"] = groups
    return workflow


MEASURE = """async (vue) => {
  await window.app.extensionManager.setting.set('Comfy.VueNodes.Enabled', vue);
  await new Promise(r => setTimeout(r, 300));
  return true; }"""
SIZES = """async (vue) => {
  const canvas = window.app.canvas;
  for (let i = 0; i < 3; i++) await new Promise(r => requestAnimationFrame(r));
  await new Promise(r => setTimeout(r, 300));
  const out = {};
  for (const n of window.app.graph._nodes) {
    const dom = vue && document.querySelector(`[data-node-id="${n.id}"]`);
    if (dom) { const b = dom.getBoundingClientRect(); out[n.id] = [b.width / canvas.ds.scale, b.height / canvas.ds.scale]; }
    else { const r = n.boundingRect; out[n.id] = [r[2], r[3]]; }
  }
  return out; }"""


def measure(page, workflow: dict, vue: bool) -> dict:
    """{node id: (width, height)} of `workflow` in the editor on `page`, in graph units, title included."""
    page.evaluate(MEASURE, vue)
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    return {int(k): v for k, v in page.evaluate(SIZES, vue).items()}


def main(argv: list[str] | None = None) -> int:
    from scripts import comfyui, thumbnails

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="workflow names (without .json); default: every workflow")
    args = parser.parse_args(argv)
    paths = [WORKFLOWS / f"{n.removesuffix('.json')}.json" for n in args.names] or sorted(WORKFLOWS.glob("*.json"))
    workflows = {p: json.loads(p.read_text()) for p in paths}
    largest: dict[Path, dict] = {p: {} for p in paths}
    for front_end in (None, comfyui.install_frontend()):
        with tempfile.TemporaryDirectory(prefix="latentsync-layout-") as base:
            server = comfyui.ComfyServer(comfyui.install(comfyui.COMFYUI_DIR), Path(base), REPO,
                                         front_end_root=front_end)
            comfyui.install_vhs(server.dir("custom_nodes"))
            server.start()
            try:
                thumbnails.prepare_server(server)
                with thumbnails.open_editor(server, viewport=(2400, 1600)) as page:
                    for vue in (False, True):
                        for path, workflow in workflows.items():
                            for node_id, (w, h) in measure(page, workflow, vue).items():
                                old = largest[path].get(node_id, (0, 0))
                                largest[path][node_id] = (max(old[0], w), max(old[1], h))
            finally:
                server.stop()
    for path, workflow in workflows.items():
        text = path.read_text()
        path.write_text(json.dumps(layout(workflow, largest[path]), indent=2, ensure_ascii=False)
                        + ("\n" if text.endswith("\n") else ""))
        print(f"[layout] {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
