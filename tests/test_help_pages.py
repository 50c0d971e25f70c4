"""The nodes' help pages (js/docs/<node id>/<locale>.md, en and zh): one per node and language, where the editor's
help panel looks for it, naming every input of the running server's node, with typical settings, and pictures the
panel can load."""
import re
import urllib.request
from pathlib import Path

import pytest

from conftest import PACK_NODES, REPO
from test_browser import editor  # noqa: F401  (the Chromium page on the server, for the panel's own check)

pytestmark = pytest.mark.comfyui

DOCS = REPO / "js" / "docs"
LOCALES = ("en", "zh")  # the languages every node's help is written in
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")  # markdown ![alt](target)
MAX_PICTURE_BYTES = 150_000
# The pages the brief asks a picture for: what the node shows is easier seen than described.
ILLUSTRATED = {"LatentSyncVAD", "LatentSyncDetectFaces", "LatentSyncPasteFaces", "LatentSyncSyncNetScore"}


def frontend_bundle() -> str:
    import comfyui_frontend_package

    assets = Path(comfyui_frontend_package.__file__).parent / "static" / "assets"
    return "".join(p.read_text(errors="replace") for p in assets.glob("index-*.js"))


def pack_folder(object_info) -> str:
    """The pack's folder under custom_nodes as the frontend sees it (the last part of `python_module`)."""
    return object_info["LatentSyncVAD"]["python_module"].split(".")[-1]


def pictures(page: str) -> list[str]:
    return IMAGE_LINK.findall(page)


def page(name: str, locale: str = "en") -> str:
    return (DOCS / name / f"{locale}.md").read_text(encoding="utf-8")


def test_the_frontend_looks_for_help_and_resolves_its_pictures_as_these_pages_expect():
    bundle = frontend_bundle()
    # The help comes from /extensions/<pack folder>/docs/<node id>/<locale>.md (the flat <node id>.md is only its
    # fallback) ...
    assert re.search(r"`/extensions/\$\{\w+\}/docs/\$\{\w+\.name\}/\$\{\w+\}\.md`", bundle)
    # ... and a relative image link is prefixed with /extensions/<pack folder>/docs/, the docs folder itself and
    # not the page's <node id>/ folder: so the pages link their pictures as <node id>/<file>.
    assert re.search(r"return`/extensions/\$\{\w+\}/docs/`", bundle)
    assert re.search(r"/\^\(\?:\\/\|https\?:\\/\\/\)/\.test\(\w+\)&&\(\w+=`\$\{\w+\}/\$\{\w+\}`\)", bundle)


def test_every_node_has_a_help_page_where_the_frontend_looks(comfy_server, object_info):
    pack = pack_folder(object_info)
    registered = {name for name, info in object_info.items() if info["python_module"].endswith(pack)}
    assert registered == PACK_NODES
    for name in PACK_NODES:
        for locale in LOCALES:
            status, text = comfy_server.request("GET", f"/extensions/{pack}/docs/{name}/{locale}.md")
            assert status == 200, (name, locale)
            assert text == page(name, locale), (name, locale)
        # The English page's title is the node's English name; the Chinese one starts with a title too.
        assert page(name).startswith(f"# {object_info[name]['display_name']}\n"), name
        assert page(name, "zh").startswith("# "), name
    assert not list(DOCS.glob("*.md"))  # no flat page left: the panel would never ask for it first


def test_each_page_explains_every_input_and_gives_typical_settings_by_gpu_memory(object_info):
    for name in PACK_NODES:
        text = page(name)
        spec = object_info[name]["input"]
        inputs = {**spec.get("required", {}), **spec.get("optional", {})}
        for input_name in inputs:
            assert f"**{input_name}**" in text, (name, input_name)  # each input in a sentence
            assert f"**{input_name}**" in page(name, "zh"), (name, input_name)  # named as spelled in Chinese too
        for output_name in object_info[name]["output_name"]:
            assert f"**{output_name}**" in text, (name, output_name)
            assert f"**{output_name}**" in page(name, "zh"), (name, output_name)
        typical = text.split("## Typical settings", 1)
        assert len(typical) == 2 and typical[1].strip(), name
        settings = typical[1].split("\n## ", 1)[0]
        # Every page says whether memory matters for this node, and where it does, what fits on each card.
        assert "memory" in settings.lower(), name
        if "| GPU |" in settings:
            for card in ("8 GB", "12 GB", "24 GB"):
                assert f"| {card} |" in settings, (name, card)
            assert "estimates" in settings.lower() or "estimate" in settings.lower(), name
    for name in ("LatentSyncUNetLoader", "LatentSyncSampler", "LatentSyncSampleVideo", "LatentSyncUpscale"):
        assert "| GPU |" in page(name), name


def test_the_pictures_are_linked_small_and_served_where_the_help_panel_asks(comfy_server, object_info):
    pack = pack_folder(object_info)
    linked = {}
    for name in PACK_NODES:
        english = pictures(page(name))
        assert pictures(page(name, "zh")) == english, name  # the translation shows the same pictures
        for target in english:
            # Relative to the docs folder, which is what the panel prefixes: the node's own folder, then the file.
            assert target.startswith(f"{name}/") and target.count("/") == 1 and ":" not in target, (name, target)
            linked[target] = name
    assert {linked[target] for target in linked} >= ILLUSTRATED
    for target in linked:
        path = DOCS / target
        assert path.is_file(), target
        assert path.suffix in (".png", ".jpg") and path.stat().st_size < MAX_PICTURE_BYTES, target
        with urllib.request.urlopen(f"{comfy_server.url}/extensions/{pack}/docs/{target}", timeout=30) as reply:
            assert reply.status == 200 and reply.headers["Content-Type"].startswith("image/"), target
            assert reply.read() == path.read_bytes(), target
    # No stale picture: every file next to the pages is linked from one.
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*") if p.suffix in (".png", ".jpg")}
    assert on_disk == set(linked)


@pytest.mark.browser
def test_the_help_panel_shows_the_vad_page_with_its_picture_loaded(editor):  # noqa: F811  (the imported fixture)
    shown = editor.evaluate("""async () => {
        const pinia = document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia;
        const def = pinia._s.get('nodeDef').nodeDefsByName['LatentSyncVAD'];
        const tabs = pinia._s.get('workspace').sidebarTab ?? pinia._s.get('sidebarTab');
        if (tabs.activeSidebarTabId !== 'node-library') tabs.toggleSidebarTab('node-library');
        pinia._s.get('nodeHelp').openHelp(def);
        for (let i = 0; i < 100; i++) {
            const img = document.querySelector('.node-help-content img');
            if (img && img.complete && img.naturalWidth > 0)
                return {src: img.getAttribute('src'), width: img.naturalWidth};
            await new Promise(r => setTimeout(r, 100));
        }
        const img = document.querySelector('.node-help-content img');
        return {src: img && img.getAttribute('src'), width: img ? img.naturalWidth : -1,
                text: (document.querySelector('.node-help-content') || {}).innerText};
    }""")
    assert shown["src"].endswith("/docs/LatentSyncVAD/LatentSyncVAD.png") and shown["width"] == 1024, shown
