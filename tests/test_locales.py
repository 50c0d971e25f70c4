"""The editor's translations (locales/<lang>/nodeDefs.json, ComfyUI's layout for custom nodes, served at GET /i18n)
and the help pages in both languages: every node, input and output of the pack has a Chinese name and tooltip,
nothing names what the pack lacks, the English file is exactly what scripts/locales.py makes from the schemas, and
the real server hands the Chinese names to the editor."""
import json
import re
import subprocess
import sys

import pytest

from conftest import PACK_NODES, REPO

LOCALES = REPO / "locales"
DOCS = REPO / "js" / "docs"
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def generated(comfyui_dir):
    """What scripts/locales.py makes from the nodes' schemas. The pack is imported inside ComfyUI's Python path in
    a child process, so that ComfyUI's own modules never load into the test process."""
    from scripts import locales

    probe = ("import json, sys; from pathlib import Path; from scripts.locales import node_infos; "
             "print(json.dumps(node_infos(Path(sys.argv[1]))))")
    out = subprocess.run([sys.executable, "-c", probe, str(comfyui_dir)], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    infos = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(infos) == PACK_NODES
    return locales, infos, locales.english(infos)


def read(lang: str) -> dict:
    return json.loads((LOCALES / lang / "nodeDefs.json").read_text(encoding="utf-8"))


def test_the_english_file_is_what_the_script_makes_from_the_schemas(generated):
    locales, _, english = generated
    assert (LOCALES / "en" / "nodeDefs.json").read_text(encoding="utf-8") == locales.render(english), \
        "stale: run python -m scripts.locales"


def test_every_node_input_and_output_has_a_chinese_name_and_tooltip(generated):
    locales, infos, english = generated
    zh = read("zh")
    assert set(zh) == PACK_NODES
    assert locales.problems(zh, english) == []
    for node_id, info in infos.items():
        entry = zh[node_id]
        assert CJK.search(entry["display_name"]) and CJK.search(entry["description"]), node_id
        for name, options in locales.inputs(info).items():
            slot = entry["inputs"][name]
            assert slot["name"].strip(), (node_id, name)
            if options.get("tooltip"):
                assert CJK.search(slot["tooltip"]), (node_id, name)
        assert set(entry["outputs"]) == {str(i) for i in range(len(info["output_name"]))}, node_id
        for index, tooltip in enumerate(info.get("output_tooltips") or []):
            slot = entry["outputs"][str(index)]
            assert slot["name"].strip(), (node_id, index)
            if tooltip:
                assert CJK.search(slot["tooltip"]), (node_id, index)


def test_the_check_finds_what_a_translation_lacks_or_names_in_vain(generated):
    locales, _, english = generated
    zh = read("zh")
    broken = json.loads(json.dumps(zh))
    del broken["LatentSyncVAD"]["inputs"]["threshold"]
    broken["LatentSyncVAD"]["outputs"]["0"]["tooltip"] = " "
    broken["LatentSyncVAD"]["inputs"]["no_such_input"] = {"name": "x"}
    broken["NoSuchNode"] = {"display_name": "x"}
    said = locales.problems(broken, english)
    assert "NoSuchNode: no such node" in said
    assert "LatentSyncVAD.inputs.threshold: missing" in said
    assert "LatentSyncVAD.outputs.0: no tooltip" in said
    assert "LatentSyncVAD.inputs.no_such_input: no such input" in said


def test_a_chinese_text_whose_english_changed_since_is_stale(generated):
    """nodeDefs.source.json holds the English each Chinese text was translated from: today's English must equal it,
    so a tooltip changed in the code fails here until its translation is redone (`--accept zh` records it)."""
    locales, _, english = generated
    source = json.loads((LOCALES / "zh" / locales.SOURCE).read_text(encoding="utf-8"))
    assert locales.stale(english, source) == []
    changed = json.loads(json.dumps(source))
    changed["LatentSyncVAD"]["inputs"]["threshold"]["tooltip"] += " (older wording)"
    del changed["LatentSyncVAD"]["outputs"]["0"]
    assert locales.stale(english, changed) == [
        "LatentSyncVAD.inputs.threshold.tooltip: the English changed since it was translated",
        "LatentSyncVAD.outputs.0.name: the English changed since it was translated",
        "LatentSyncVAD.outputs.0.tooltip: the English changed since it was translated"]


def test_every_node_has_help_in_english_and_chinese_with_its_pictures():
    for name in PACK_NODES:
        pages = {lang: (DOCS / name / f"{lang}.md") for lang in ("en", "zh")}
        for lang, path in pages.items():
            assert path.is_file(), path
        zh = pages["zh"].read_text(encoding="utf-8")
        assert len(CJK.findall(zh)) > 100, name  # a translation, not a copy
        for path in pages.values():
            for target in IMAGE_LINK.findall(path.read_text(encoding="utf-8")):
                # The help panel resolves pictures against the docs folder (/extensions/<pack>/docs/).
                assert (DOCS / target).is_file(), (path, target)


@pytest.mark.comfyui
def test_the_server_serves_the_chinese_names_at_i18n(comfy_server):
    """ComfyUI merges every pack's locales/<lang>/nodeDefs.json under "nodeDefs" in GET /i18n."""
    served = comfy_server.get("/i18n")
    zh = read("zh")
    for node_id in PACK_NODES:
        assert served["zh"]["nodeDefs"][node_id] == zh[node_id], node_id
    assert served["en"]["nodeDefs"]["LatentSyncVAD"] == read("en")["LatentSyncVAD"]
