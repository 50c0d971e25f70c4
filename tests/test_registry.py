"""Ready for the Comfy Registry and ComfyUI-Manager: the pyproject as the Registry's own tool (comfy-cli) reads it,
the archive `comfy node publish` would upload (and that ComfyUI loads the pack from it), the publish workflow, the
pinned V3 API, and the model files the shipped workflows point the editor's missing-model dialog at."""
from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, missing

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
NAME = PYPROJECT["project"]["name"]
# docs.comfy.org/registry/specifications: under 100 characters; letters, digits, "-", "_", "."; no two special
# characters in a row; starts with a letter. "ComfyUI" in the name is discouraged.
REGISTRY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*([._-][A-Za-z0-9]+)*")
# What the archive must hold: the pack as ComfyUI loads it, and what a user reads.
PACK = ("__init__.py", "nodes/", "latentsync/", "js/", "workflows/", "pyproject.toml", "requirements.txt",
        "README.md", "LICENSE", "NOTICE", "CHANGELOG.md")
NOT_PUBLISHED = ("tests/", "bench/", "scripts/", ".ci/", ".github/")


def tracked_files() -> list[str]:
    done = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True)
    if done.returncode != 0:
        missing(f"a git checkout of the pack ({done.stderr.strip()})")
    return done.stdout.split()


def comfy_cli(code: str, *args: str, cwd: Path = REPO) -> str:
    """Run `code` with comfy-cli's own modules (the Registry's publishing tool) in a fresh Python."""
    if importlib.util.find_spec("comfy_cli") is None:
        missing("comfy-cli (pip install comfy-cli)")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_node_id_version_and_changelog_follow_the_registry_rules():
    assert len(NAME) < 100 and REGISTRY_NAME.fullmatch(NAME), NAME
    assert "comfyui" not in NAME.lower()
    version = PYPROJECT["project"]["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), "the Registry wants X.Y.Z"
    assert re.search(rf"^## {re.escape(version)}\b", (REPO / "CHANGELOG.md").read_text(), re.M), \
        f"CHANGELOG.md has no entry for {version}"


def test_the_registry_tool_reads_the_pyproject_as_written():
    from scripts.comfyui import COMFYUI_VERSION

    config = json.loads(comfy_cli(
        "import dataclasses, json\n"
        "from comfy_cli.registry.config_parser import extract_node_configuration\n"
        "print(json.dumps(dataclasses.asdict(extract_node_configuration('pyproject.toml'))))"))
    project, comfy = config["project"], config["tool_comfy"]
    assert project["name"] == NAME and project["version"] == PYPROJECT["project"]["version"]
    assert project["license"]["file"] == "LICENSE" and (REPO / "LICENSE").is_file()
    repository = project["urls"]["repository"]
    owner_repo = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+)", repository).group(1)
    assert project["urls"]["documentation"].startswith(repository)
    assert project["urls"]["issues"] == f"{repository}/issues" == PYPROJECT["project"]["urls"]["Bug Tracker"]
    assert comfy["publisher_id"] and comfy["display_name"]
    # The tests run ComfyUI 0.3.75 (the V3 schema loads from 0.3.48 on): that is the version the pack claims.
    assert project["supported_comfyui_version"] == f">={COMFYUI_VERSION}"
    assert "OS Independent" in project["supported_os"] and project["supported_accelerators"]

    # The icon the Registry shows is a file of this repository, on its main branch.
    icon = re.fullmatch(rf"https://raw\.githubusercontent\.com/{re.escape(owner_repo)}/main/(.+)", comfy["icon"])
    assert icon, f"the Icon should point into {owner_repo}'s main branch: {comfy['icon']}"
    assert icon.group(1) in tracked_files(), f"{icon.group(1)} is not in the repository"
    from PIL import Image

    with Image.open(REPO / icon.group(1)) as picture:
        assert picture.format == "PNG" and picture.size[0] == picture.size[1] <= 400


