"""Template thumbnails and README screenshots, drawn by the real graph editor in Chromium.

ComfyUI shows each `workflows/<name>.json` of the pack as a template, with `workflows/<name>.jpg` as its card
picture. This script boots a ComfyUI with the pack, opens the editor in Debian's Chromium (Playwright), loads each
workflow, fits the whole graph in view and saves the canvas, so the pictures always show the shipped graphs.

    python -m scripts.thumbnails                  # workflows/<name>.jpg for every workflows/*.json
    python -m scripts.thumbnails latentsync_basic # only the named workflows
    python -m scripts.thumbnails --docs           # only docs/basic_graph.jpg and docs/vad_timeline.png

Each thumbnail carries the sha256 of its workflow file in a JPEG comment, so tests/test_thumbnails.py can tell
a stale picture from a current one.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

from scripts import comfyui

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
DOCS = REPO / "docs"

# The template browser (frontend 1.32) shows the picture in a square box (`aspect-square`, object-contain,
# at most 256 CSS px high): a square picture fills the card, and 512 px stays sharp on 2x screens.
THUMBNAIL_SIZE = (512, 512)
# The editor draws at this many CSS pixels before the picture is scaled down: big enough that a fitted graph
# keeps legible titles, small enough to look like the whole graph at a glance.
THUMBNAIL_VIEW = (1024, 1024)
JPEG_QUALITY = 85
SHA_PREFIX = b"latentsync-workflow-sha256="
REMAKE = "~/.cache/comfyui-latentsync/venv/bin/python -m scripts.thumbnails"

# Applied while a picture is taken (render() puts the previous values back): nothing but the graph on the canvas.
VIEW_SETTINGS = {
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasMenu": False,  # the zoom and fit buttons, bottom right
    "Comfy.Graph.CanvasInfo": False,  # the frame-rate and node-count text, bottom left
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,  # a zoomed-out graph would otherwise lose its text
}
# Stored on the script's own server before the page loads, so no dialog or toast lands on the canvas: the shipped
# workflows name model files that this throwaway server does not have.
EDITOR_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Workflow.ShowMissingModelsWarning": False,
    "Comfy.Workflow.ShowMissingNodesWarning": False,
    "Comfy.Notification.ShowVersionUpdates": False,
    **VIEW_SETTINGS,
}


def workflow_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def embedded_sha256(jpg: Path) -> str | None:
    """The workflow hash stored in a thumbnail's JPEG comment, or None when it has none."""
    from PIL import Image

    with Image.open(jpg) as image:
        comment = image.info.get("comment", b"")
    return comment[len(SHA_PREFIX):].decode() if comment.startswith(SHA_PREFIX) else None


def thumbnail_path(workflow: Path) -> Path:
    return Path(workflow).with_suffix(".jpg")


def prepare_server(server) -> None:
    """Store the editor settings that keep the canvas clear; call before the page is opened."""
    for key, value in EDITOR_SETTINGS.items():
        status, reply = server.request("POST", f"/settings/{key}", value)
        if status != 200:
            raise RuntimeError(f"POST /settings/{key} -> {status}: {reply}")


