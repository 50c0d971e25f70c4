"""How to sample: every sampler setting once, with its default, its range and one line of help.

The ComfyUI sampler node's inputs, the `lipsync` command's flags and the experiment file's keys are all made
from `SETTINGS`, under one name each: a flag is the name with dashes (`vad_policy` -> `--vad-policy`). The
spellings used before settings had one name (`--vad`, `"deepcache"`, ...) are still read (`ALIASES`).
Defaults are the reference's (`inference.sh`): DDIM, 20 steps, guidance 1.5, seed 1247, 16-frame windows;
DeepCache off (the reference's `--enable_deepcache` is interval 3).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from ..core.options import Option
from .schedulers import SCHEDULERS, make_scheduler

VAD_POLICIES = ("off", "silence", "skip", "fast")
AUDIO_LONGER = ("loop", "freeze")
AUDIO_SHORTER = ("stop", "keep")

# Classifier-free guidance beyond this only overshoots: the latents leave the VAE's range and decode to noise.
MAX_GUIDANCE = 10.0
MAX_WINDOW = 24  # the motion modules' position table


Setting = Option  # a sampler setting is an option like any other (core/options.py)


SETTINGS: tuple[Setting, ...] = (
    Setting("scheduler", "ddim", "ddim: the reference; dpmpp_2m: good in fewer steps; euler: Euler on the same "
            "schedule.", choices=tuple(SCHEDULERS)),
    Setting("steps", 20, "Denoising steps per window (reference: 20).", 1, 200),
    Setting("guidance", 1.5, "Classifier-free guidance on the audio (reference 1.5); 1 is off and twice as fast.",
            1.0, MAX_GUIDANCE, step=0.05),
    Setting("seed", 1247, "Seed of the initial noise, one noise shared by all frames as the reference does.",
            0, 2**63 - 1),
    Setting("deepcache_interval", 0, "DeepCache: run the full UNet every N-th step, reuse its deep features "
            "between (0 or 1: off).", 0, 10),
    Setting("window", 16, "Frames denoised together (the model was trained on 16).", 1, MAX_WINDOW),
    Setting("vad_policy", "off", "With speech segments: what pauses get; off is the reference, silence/skip/fast "
            "save motion or time.", choices=tuple(VAD_POLICIES)),
    Setting("min_silence_s", 0.3, "skip/fast: pauses at least this long (seconds) are skipped or sped up.",
            0.0, 10.0, step=0.05),
    Setting("crossfade_frames", 3, "silence/fast: frames over which silence fades in; skip: frames of cross-fade "
            "into the passed-through frames.", 0, 25),
    Setting("fast_steps", 6, "fast: steps used for pauses.", 1, 200),
    Setting("audio_longer", "loop", "Audio longer than the video: loop the frames back and forth (reference), "
            "or freeze.", choices=tuple(AUDIO_LONGER)),
    Setting("audio_shorter", "stop", "Audio shorter than the video: stop at its end, or keep the remaining "
            "frames unchanged.", choices=tuple(AUDIO_SHORTER)),
)
SETTING = {s.name: s for s in SETTINGS}
# Earlier spellings (CLI flags without dashes' suffixes, experiment keys) -> the one name.
ALIASES = {"vad": "vad_policy", "deepcache": "deepcache_interval", "min_silence": "min_silence_s",
           "crossfade": "crossfade_frames"}


def one_spelling(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with earlier spellings (`ALIASES`) under their one name; a setting given twice is refused."""
    renamed = {ALIASES.get(key, key): value for key, value in values.items()}
    if len(renamed) != len(values):
        twice = sorted(key for key in values if key in ALIASES and ALIASES[key] in values)
        raise ValueError(f"{', '.join(ALIASES[key] for key in twice)} is given twice (also as "
                         f"{', '.join(twice)})")
    return renamed


def _default(name: str):
    return field(default=SETTING[name].default)


@dataclass
class SamplerSettings:
    """How to sample; see `SETTINGS` for what each setting means."""

    scheduler: str = _default("scheduler")
    steps: int = _default("steps")
    guidance: float = _default("guidance")  # <= 1 runs without the unconditional half
    seed: int = _default("seed")
    deepcache_interval: int = _default("deepcache_interval")  # 0 or 1 = off; k = full UNet every k-th step
    window: int = _default("window")  # frames per UNet call
    vad_policy: str = _default("vad_policy")
    min_silence_s: float = _default("min_silence_s")  # skip/fast: shorter pauses are generated as speech
    crossfade_frames: int = _default("crossfade_frames")
    fast_steps: int = _default("fast_steps")
    audio_longer: str = _default("audio_longer")
    audio_shorter: str = _default("audio_shorter")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "SamplerSettings":
        """The settings named in `values` (one names or `ALIASES`); other keys are not settings and are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in one_spelling(values).items() if name in names})

    def validate(self, max_window: int = MAX_WINDOW) -> "SamplerSettings":
        """Raise `ValueError` naming the first bad setting: each against its declaration (`SETTINGS`: the same
        ranges and choices the node and the flags offer), then what is not a range. Returns the settings."""
        for setting in SETTINGS:
            setattr(self, setting.name, setting.check(getattr(self, setting.name)))
        for steps in (self.steps, self.fast_steps):
            make_scheduler(self.scheduler, steps)  # its own limits (DDIM: 999), before any model runs
        if self.window > max_window:
            raise ValueError(f"window must be at most {max_window} frames (the motion modules' position table), "
                             f"got {self.window}")
        return self


def flag(name: str) -> str:
    """The command-line flag of a setting."""
    return "--" + name.replace("_", "-")


def old_flags(name: str) -> list[str]:
    """Earlier flags of a setting, still accepted."""
    return [flag(alias) for alias, target in ALIASES.items() if target == name]
