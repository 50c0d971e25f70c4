"""Offline unless asked, also in a long-lived process: the pack's onnxruntime users send nothing anywhere.

onnxruntime >= 1.29 starts a telemetry uploader when it is imported (DNS look-ups of its event servers every few
seconds, for the life of the process). The pack imports it through `latentsync.onnx_runtime`, which keeps it off.
This loads the pyannote backend (whose dependencies import onnxruntime), runs the ONNX VAD backend and both face
detectors in one process under strace, lets it idle past the moment the uploader would start, and counts the
process's connect()/sendto() calls to addresses off this machine. A control process that imports onnxruntime
plainly, traced the same way, shows the count would catch the uploader.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from conftest import REPO, missing, shared_path

IDLE_S = 22  # the uploader's first look-up comes ~9 s after the import; then every few seconds
CONTROL_LIMIT_S = 40  # the control's idle: margin for a busy machine, where the uploader may start later
NETWORK_CALL = re.compile(r"\b(connect|sendto|sendmsg|sendmmsg)\(.*?(sa_family=AF_INET6?\b[^}]*)")
LOOPBACK = re.compile(r'inet_addr\("127\.|inet_pton\(AF_INET6, "(::1|::ffff:127\.)')

PACK_SCRIPT = """
import sys, time
import numpy as np
from latentsync.media.audio import load_audio
from latentsync.face.detect import make_detector
from latentsync.audio.vad import detect_speech
import importlib.util
if importlib.util.find_spec("pyannote") is not None:  # its dependencies import onnxruntime: it must come first here
    from latentsync.audio.vad_pyannote import load_segmentation
    try:
        load_segmentation(sys.argv[2] + "/no_such_checkpoint.bin")
    except FileNotFoundError:
        pass
waveform, rate = load_audio(sys.argv[1])
assert detect_speech(waveform, rate, backend="onnx").speech, "the ONNX VAD found no speech"
from skimage import data
make_detector("dlib").detect(np.ascontiguousarray(data.astronaut()))
make_detector("insightface", models_dir=sys.argv[2])  # stand-in graphs: sessions are created, as in use
print("ready", flush=True)
time.sleep(float(sys.argv[3]))
"""
CONTROL_SCRIPT = "import sys, time, onnxruntime; time.sleep(float(sys.argv[1]))"


def off_machine_calls(trace: str) -> list[str]:
    """The traced network calls whose address is not loopback (Unix sockets and netlink are not matched)."""
    return [line for line in trace.splitlines()
            if (found := NETWORK_CALL.search(line)) and not LOOPBACK.search(found.group(2))]


def _traced(tmp_path: Path, name: str, *argv: str) -> subprocess.Popen:
    strace = shutil.which("strace")
    if strace is None:
        missing("strace (apt-get install strace)")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("ORT_DISABLE_TELEMETRY", None)  # the test is about what happens when the user did not set it
    return subprocess.Popen([strace, "-f", "-qq", "-e", "trace=connect,sendto,sendmsg,sendmmsg",
                             "-o", str(tmp_path / f"{name}.trace"), sys.executable, *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)


def test_onnx_vad_and_face_detectors_stay_offline_while_the_process_idles(tmp_path):
    if importlib.util.find_spec("onnxruntime") is None:
        missing("onnxruntime")
    import silero_vad

    models = tmp_path / "buffalo_l"
    models.mkdir()
    stand_in = Path(silero_vad.__file__).parent / "data" / "silero_vad.onnx"  # a valid ONNX graph
    for name in ("det_10g.onnx", "2d106det.onnx"):
        shutil.copy(stand_in, models / name)
    (tmp_path / "pack.py").write_text(PACK_SCRIPT)
    (tmp_path / "control.py").write_text(CONTROL_SCRIPT)
    voice = shared_path("media/latentsync_demo1_audio.wav")
    pack = _traced(tmp_path, "pack", "pack.py", str(voice), str(models), str(IDLE_S))
    control = _traced(tmp_path, "control", "control.py", str(CONTROL_LIMIT_S))
    out, err = pack.communicate(timeout=600)
    assert pack.returncode == 0 and "ready" in out, err[-3000:]
    _, control_err = control.communicate(timeout=600)
    assert control.returncode == 0, control_err[-2000:]
    if not off_machine_calls((tmp_path / "control.trace").read_text()):
        # onnxruntime's uploader keeps state on disk (back-off after failed uploads), so a plain import does not
        # always call out within the control's time; the check below still fails on any call (6 with the switch
        # removed, measured), so only say that the control proved nothing this time.
        warnings.warn("the control (a plain `import onnxruntime`) made no network call this time")
    calls = off_machine_calls((tmp_path / "pack.trace").read_text())
    assert calls == [], f"{len(calls)} network calls, e.g. {calls[:3]}"


def test_the_trace_filter_tells_loopback_from_the_outside():
    assert off_machine_calls('12 connect(8, {sa_family=AF_INET, sin_port=htons(53), '
                             'sin_addr=inet_addr("10.255.255.53")}, 16) = 0')
    assert off_machine_calls('12 sendto(3, "x", 1, 0, {sa_family=AF_INET6, sin6_port=htons(443), '
                             'inet_pton(AF_INET6, "2001:db8::1", &sin6_addr)}, 28) = 1')
    assert not off_machine_calls('12 connect(8, {sa_family=AF_INET, sin_port=htons(8188), '
                                 'sin_addr=inet_addr("127.0.0.1")}, 16) = 0')
    assert not off_machine_calls('12 connect(3, {sa_family=AF_UNIX, sun_path="/run/x"}, 110) = 0')


def test_onnxruntime_is_imported_in_one_place_only():
    """Everything in the pack that needs onnxruntime goes through latentsync.onnx_runtime."""
    sources = [*(REPO / "latentsync").rglob("*.py"), *(REPO / "nodes").rglob("*.py")]
    offenders = [str(p.relative_to(REPO)) for p in sources if p.name != "onnx_runtime.py"
                 and re.search(r"^\s*(import onnxruntime|from onnxruntime)", p.read_text(), re.M)]
    assert offenders == []


@pytest.mark.parametrize("setting", [None, "0"])
def test_the_import_leaves_the_environment_as_it_was(setting):
    """The switch is set only while onnxruntime initialises; a user's own value is kept and obeyed."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("ORT_DISABLE_TELEMETRY", None)
    if setting is not None:
        env["ORT_DISABLE_TELEMETRY"] = setting
    script = ("import os; from latentsync.onnx_runtime import import_onnxruntime; ort = import_onnxruntime(); "
              "assert ort.InferenceSession; print(repr(os.environ.get('ORT_DISABLE_TELEMETRY')))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == repr(setting)
