"""A failure as one line of text, the cause first: what the command line prints and the experiment records."""
from __future__ import annotations

import re
import sys

# Failures a user can act on (a missing or damaged file, a bad setting, a missing package); the library's own
# error classes derive from these. Their message is shown as it is; anything else also shows its type, since
# it is probably a bug and the type is the first thing to search for.
EXPECTED = (OSError, RuntimeError, ValueError, ImportError)


def error_line(exc: BaseException) -> str:
    """`exc` as one line of text (no `error: ` prefix): multi-line messages are joined."""
    # "[Errno 1094995529]" (FFmpeg's code, also inside messages that wrap PyAV's errors) helps no user.
    message = re.sub(r"\[Errno -?\d+\]\s*", "", _ffmpeg_message(exc) or str(exc))
    if not isinstance(exc, EXPECTED) or not message.strip():
        message = f"{type(exc).__name__}: {message}".rstrip(": ")
    return join_lines(message)


def join_lines(text: str) -> str:
    """The non-blank lines of `text` on one line, separated by "; " unless a line already ends a clause."""
    parts = [line.strip() for line in text.splitlines() if line.strip()]
    joined = ""
    for part in parts:
        if joined:
            joined += " " if joined[-1] in ".:;,([{" else "; "
        joined += part
    return joined


def _ffmpeg_message(exc: BaseException) -> str | None:
    """PyAV's own errors read "Invalid data found ...: 'x.mp4'"; where the error names a file (and not an FFmpeg
    function such as 'avcodec_receive_frame()'), say it first."""
    av = sys.modules.get("av")  # not imported: the error cannot be PyAV's
    if av is None or not isinstance(exc, av.error.FFmpegError):
        return None
    reason = exc.strerror or str(exc)
    filename = exc.filename
    if filename and not str(filename).endswith(")"):
        return f"cannot read {filename}: {reason}"
    return f"FFmpeg failed: {reason}"
