"""pyannote.audio as a VAD backend: a segmentation checkpoint from a local file, fully offline.

pyannote.audio is an optional extra (`pip install "comfyui-latentsync[pyannote]"`). Its own loader
unpickles checkpoints with `weights_only=False` and treats any path it cannot find as a hub id, so we
load the file ourselves: `torch.load(weights_only=True)` with only pyannote's plain data classes allowed,
an architecture from a fixed list, and a strict state dict. pyannote 4 sends telemetry unless
PYANNOTE_METRICS_ENABLED is false; we set it around our calls only and put the caller's value back.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..catalogue import CATALOGUE
from ..checkpoint import CheckpointError, describe, file_format, read_checkpoint
from ..onnx_runtime import import_onnxruntime
from ..core.process_state import contained

INSTALL_HINT = ('pyannote.audio is not installed; install the optional extra with '
                '`pip install "pyannote.audio>=4.0.7,<5"` in ComfyUI\'s Python environment '
                '(it needs torch >= 2.8; pin your torch with a constraints file so pip keeps it)')
MODEL_HINT = ("a pyannote segmentation checkpoint, e.g. pyannote/segmentation-3.0's pytorch_model.bin (from "
              f"{CATALOGUE['pyannote'].url}, {CATALOGUE['pyannote'].licence}), downloaded by you and put in "
              f"ComfyUI/models/{Path(CATALOGUE['pyannote'].path).parent}/")
ARCHITECTURES = {  # as pyannote records them: "<module>.<class>"
    "pyannote.audio.models.segmentation.PyanNet.PyanNet": ("pyannote.audio.models.segmentation", "PyanNet"),
    "pyannote.audio.models.segmentation.SSeRiouSS.SSeRiouSS": ("pyannote.audio.models.segmentation", "SSeRiouSS"),
}
# Globals a genuine checkpoint may pickle besides tensors: pyannote's task description and Lightning's
# bookkeeping. Anything else is refused rather than executed.
SAFE_GLOBALS = {
    "pyannote.audio.core.task.Specifications", "pyannote.audio.core.task.Problem",
    "pyannote.audio.core.task.Resolution", "torch.torch_version.TorchVersion",
    "lightning_fabric.utilities.data.AttributeDict", "pytorch_lightning.utilities.parsing.AttributeDict",
    "lightning.fabric.utilities.data.AttributeDict", "collections.OrderedDict", "collections.defaultdict",
}
_ENV = "PYANNOTE_METRICS_ENABLED"
_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def telemetry_off() -> Iterator[None]:
    """pyannote reads its opt-out from the environment at every call; set it for our calls only."""
    with _ENV_LOCK:
        previous = os.environ.get(_ENV)
        os.environ[_ENV] = "false"
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(_ENV, None)
            else:
                os.environ[_ENV] = previous


# Imported together under `contained`, so the imports later in this file find them loaded and change nothing.
_SUBMODULES = ("pyannote.audio.core.task", "pyannote.audio.models.segmentation", "pyannote.audio.pipelines")


def _pyannote():
    if importlib.util.find_spec("onnxruntime") is not None:
        import_onnxruntime()  # pyannote's dependencies import it: first here, with its telemetry off
    try:
        audio = _import("pyannote.audio")
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    for name in _SUBMODULES:
        _import(name)
    return audio


def _import(name: str):
    """Import without leaving process-wide changes behind: Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK and
    configures loggers and warning filters as it loads (`process_state.contained`)."""
    if name in sys.modules:  # loaded already: nothing to contain
        return sys.modules[name]
    with telemetry_off(), contained():
        return importlib.import_module(name)


def load_segmentation(path: str | Path):
    """A pyannote segmentation `Model` from a local `pytorch_model.bin` (or a folder holding one)."""
    return load_pyannote_model(path, ARCHITECTURES, MODEL_HINT)


def load_pyannote_model(path: str | Path, architectures: dict[str, tuple[str, str]], hint: str,
                        what: str = "a segmentation model this backend runs"):
    """A pyannote `Model` from a local `pytorch_model.bin` (or a folder holding one), read as data.

    `architectures` maps the class names a checkpoint may record (`"<module>.<class>"`) to the class that is
    built; `hint` says which file was expected and where to get it; `what` names the kind of model the caller
    runs, for the message that refuses any other architecture.
    """
    _pyannote()
    path = Path(path)
    if path.is_dir():
        path = path / "pytorch_model.bin"
    if not path.is_file():
        raise FileNotFoundError(f"pyannote checkpoint not found: {path}; expected {hint}")
    from pyannote.audio.core import task

    unsafe = set()
    if file_format(path) == "torch-zip":  # other formats are refused or read plainly by read_checkpoint
        try:
            unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception as exc:  # a truncated zip
            raise CheckpointError(f"{path} cannot be read as a pyannote checkpoint ({type(exc).__name__}: "
                                  f"{str(exc)[:200]}); expected {hint}") from exc
    if unsafe - SAFE_GLOBALS:
        refused = ", ".join(sorted(unsafe - SAFE_GLOBALS))
        raise CheckpointError(f"{path} pickles objects that cannot be loaded safely ({refused}); it was not "
                              f"unpickled and nothing was loaded; expected {hint}")
    allowed = [task.Specifications, task.Problem, task.Resolution]
    for name in unsafe - {f"pyannote.audio.core.task.{c.__name__}" for c in allowed}:
        module, _, attr = name.rpartition(".")  # only names from SAFE_GLOBALS get here
        allowed.append(getattr(_import(module), attr))
    checkpoint = read_checkpoint(path, hint, allowed=allowed)
    info = checkpoint.get("pyannote.audio") if isinstance(checkpoint, dict) else None
    if not info or "state_dict" not in checkpoint:
        keys = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path} is not a pyannote.audio checkpoint: it holds {describe(checkpoint)} "
                              f"(top-level: {keys}); expected {hint}")
    architecture = f"{info['architecture']['module']}.{info['architecture']['class']}"
    if architecture not in architectures:
        raise CheckpointError(f"{path} holds a {architecture}, not {what} ({', '.join(architectures)})")
    module, name = architectures[architecture]
    with telemetry_off():
        klass = getattr(_import(module), name)
        # As Lightning does: the saved hyper-parameters the constructor takes (WeSpeaker records fbank settings
        # its subclasses fix), so a genuine checkpoint builds the class it names.
        accepted = inspect.signature(klass).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
        model = klass(**{k: v for k, v in checkpoint.get("hyper_parameters", {}).items()
                         if takes_any or k in accepted})
        model.specifications = info["specifications"]
        model.setup()  # builds the task-dependent classifier the weights include
    state = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("loss_func.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match its {name} architecture: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")
    return model.eval()


def pyannote_speech(audio16k: torch.Tensor, model, *, threshold: float, min_speech_s: float = 0.0,
                    min_silence_s: float = 0.0,
                    progress: Callable[[int, int], None] | None = None) -> list[tuple[float, float]]:
    """Speech regions found by pyannote's voice-activity pipeline on 16 kHz mono audio, in seconds.

    `threshold` is the onset/offset of models that output probabilities; powerset models (such as
    segmentation-3.0) decide speech by their most likely class, so it does not apply to them.
    """
    _pyannote()
    from pyannote.audio.pipelines import VoiceActivityDetection

    def hook(step, artefact, file=None, completed=None, total=None):
        if progress is not None and completed is not None and total:
            progress(int(completed), int(total))

    with telemetry_off():
        pipeline = VoiceActivityDetection(segmentation=model)
        params = {"min_duration_on": min_speech_s, "min_duration_off": min_silence_s}
        if not model.specifications.powerset:
            params |= {"onset": threshold, "offset": threshold}
        pipeline.instantiate(params)
        annotation = pipeline({"waveform": audio16k[None].float(), "sample_rate": 16000}, hook=hook)
    return [(float(s.start), float(s.end)) for s in annotation.get_timeline().support()]
