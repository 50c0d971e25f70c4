"""Every sampler setting once (latentsync/sample/settings.py): the library's defaults, the lipsync command's
flags and the experiment file's keys come from the one table, under one name each; earlier spellings still read.
(The node's inputs are checked against the same table in tests/test_comfyui.py.)"""
import dataclasses
import json

import pytest

from latentsync.cli.main import build_parser
from latentsync.run.experiment import DEFAULTS, load_plan
from latentsync.sample.settings import ALIASES, SETTINGS, SamplerSettings

REQUIRED = ["lipsync", "--video", "v.mp4", "--audio", "a.wav", "--out", "o.mp4", "--unet", "u.pt", "--whisper",
            "t.pt", "--vae", "vae.safetensors"]


def test_the_settings_dataclass_is_the_table():
    assert [(f.name, f.default) for f in dataclasses.fields(SamplerSettings)] == \
        [(s.name, s.default) for s in SETTINGS]
    for setting in SETTINGS:
        assert setting.help and "\n" not in setting.help and len(setting.help) <= 120, setting.name
        if setting.choices:
            assert setting.default in setting.choices
        else:
            assert setting.low <= setting.default <= setting.high, setting.name
    SamplerSettings().validate()


def test_lipsync_flags_are_the_settings_names_with_their_defaults():
    args = build_parser().parse_args(REQUIRED)
    assert {s.name: getattr(args, s.name) for s in SETTINGS} == {s.name: s.default for s in SETTINGS}
    new = build_parser().parse_args([*REQUIRED, "--vad-policy", "skip", "--deepcache-interval", "3",
                                     "--min-silence-s", "0.5", "--crossfade-frames", "2", "--audio-longer", "freeze"])
    old = build_parser().parse_args([*REQUIRED, "--vad", "skip", "--deepcache", "3", "--min-silence", "0.5",
                                     "--crossfade", "2", "--audio-longer", "freeze"])
    for args in (new, old):
        assert (args.vad_policy, args.deepcache_interval, args.min_silence_s, args.crossfade_frames,
                args.audio_longer) == ("skip", 3, 0.5, 2, "freeze")
    with pytest.raises(SystemExit):
        build_parser().parse_args([*REQUIRED, "--vad-policy", "sometimes"])


def test_experiment_keys_are_the_settings_names_and_read_the_old_ones(tmp_path):
    assert {s.name: s.default for s in SETTINGS}.items() <= DEFAULTS.items()
    plan = tmp_path / "configs.json"
    plan.write_text(json.dumps({"defaults": {"deepcache": 2},
                                "configs": [{"name": "a"}, {"name": "b", "vad": "skip", "window": 8}]}))
    _, configs, _ = load_plan(plan)
    assert configs[1]["vad_policy"] == "skip" and "vad" not in configs[1]
    assert [c["deepcache_interval"] for c in configs] == [2, 2]
    settings = SamplerSettings.from_mapping(configs[1])
    assert (settings.vad_policy, settings.window, settings.deepcache_interval) == ("skip", 8, 2)
    plan.write_text(json.dumps({"configs": [{"name": "both", "vad": "skip", "vad_policy": "fast"}]}))
    with pytest.raises(ValueError, match="twice"):
        load_plan(plan)
    with pytest.raises(ValueError, match="twice"):
        SamplerSettings.from_mapping({"vad": "skip", "vad_policy": "fast"})
    assert set(ALIASES.values()) <= {s.name for s in SETTINGS}
