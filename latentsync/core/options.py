"""What a user can set, declared once: an `Option` is a name, a default, one line of help and what values it
takes (a range, or choices). The module that owns a concept declares its options (`sample/settings.py` the
sampler's, `audio/vad.py` the VAD's, ...); the ComfyUI nodes' inputs (`nodes/base.option_input`), the command
line's flags (`cli/options.add_option`), the experiment file's keys and the presets are made from them, and a
value is checked against its declaration once, where it enters (`Option.check`).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Option:
    name: str  # the one name: a node input, an experiment key; the flag is `--name-with-dashes`
    default: Any
    help: str  # one line: a node tooltip and a flag's help
    low: float | None = None  # the range offered and accepted, both ends included
    high: float | None = None
    choices: tuple | None = None
    step: float | None = None  # a number input's increment in the editor
    kind: type | None = None  # str, bool, int or float; None: the default's type (str for choices)

    def __post_init__(self) -> None:
        if self.kind is None:
            kind = str if self.choices or self.default is None else type(self.default)
            object.__setattr__(self, "kind", kind)

    @property
    def flag(self) -> str:
        """The command-line flag: the name with dashes (`vad_policy` -> `--vad-policy`)."""
        return "--" + self.name.replace("_", "-")

    def bounds(self) -> str:
        """The range as a message says it: "from 1 to 200", "at least 0", ""."""
        if self.low is not None and self.high is not None:
            return f"from {_number(self.low)} to {_number(self.high)}"
        if self.low is not None or self.high is not None:
            return f"at least {_number(self.low)}" if self.low is not None else f"at most {_number(self.high)}"
        return ""

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` ("must be from 1 to 200, got 1000"), or None when it is a good one."""
        if self.choices is not None:
            return None if value in self.choices else \
                f"must be one of {', '.join(map(str, self.choices))}, got {value!r}"
        if self.kind is bool:
            return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
        if self.kind is str:
            return None if isinstance(value, str) or value is None else f"must be text, got {value!r}"
        whole = self.kind is int
        wanted = " ".join(filter(None, ("a whole number" if whole else "a number", self.bounds())))
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):  # numpy's too
            return f"must be {wanted}, got {value!r}"
        if (whole and int(value) != value) or (self.low is not None and value < self.low) or \
                (self.high is not None and value > self.high):
            return f"must be {wanted}, got {_number(value)}"
        return None

    def check(self, value: Any, spelled: str | None = None) -> Any:
        """`value` when it is a good one, else a one-line `ValueError` naming the option as the boundary spells
        it (`spelled`: a flag, a key; default its name). Whole floats of an int option come back as ints."""
        problem = self.problem(value)
        if problem:
            raise ValueError(f"{spelled or self.name} {problem}")
        return int(value) if self.kind is int else value

    def parse(self, text: str) -> Any:
        """A command line's text as this option's value, checked (`ValueError` without the name: the parser
        names the flag)."""
        if self.kind in (int, float):
            try:
                value = self.kind(text) if self.kind is float else int(text)
            except ValueError:
                value = text  # not a number: `problem` says what is wanted
        else:
            value = text
        problem = self.problem(value)
        if problem:
            raise ValueError(problem)
        return value


def check_all(options: tuple[Option, ...], values: dict, spell=None) -> dict:
    """`values` with each declared option's value checked (`Option.check`); `spell(name)` is how the boundary
    spells a name (default: the name). Keys that are not among `options` pass unchecked."""
    declared = {option.name: option for option in options}
    return {name: declared[name].check(value, spell(name) if spell else None) if name in declared else value
            for name, value in values.items()}
