"""onnxruntime, imported so that it stays offline.

Since 1.29, onnxruntime's Linux and macOS wheels send usage telemetry: from the moment the module is imported,
a background uploader looks up and contacts Microsoft's event servers every few seconds for as long as the
process lives (a ComfyUI server runs for days). `onnxruntime.disable_telemetry_events()` does not stop it;
the environment variable `ORT_DISABLE_TELEMETRY=1` does, but only if it is set when onnxruntime initialises,
after which the decision holds for the process. So the pack imports onnxruntime here only, with that variable
set for the duration of the import and the caller's environment restored right after. A user who sets the
variable themselves (to any value) is obeyed.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from types import ModuleType

TELEMETRY_SWITCH = "ORT_DISABLE_TELEMETRY"
_LOCK = threading.Lock()
_checked = False  # imported here, or the warning about an earlier import already given
log = logging.getLogger(__name__)


def import_onnxruntime() -> ModuleType:
    """`import onnxruntime` with its telemetry off; raises ImportError with an install hint if it is missing."""
    global _checked
    with _LOCK:
        module = sys.modules.get("onnxruntime")
        if module is not None:
            if not _checked and os.environ.get(TELEMETRY_SWITCH) is None:
                log.warning("onnxruntime was imported before this pack (by another node pack?), so its telemetry "
                            "may be on; set %s=1 before starting ComfyUI to keep it offline", TELEMETRY_SWITCH)
            _checked = True
            return module
        caller_set = TELEMETRY_SWITCH in os.environ
        if not caller_set:
            os.environ[TELEMETRY_SWITCH] = "1"
        try:
            import onnxruntime
        except ImportError as exc:
            raise ImportError("onnxruntime is not installed; run `pip install onnxruntime` (or onnxruntime-gpu) "
                              "in ComfyUI's Python environment") from exc
        finally:
            if not caller_set:
                os.environ.pop(TELEMETRY_SWITCH, None)
        _checked = True
        return onnxruntime
