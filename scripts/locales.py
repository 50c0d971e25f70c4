"""The editor's translations of the pack's nodes (ComfyUI's `locales/` layout for custom nodes).

    ~/.cache/comfyui-latentsync/venv/bin/python -m scripts.locales           # write locales/en/nodeDefs.json
    ~/.cache/comfyui-latentsync/venv/bin/python -m scripts.locales --check   # only compare, exit 1 if stale
    ~/.cache/comfyui-latentsync/venv/bin/python -m scripts.locales --accept zh   # zh's texts are now current

ComfyUI 0.3.75 (app/custom_node_manager.py) merges every pack's `locales/<lang>/main.json` and
`locales/<lang>/nodeDefs.json` (as the key "nodeDefs") and serves them at `GET /i18n`; the frontend reads
`nodeDefs.<node id>.display_name`, `.description`, `.inputs.<input>.name` (the label drawn on the slot or widget)
and `.tooltip`, and `.outputs.<index>.name` and `.tooltip`, falling back to the schema's own text.

`locales/en/nodeDefs.json` is made here from the nodes' schemas (the same text the server sends, so it never
disagrees with them: tests/test_locales.py compares it with this output); `locales/zh/nodeDefs.json` is written
by hand, and this script reports every node, input and output it lacks or names in vain. Beside each hand-written
file, `nodeDefs.source.json` (which ComfyUI does not read) keeps the English it was translated from: an English
text changed since is reported as stale until its translation is redone and `--accept LANG` records the new English.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCALES = REPO / "locales"


def node_infos(comfyui: Path | None = None) -> dict[str, dict]:
    """Every node of the pack as `/object_info` describes it (V1 info), imported as ComfyUI imports it."""
    if comfyui is None:
        sys.path.insert(0, str(REPO / "scripts"))
        import comfyui as comfyui_script  # scripts/comfyui.py: where the test harness installs ComfyUI

        comfyui = comfyui_script.COMFYUI_DIR
    if str(comfyui) not in sys.path:
        sys.path.insert(0, str(comfyui))
    if "comfy.options" not in sys.modules:
        argv, sys.argv = sys.argv, ["main.py", "--cpu"]
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.model_management  # noqa: F401  (parses the arguments while they say --cpu)

        sys.argv = argv
    pack = sys.modules.get("latentsync_pack")
    if pack is None:
        spec = importlib.util.spec_from_file_location("latentsync_pack", REPO / "__init__.py",
                                                      submodule_search_locations=[str(REPO)])
        pack = importlib.util.module_from_spec(spec)
        sys.modules["latentsync_pack"] = pack
        spec.loader.exec_module(pack)
    nodes = asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())
    return {node.GET_SCHEMA().node_id: node.GET_NODE_INFO_V1() for node in nodes}


def inputs(info: dict) -> dict[str, dict]:
    """The node's inputs in the editor's order (required, then optional), name -> options."""
    spec = info["input"]
    return {name: (value[1] if len(value) > 1 else {}) for part in ("required", "optional")
            for name, value in spec.get(part, {}).items()}


def english(infos: dict[str, dict]) -> dict:
    """`locales/en/nodeDefs.json`: the schemas' own names and tooltips, in ComfyUI's nodeDefs layout."""
    out = {}
    for node_id in sorted(infos):
        info = infos[node_id]
        entry = {"display_name": info["display_name"] or node_id}
        if info.get("description"):
            entry["description"] = info["description"]
        entry["inputs"] = {}
        for name, options in inputs(info).items():
            entry["inputs"][name] = {"name": name, **({"tooltip": options["tooltip"]} if options.get("tooltip") else {})}
        entry["outputs"] = {}
        tooltips = info.get("output_tooltips") or [None] * len(info["output_name"])
        for index, (name, tooltip) in enumerate(zip(info["output_name"], tooltips)):
            entry["outputs"][str(index)] = {"name": name, **({"tooltip": tooltip} if tooltip else {})}
        out[node_id] = entry
    return out


SOURCE = "nodeDefs.source.json"  # beside a translation: the English texts it was made from


def texts(entries: dict) -> dict[str, str]:
    """Every text of a nodeDefs file by its path ("Node.inputs.fps.tooltip": "...")."""
    flat = {}
    for node_id, entry in entries.items():
        for key, value in entry.items():
            if isinstance(value, dict):
                for slot, fields in value.items():
                    flat.update({f"{node_id}.{key}.{slot}.{field}": text for field, text in fields.items()})
            else:
                flat[f"{node_id}.{key}"] = value
    return flat


def stale(reference: dict, source: dict) -> list[str]:
    """The English texts that changed (or are new) since a translation was made from `source`."""
    before = texts(source)
    return [f"{path}: the English changed since it was translated" for path, text in texts(reference).items()
            if before.get(path) != text]


def render(data: dict) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


def problems(translated: dict, reference: dict) -> list[str]:
    """What a hand-written nodeDefs file lacks or names in vain, against the English one: every node needs a
    display_name (and a description where the schema has one), every input and output a name, and a tooltip
    where the schema has one; nodes, inputs and outputs the pack does not have are errors too."""
    said = []
    for node_id in sorted(set(translated) - set(reference)):
        said.append(f"{node_id}: no such node")
    for node_id, english_entry in reference.items():
        entry = translated.get(node_id)
        if not isinstance(entry, dict):
            said.append(f"{node_id}: missing")
            continue
        for key in ("display_name", "description"):
            if key in english_entry and not str(entry.get(key, "")).strip():
                said.append(f"{node_id}: no {key}")
        for part in ("inputs", "outputs"):
            theirs, ours = entry.get(part, {}), english_entry[part]
            for name in sorted(set(theirs) - set(ours)):
                said.append(f"{node_id}.{part}.{name}: no such {part[:-1]}")
            for name, english_slot in ours.items():
                slot = theirs.get(name)
                if not isinstance(slot, dict):
                    said.append(f"{node_id}.{part}.{name}: missing")
                    continue
                for key in english_slot:
                    if not str(slot.get(key, "")).strip():
                        said.append(f"{node_id}.{part}.{name}: no {key}")
    return said


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare locales/en/nodeDefs.json, write nothing")
    parser.add_argument("--comfyui", type=Path, default=None, help="ComfyUI's folder (default: the test harness's)")
    parser.add_argument("--accept", metavar="LANG", action="append", default=[],
                        help="record today's English as what LANG's translation was made from (after redoing it)")
    args = parser.parse_args(argv)
    reference = english(node_infos(args.comfyui))
    text, path = render(reference), LOCALES / "en" / "nodeDefs.json"
    status = 0
    if args.check:
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            print(f"{path.relative_to(REPO)} is stale: run python -m scripts.locales")
            status = 1
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(REPO)} ({len(reference)} nodes)")
    for lang_dir in sorted(p for p in LOCALES.iterdir() if p.is_dir() and p.name != "en"):
        translated_path = lang_dir / "nodeDefs.json"
        translated = json.loads(translated_path.read_text(encoding="utf-8")) if translated_path.is_file() else {}
        if lang_dir.name in args.accept:
            (lang_dir / SOURCE).write_text(render(reference), encoding="utf-8")
        source_path = lang_dir / SOURCE
        source = json.loads(source_path.read_text(encoding="utf-8")) if source_path.is_file() else {}
        said = problems(translated, reference) + stale(reference, source)
        for line in said:
            print(f"{lang_dir.name}: {line}")
        if said:
            status = 1
        else:
            print(f"{lang_dir.name}: complete")
    return status


if __name__ == "__main__":
    sys.exit(main())
