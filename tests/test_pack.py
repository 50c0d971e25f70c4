"""House rules of the pack, checked on the tree and on a real import inside ComfyUI's Python path."""
import ast
import importlib
import subprocess
import sys
import tomllib

from conftest import PACK_NODES, REPO, shared_path

COMFY_MODULES = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "server", "nodes",
                 "execution", "node_helpers"}
HEAVY = {"silero_vad", "onnxruntime", "scipy", "av", "torchaudio", "transformers", "pyannote", "lightning"}


def imported_modules(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


def test_library_never_imports_comfyui():
    for path in (REPO / "latentsync").rglob("*.py"):
        assert not COMFY_MODULES & set(imported_modules(path)), path


def test_all_comfyui_imports_live_in_one_adapter_module():
    for path in (REPO / "nodes").rglob("*.py"):
        if path.name != "_comfy.py":
            assert not COMFY_MODULES & set(imported_modules(path)), path


def test_pack_uses_the_v3_entrypoint_only():
    source = (REPO / "__init__.py").read_text()
    assert "comfy_entrypoint" in source and "NODE_CLASS_MAPPINGS" not in source
    assert 'WEB_DIRECTORY = "./js"' in source


def test_import_is_cheap_and_has_no_side_effects(comfyui_dir):
    """Inside ComfyUI's Python path (which has torch and comfy_api loaded), importing the pack and
    building its node list must not pull heavy libraries, change torch threads or the environment."""
    import comfyui

    result = comfyui.measure_pack_import(comfyui_dir, REPO)
    top_level = {name.split(".")[0] for name in result["new_modules"]}
    assert not HEAVY & top_level, HEAVY & top_level
    assert result["threads"] == 2 and result["env_unchanged"]
    assert set(result["nodes"]) == PACK_NODES
    assert result["latentsync_paths"][-1].endswith("models/latentsync")
    assert result["load_seconds"] < 5  # generous for CI noise; `python -m bench.vad` reports the real figure (goal < 1 s)


def test_dependencies_agree_between_pyproject_and_requirements():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert sorted(project["project"]["dependencies"]) == sorted(listed)
    assert not any(dep.split("=")[0].split(">")[0].strip() in ("torch", "torchvision", "torchaudio")
                   for dep in listed)
    comfy = project["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["Icon"]


def test_the_library_layout_and_its_public_names():
    """Every name `latentsync` offers resolves to the object in its subpackage; the house plan holds."""
    import latentsync

    for name in latentsync.__all__:
        value = getattr(latentsync, name)
        module = importlib.import_module(f"latentsync.{latentsync._EXPORTS[name]}")
        assert value is getattr(module, name), name
    layout = shared_path("tools/layout_check.py")
    result = subprocess.run([sys.executable, str(layout)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_the_public_apis_example_runs(tmp_path, tiny_unet_config, one_thread):
    """The script in `latentsync`'s docstring, run as written on 4 frames of a shared clip, with random-weight
    models in the official formats (a tiny UNet, a narrower SD VAE) in a ComfyUI-style models folder."""
    import textwrap

    import latentsync
    from media import cut_clip, cut_voice
    from scripts.model_files import write_lipsync_models
    from scripts.vae_files import NARROW_WIDTHS

    doc = latentsync.__doc__
    block = doc[doc.index("    from pathlib import Path"):doc.index("\n\n(`tests/test_pack.py`")]
    code = textwrap.dedent(block)
    models = write_lipsync_models(tmp_path / "models", tiny_unet_config, vae_widths=NARROW_WIDTHS)
    unet = models / "latentsync" / "1.5" / "latentsync_unet.pt"
    video = cut_clip(shared_path("media/latentsync_demo1_video.mp4"), tmp_path / "talking.mp4", 4, 360)
    voice = cut_voice(shared_path("media/latentsync_demo1_audio.wav"), tmp_path / "voice.wav", 4 / 25)
    first = 'video, voice, models, version = "talking.mp4", "voice.wav", Path("ComfyUI/models"), "1.5"'
    assert first in code
    code = code.replace(first, f"video, voice, models, version = {str(video)!r}, {str(voice)!r}, "
                               f"Path({str(models)!r}), {str(unet.with_suffix('.json'))!r}")
    code = code.replace("/ version /", "/ '1.5' /").replace("steps=20", "steps=2")  # the tiny model's config
    code = code.replace('"lipsynced.mp4"', repr(str(tmp_path / "lipsynced.mp4")))
    namespace: dict = {}
    exec(compile(code, "latentsync.__doc__", "exec"), namespace)
    result = namespace["result"]
    assert result.frames.shape[0] == 4 and (tmp_path / "lipsynced.mp4").stat().st_size > 0
    assert sorted(dir(latentsync)) == sorted(latentsync.__all__)


def test_only_the_media_subpackage_touches_pyav():
    """Video and audio files are decoded and encoded in one place: `latentsync/media/` is the only importer of
    PyAV (`import av`, `from av... import`, or `importlib.import_module("av")` / `__import__("av")`)."""
    def imports_av(path):
        if "av" in imported_modules(path):
            return True
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                    and str(node.args[0].value).split(".")[0] == "av"
                    and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")):
                return True
        return False

    media = REPO / "latentsync" / "media"
    files = [*(REPO / "latentsync").rglob("*.py"), *(REPO / "nodes").rglob("*.py")]
    offenders = [str(path.relative_to(REPO)) for path in files if media not in path.parents and imports_av(path)]
    assert not offenders, f"PyAV used outside latentsync/media/: {offenders}"
    assert any(imports_av(path) for path in media.rglob("*.py"))  # the walk does see PyAV imports


def test_nothing_outside_scripts_and_the_conftest_edits_the_import_path():
    """`sys.path` belongs to the scripts that run as files and to the tests' conftest; the library, the nodes and
    the benchmarks import by package name (benchmarks run as `python -m bench.NAME` from the repository root)."""
    def edits_sys_path(path):
        for node in ast.walk(ast.parse(path.read_text())):
            target = node.value if isinstance(node, (ast.Subscript, ast.Attribute)) else None
            if (isinstance(target, ast.Attribute) and target.attr == "path"
                    and getattr(target.value, "id", None) == "sys"):
                return True
        return False

    allowed = {REPO / "tests" / "conftest.py", *(REPO / "scripts").glob("*.py")}
    files = [path for path in REPO.rglob("*.py") if ".git" not in path.parts and "test-artifacts" not in path.parts]
    offenders = sorted(str(path.relative_to(REPO)) for path in files if path not in allowed and edits_sys_path(path))
    assert not offenders, f"sys.path edited outside scripts/ and tests/conftest.py: {offenders}"
    assert edits_sys_path(REPO / "tests" / "conftest.py")  # the walk does see an edit


def test_every_benchmark_imports_by_package_name():
    """Each bench module imports in a fresh Python started in the repository root, as `python -m bench.NAME` runs
    it, and none reaches into the tests or the CLI."""
    names = sorted(path.stem for path in (REPO / "bench").glob("*.py") if path.stem != "__init__")
    assert "sampler" in names
    code = ("import importlib, sys\n"
            f"for name in {names!r}: importlib.import_module('bench.' + name)\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('tests', 'conftest', 'latentsync.cli')))\n"
            "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
