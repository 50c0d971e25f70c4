"""The base of every node of the pack: each value a prompt gives is checked against the node's own schema
before the run, so a node declares its choices and ranges once, in `define_schema`."""
from __future__ import annotations

import logging
import math

from ..latentsync.core.options import Option
from ._comfy import io, override

log = logging.getLogger("latentsync")

MAX_LISTED = 20  # as ComfyUI: longer option lists (model files) are not spelled out in a message


class InvalidInput(ValueError):
    """What `LatentSyncNode.validate_inputs` raises. An exception is reported once, on the node; a message
    returned by `validate_inputs` would be repeated by ComfyUI 0.3.75 once per input it was given (all of them
    here). The cost: ComfyUI's own checks of the node (a missing input) are reported on the next try."""


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _combo_problem(name: str, value, options: list) -> str | None:
    if value in options:
        return None
    if not options:
        return f"{name} has nothing to choose from, got {value!r}"
    listed = ", ".join(map(str, options)) if len(options) <= MAX_LISTED else f"the {len(options)} offered"
    return f"{name} must be one of {listed}, got {value!r}"


def _range_problem(name: str, value, low, high) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # ComfyUI has already said the value is not a number
    if math.isnan(value) or (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            bounds = f"from {_number(low)} to {_number(high)}"
        else:
            bounds = f"at least {_number(low)}" if low is not None else f"at most {_number(high)}"
        return f"{name} must be {bounds}, got {_number(value)}"
    return None


def option_input(option: Option, tooltip: str | None = None, **extra) -> io.Input:
    """The node input of a declared option (`core/options.Option`): its name, default, range or choices and help
    (`tooltip` replaces the help where a node says it its own way); `extra` goes to the input (`optional`, ...)."""
    common = {"default": option.default, "tooltip": tooltip or option.help, **extra}
    if option.choices is not None:
        return io.Combo.Input(option.name, options=list(option.choices), **common)
    if option.kind is bool:
        return io.Boolean.Input(option.name, **common)
    if option.kind is str:
        return io.String.Input(option.name, **common)
    numbers = {"min": option.low, "max": option.high, **({"step": option.step} if option.step else {})}
    kind = io.Float if option.kind is float else io.Int
    return kind.Input(option.name, **numbers, **common)


def schema_problems(schema: io.Schema, values: dict) -> dict[str, str]:
    """{input: problem} for each value outside what `schema` declares: a combo value not among its options, a
    number outside its min/max (NaN included). Inputs not given, or linked (None until the run), are skipped."""
    problems = {}
    for spec in schema.inputs:
        value = values.get(spec.id)
        if value is None:
            continue
        if isinstance(spec, io.Combo.Input):
            problem = _combo_problem(spec.id, value, list(spec.options or []))
        elif isinstance(spec, (io.Int.Input, io.Float.Input)):
            problem = _range_problem(spec.id, value, spec.min, spec.max)
        else:
            problem = None
        if problem:
            problems[spec.id] = problem
    return problems


class LatentSyncNode(io.ComfyNode):
    """ComfyUI 0.3.75 checks no V3 combo value, so a bad one (an API prompt, an old workflow) would only fail
    mid-run. `validate_inputs` takes every input (**values: ComfyUI passes only the inputs a signature names),
    which also turns off ComfyUI's own min/max checks; the schema check here does both, NaN included."""

    @classmethod
    def check_inputs(cls, **values) -> dict[str, str]:
        """The node's own checks (model files, inputs that go together): {input: problem}. A problem named here
        replaces the schema's for that input, so a missing model file is explained, not listed."""
        return {}

    @classmethod
    @override
    def validate_inputs(cls, **values) -> bool:
        problems = schema_problems(cls.define_schema(), values)
        problems.update(cls.check_inputs(**values))
        if problems:
            raise InvalidInput("; ".join(problems.values()))
        return True

    @classmethod
    def warned(cls, warnings: list[str]) -> list[str]:
        """`warnings` (a run that changed nothing, a video read upright, ...) said in ComfyUI's console too; the
        node's report (js/node_reports.js) shows the list it is given back."""
        for warning in warnings:
            log.warning("%s: %s", cls.__name__, warning)
        return list(warnings)
