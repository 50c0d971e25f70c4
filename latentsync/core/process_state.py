"""Keeping what optional libraries change about the whole process, when we import them late, to ourselves.

Importing pyannote.audio (and with it Lightning) sets environment variables (`PYTORCH_NVML_BASED_CUDA_CHECK`,
`TORCHINDUCTOR_CACHE_DIR`), configures loggers the host already has and adds warning filters; torchao adds
warning filters too. Inside a host such as ComfyUI those changes would outlive our call and change how the
host logs and runs. `contained()` snapshots environment, logger settings and warning filters and puts back
whatever changed.

Not contained: modules stay imported, with what they registered in torch (custom ops, pytree nodes), their
atexit handlers, import hooks and threads (pyannote's telemetry starts one); loggers that did not exist before
keep the settings their library gave them; and the OpenMP variables in `KEPT_ENVIRON`.

`hushed()` keeps what those libraries say about themselves as they load (torch's deprecation notices, torchao's
pytree registrations, diffusers missing a torchao type) off stderr: said again at DEBUG on the
`latentsync.third_party` logger, which the CLI's `--debug` (or a host that logs DEBUG) shows.
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Iterable, Iterator

# Set by scikit-learn (imported by pyannote) for the OpenMP runtime it loads; an OpenMP runtime loaded later
# reads them, and without KMP_DUPLICATE_LIB_OK a second runtime aborts the process instead of loading.
KEPT_ENVIRON = frozenset({"KMP_DUPLICATE_LIB_OK", "KMP_INIT_AT_FORK"})
_LoggerState = tuple[int, bool, bool, tuple[logging.Handler, ...]]
# What a logger that exists only as a placeholder (a parent of a named logger) behaves as.
_FRESH: _LoggerState = (logging.NOTSET, False, True, ())
# Where third-party libraries log notes about their own internals as they load: torch's pytree registry (torchao
# registers its enums there) and diffusers' torchao quantizer (a torchao type it looks for is missing).
NOISY_LOGGERS = ("torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer")
THIRD_PARTY = logging.getLogger("latentsync.third_party")


@contextlib.contextmanager
def contained() -> Iterator[None]:
    """Undo, on exit, changes to `os.environ` (but `KEPT_ENVIRON`), to the level, handlers, `propagate` and `disabled` of every logger
    that existed before (the root included), to `logging.disable` and to `warnings.filters`.

    Loggers created inside are left alone: they are the imported library's own, and resetting them would
    undo its own defaults (transformers', for one) instead of protecting the host's.
    """
    environ = dict(os.environ)
    loggers = _logger_states()
    disabled = logging.root.manager.disable
    # catch_warnings puts warnings.filters (and showwarning) back on exit and invalidates the filter caches.
    with warnings.catch_warnings():
        try:
            yield
        finally:
            _restore_environ(environ)
            _restore_loggers(loggers)
            if logging.root.manager.disable != disabled:
                logging.disable(disabled)


def _logger_states() -> dict[str | None, _LoggerState]:
    states: dict[str | None, _LoggerState] = {None: _state(logging.root)}
    for name, logger in list(logging.root.manager.loggerDict.items()):
        states[name] = _state(logger) if isinstance(logger, logging.Logger) else _FRESH
    return states


def _state(logger: logging.Logger) -> _LoggerState:
    return logger.level, logger.disabled, logger.propagate, tuple(logger.handlers)


def _restore_loggers(states: dict[str | None, _LoggerState]) -> None:
    for name, state in states.items():
        logger = logging.root if name is None else logging.root.manager.loggerDict.get(name)
        if not isinstance(logger, logging.Logger) or _state(logger) == state:
            continue
        level, logger.disabled, logger.propagate, handlers = state
        logger.handlers[:] = handlers
        logger.setLevel(level)  # also clears the level caches of every logger


def _restore_environ(before: dict[str, str]) -> None:
    for key in set(os.environ) - set(before) - KEPT_ENVIRON:
        del os.environ[key]
    for key, value in before.items():
        if os.environ.get(key) != value and key not in KEPT_ENVIRON:
            os.environ[key] = value


@contextlib.contextmanager
def hushed(loggers: Iterable[str] = NOISY_LOGGERS) -> Iterator[None]:
    """What a third-party import or call says inside, `warnings.warn` and records logged on `loggers`, said again
    at DEBUG on `THIRD_PARTY` instead of on stderr. The warning filters in force still decide which warnings
    are raised at all; like `contained()`, warnings another thread raises meanwhile are taken too."""
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        held.append(record)
        return False

    targets = [logging.getLogger(name) for name in loggers]
    for logger in targets:
        logger.addFilter(hold)
    try:
        with warnings.catch_warnings(record=True) as caught:
            yield
    finally:
        for logger in targets:
            logger.removeFilter(hold)
        for record in held:
            THIRD_PARTY.debug("%s: %s", record.name, record.getMessage())
        for warning in caught:
            THIRD_PARTY.debug("%s: %s (%s:%s)", warning.category.__name__, warning.message, warning.filename,
                              warning.lineno)