def test_the_published_archive_holds_the_pack_and_loads_in_comfyui(comfyui_dir, tmp_path):
    """comfy-cli's own `zip_files` (what `comfy node publish` uploads: git-tracked files minus .comfyignore),
    unpacked as the Registry installs it, into a ComfyUI that then imports the pack."""
    archive = tmp_path / "node.zip"
    comfy_cli("import sys\nfrom comfy_cli.file_utils import zip_files\nzip_files(sys.argv[1])", str(archive))
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        base = tmp_path / "base"
        zf.extractall(base / "custom_nodes" / NAME)
    tracked = tracked_files()
    for part in PACK:
        wanted = {f for f in tracked if f == part or (part.endswith("/") and f.startswith(part))}
        assert wanted and wanted <= names, f"{part}: {sorted(wanted - names)[:5]} missing from the archive"
    assert not [n for n in names if n.startswith(NOT_PUBLISHED) and n != "bench/poc_experiment.json"]
    assert "bench/poc_experiment.json" in names  # the `experiment` command's help points to it

    done = subprocess.run([sys.executable, "main.py", "--cpu", "--quick-test-for-ci", "--disable-api-nodes",
                           "--base-directory", str(base)], cwd=comfyui_dir, capture_output=True, text=True,
                          timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert re.search(rf"\d+\.\d+ seconds: \S*custom_nodes/{re.escape(NAME)}\n", log), log[-3000:]
    assert "IMPORT FAILED" not in log, log[-3000:]


def test_the_publish_workflow_publishes_version_changes_with_the_registry_token():
    import yaml

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "publish.yml").read_text())
    trigger = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as true
    assert "workflow_dispatch" in trigger
    assert trigger["push"]["branches"] == ["main"] and trigger["push"]["paths"] == ["pyproject.toml"]
    (job,) = workflow["jobs"].values()
    owner = PYPROJECT["project"]["urls"]["Repository"].split("/")[3]
    assert job["if"] == f"github.repository_owner == '{owner}'"
    (publish,) = [step for step in job["steps"] if step.get("uses", "").startswith("Comfy-Org/publish-node-action@")]
    assert publish["with"] == {"personal_access_token": "${{ secrets.REGISTRY_ACCESS_TOKEN }}"}
    assert any(step.get("uses", "").startswith("actions/checkout@") for step in job["steps"])


def test_comfyui_api_is_imported_in_one_place_from_a_pinned_version(comfyui_dir):
    imports = {}
    for path in [REPO / "__init__.py", *sorted((REPO / "nodes").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("comfy_api"):
                imports.setdefault(path.relative_to(REPO).as_posix(), set()).add(node.module)
            if isinstance(node, ast.Import):
                assert not [a for a in node.names if a.name.startswith("comfy_api")], path
    assert imports == {"nodes/_comfy.py": {"comfy_api.v0_0_2"}}
    assert "ComfyAPIAdapter_v0_0_2" in (comfyui_dir / "comfy_api" / "version_list.py").read_text()


def _model_entries():
    for path in sorted((REPO / "workflows").glob("*.json")):
        for node in json.loads(path.read_text())["nodes"]:
            values = node.get("widgets_values") or []
            values = values if isinstance(values, list) else list(values.values())
            yield path.name, node, [v for v in values if isinstance(v, str)], node.get("properties", {})


def test_every_model_file_a_workflow_selects_points_at_its_official_source():
    """The editor's missing-model dialog lists a node's `properties.models` entry whose name is one of the node's
    widget values: each model file a shipped workflow selects has one, with the catalogue's source and folder."""
    from latentsync.catalogue import CATALOGUE

    def catalogued(value: str):  # the file a widget value names (relative to its model folder)
        return next((m for m in CATALOGUE.values() if m.path.endswith("/" + value)), None)

    seen = set()
    for workflow, node, values, properties in _model_entries():
        models = {m["name"]: m for m in properties.get("models", [])}
        if node["type"].startswith("LatentSync"):
            assert properties.get("cnr_id") == NAME, f"{workflow} node {node['id']}: cnr_id lets Manager install us"
        for value in values:
            model = catalogued(value)
            if model is None:
                continue
            entry = models.get(value)
            assert entry, f"{workflow} node {node['id']} selects {value} but names no source for it"
            assert entry["directory"] == model.folder
            if "huggingface.co" in model.url:
                assert entry["url"] == f"{model.url}/resolve/main/{model.source_file}"
            else:
                assert entry["url"].startswith("https://") and entry["url"].endswith(Path(value).name)
            seen.add(model.key)
    assert {"unet_1.5", "unet_1.6", "whisper", "vae", "syncnet", "upscaler"} <= seen


@pytest.mark.comfyui
def test_the_missing_model_dialog_knows_every_folder_and_offers_the_vae(comfy_server):
    """What the 0.3.75 editor (frontend 1.32.9) does with those entries: a folder the server does not list is an
    error in the dialog; a download button only for .safetensors/.sft from Hugging Face or Civitai (the README
    tells users to fetch the other files by hand). Both rules are read from the installed frontend itself."""
    import comfyui_frontend_package

    folders = {f["name"] for f in comfy_server.get("/experiment/models")}
    bundle = "".join(p.read_text(errors="replace") for p in
                     (Path(comfyui_frontend_package.__file__).parent / "static" / "assets").glob("index-*.js"))
    rules = re.search(r'MissingModelsWarning",props:.*?const \w=(\[[^\]]*\]),\w=(\[[^\]]*\])', bundle)
    assert rules, "the missing-model dialog's rules were not found in the frontend bundle"
    sources, suffixes = json.loads(rules.group(1)), json.loads(rules.group(2))
    downloadable = set()
    for _, node, values, properties in _model_entries():
        for entry in properties.get("models", []):
            assert entry["directory"] in folders, f"{entry['directory']} is not a model folder of the server"
            if entry["url"].startswith(tuple(sources)) and entry["name"].endswith(tuple(suffixes)):
                downloadable.add(entry["name"])
    assert downloadable == {"vae-ft-mse-840000-ema-pruned.safetensors"}