@contextlib.contextmanager
def open_editor(server, viewport: tuple[int, int] = THUMBNAIL_VIEW):
    """Debian's Chromium on the server's editor, once the pack's nodes are registered."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise RuntimeError("Debian's chromium is missing (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=comfyui.CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.goto(server.url)
            page.wait_for_selector("canvas#graph-canvas", timeout=300_000)
            page.wait_for_function("() => window.app?.graph && window.LiteGraph?.registered_node_types?.LatentSyncVAD")
            yield page
        finally:
            browser.close()


# Focus mode is the editor's own way to hide its menus, tabs and side bars; the canvas is then the whole page
# but for the button that leaves focus mode, hidden by a style sheet for the time of the picture. The settings
# that keep the canvas clear are applied through the editor's setting store and put back afterwards, so a page
# opened on any server (the tests' one too) gives the same picture.
_CLEAR_VIEW = """async (settings) => {
    const workspace = window.app.extensionManager;
    const before = {focusMode: workspace.focusMode, settings: {}};
    for (const [id, value] of Object.entries(settings)) {
        before.settings[id] = workspace.setting.get(id);
        if (before.settings[id] !== value) await workspace.setting.set(id, value);
    }
    workspace.focusMode = true;
    const style = document.createElement('style');
    style.id = 'latentsync-thumbnail-style';
    style.textContent = '.comfy-menu-hamburger { display: none !important; }';
    document.head.append(style);
    return before; }"""
_RESTORE_VIEW = """async (before) => {
    const workspace = window.app.extensionManager;
    document.getElementById('latentsync-thumbnail-style')?.remove();
    workspace.focusMode = before.focusMode;
    for (const [id, value] of Object.entries(before.settings))
        if (workspace.setting.get(id) !== value) await workspace.setting.set(id, value); }"""

_LOAD = """async (wf) => {
    // No missing-model or missing-node dialog: the canvas is the picture.
    await window.app.loadGraphData(wf, true, true, null, {showMissingModelsDialog: false,
                                                          showMissingNodesDialog: false});
    const unknown = window.app.graph._nodes.filter(n => !(n.type in LiteGraph.registered_node_types));
    return unknown.map(n => n.type); }"""

# Fit every node and group at once (the "Fit view" command animates). The margin, in graph units, keeps the
# pack badge that the editor draws above a node's title inside the picture.
_FIT = """(margin) => {
    const canvas = window.app.canvas, graph = window.app.graph;
    const rects = [...graph._nodes.map(n => n.boundingRect), ...graph._groups.map(g => g._bounding ?? g.boundingRect)];
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const [x, y, w, h] of rects) { x0 = Math.min(x0, x); y0 = Math.min(y0, y);
                                        x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h); }
    canvas.ds.fitToBounds([x0 - margin, y0 - margin, x1 - x0 + 2 * margin, y1 - y0 + 2 * margin], {zoom: 1});
    canvas.setDirty(true, true);
    canvas.draw(true, true);
    return canvas.ds.scale; }"""

_NEXT_FRAMES = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def render(page, workflow_path: Path, view: tuple[int, int] = THUMBNAIL_VIEW, margin: float = 30):
    """Load `workflow_path` in the editor on `page`, fit the whole graph in a `view`-sized window with the
    editor's chrome hidden, and return the screenshot as a PIL image. The page's size and layout are put back."""
    from PIL import Image

    workflow = json.loads(Path(workflow_path).read_text())
    before = page.viewport_size
    page.set_viewport_size({"width": view[0], "height": view[1]})
    before_view = page.evaluate(_CLEAR_VIEW, VIEW_SETTINGS)
    try:
        unknown = page.evaluate(_LOAD, workflow)
        if unknown:
            raise RuntimeError(f"{workflow_path}: node types the editor does not know: {sorted(set(unknown))}")
        page.evaluate(_NEXT_FRAMES)  # the canvas takes the new page size on the next frame
        page.evaluate(_FIT, margin)
        page.evaluate(_NEXT_FRAMES)  # DOM widgets (players, the VAD timeline) follow the canvas a frame later
        png = page.screenshot()
    finally:
        page.evaluate(_RESTORE_VIEW, before_view)
        if before:
            page.set_viewport_size(before)
    return Image.open(io.BytesIO(png)).convert("RGB")


def write_thumbnail(image, workflow_path: Path, out: Path | None = None,
                    size: tuple[int, int] = THUMBNAIL_SIZE) -> Path:
    """Save `image` scaled to `size` as a JPEG that names the sha256 of the workflow file it shows."""
    from PIL import Image

    out = Path(out) if out else thumbnail_path(workflow_path)
    picture = image.resize(size, Image.LANCZOS) if image.size != size else image
    comment = SHA_PREFIX + workflow_sha256(workflow_path).encode()
    picture.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True, comment=comment)
    return out


def render_vad_timeline(page, server, voice: Path):
    """Run workflows/vad_preview.json on `voice` from the editor and return (a PIL image) the VAD node with
    its timeline drawn. For the docs only: the page is left in focus mode with the node trimmed."""
    from PIL import Image

    workflow = json.loads((WORKFLOWS / "vad_preview.json").read_text())
    (loader,) = [n for n in workflow["nodes"] if n["type"] == "LoadAudio"]
    shutil.copy(voice, server.dir("input") / loader["widgets_values"][0])
    page.evaluate(_CLEAR_VIEW, VIEW_SETTINGS)
    page.evaluate(_LOAD, workflow)
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    page.wait_for_function(
        """() => { const node = window.app.graph._nodes.find(n => n.type === 'LatentSyncVAD');
                   return node?.widgets?.find(w => w.name === 'speech_timeline')?.canvas?.dataset.segments; }""",
        timeout=300_000)
    # At scale 1 the timeline (a DOM canvas over the graph) is drawn pixel for pixel, not stretched; the node is
    # trimmed to its content so the picture ends below the timeline.
    box = page.evaluate(
        """(pad) => { const node = window.app.graph._nodes.find(n => n.type === 'LatentSyncVAD');
                      node.setSize([node.size[0], node.computeSize()[1]]);
                      const canvas = window.app.canvas, [x, y, w, h] = node.boundingRect;
                      canvas.ds.scale = 1;
                      canvas.ds.offset = [pad - x, pad - y];
                      canvas.setDirty(true, true); canvas.draw(true, true);
                      return [w + 2 * pad, h + 2 * pad]; }""", 28)
    page.evaluate(_NEXT_FRAMES)
    clip = {"x": 0, "y": 0, "width": box[0], "height": box[1]}
    return Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB")


def start_server(base: Path):
    """A fresh ComfyUI with the pack and VideoHelperSuite (workflows with VHS_* nodes need it)."""
    server = comfyui.ComfyServer(comfyui.install(comfyui.COMFYUI_DIR), base, REPO)
    comfyui.install_vhs(server.dir("custom_nodes"))
    server.start()
    prepare_server(server)
    return server


def make_thumbnails(page, workflows: list[Path]) -> list[Path]:
    written = []
    for workflow in workflows:
        written.append(write_thumbnail(render(page, workflow), workflow))
        print(f"[thumbnails] {written[-1].relative_to(REPO)}")
    return written


def make_docs(page, server, voice: Path) -> list[Path]:
    DOCS.mkdir(exist_ok=True)
    graph = render(page, WORKFLOWS / "latentsync_basic.json", view=(1600, 900))
    basic = DOCS / "basic_graph.jpg"
    graph.save(basic, "JPEG", quality=JPEG_QUALITY, optimize=True)
    timeline = DOCS / "vad_timeline.png"
    render_vad_timeline(page, server, voice).save(timeline, optimize=True)
    for path in (basic, timeline):
        print(f"[thumbnails] {path.relative_to(REPO)}")
    return [basic, timeline]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="workflow names (without .json); default: every workflow")
    parser.add_argument("--docs", action="store_true", help="make only the README screenshots in docs/")
    args = parser.parse_args(argv)
    if args.docs and args.names:
        parser.error("--docs makes only the README screenshots: give no workflow names with it")
    workflows = [WORKFLOWS / f"{name.removesuffix('.json')}.json" for name in args.names] or \
        sorted(WORKFLOWS.glob("*.json"))
    for workflow in workflows:
        if not workflow.exists():
            parser.error(f"no workflow {workflow.relative_to(REPO)}")
    voice = comfyui.SHARED / "media" / "latentsync_demo1_audio.wav"
    if (args.docs or not args.names) and not voice.exists():
        parser.error(f"the docs screenshot needs {voice} (set LATENTSYNC_SHARED)")
    with tempfile.TemporaryDirectory(prefix="latentsync-thumbnails-") as base:
        server = start_server(Path(base))
        try:
            with open_editor(server) as page:
                if not args.docs:
                    make_thumbnails(page, workflows)
                if args.docs or not args.names:
                    make_docs(page, server, voice)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
