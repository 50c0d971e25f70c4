"""Every option a user can set has one declaration (`latentsync/core/options.Option`, declared in the module that
owns it), and the node inputs, the command-line flags and the experiment keys are made from it: none restates a
default, a range or the choices, and each offers exactly what the declaration says."""
import argparse
import ast
import json
import math
import re

import pytest

from conftest import REPO
from latentsync.audio.vad import THRESHOLD, VAD_OPTIONS
from latentsync.cli.main import build_parser
from latentsync.core.options import Option
from latentsync.core.precision import DTYPE
from latentsync.face.detect import (AUTO_THRESHOLD, CNN_THRESHOLD, DLIB_THRESHOLD, FACE_OPTIONS, INDEX,
                                    INSIGHTFACE_THRESHOLD, POSITION_X, POSITION_Y, SELECT,
                                    THRESHOLD as FACE_THRESHOLD, detector_threshold, make_detector)
from latentsync.face.smooth import SMOOTHING
from latentsync.face.mask import RESOLUTION
from latentsync.media.video import CRF
from latentsync.run.experiment import DEFAULTS, KEYS, load_plan
from latentsync.run.pipeline import DEVICE
from latentsync.sample.cast import CAST_VAD_POLICY
from latentsync.sample.presets import PRESET, PRESETS, RUN_OPTION
from latentsync.sample.settings import SETTINGS, SamplerSettings
from latentsync.score.evaluate import CROPS, FPS, JPEG, MIN_TRACK_FRAMES
from latentsync.unet.compile import COMPILE
from latentsync.upscale.options import (CHUNK, HEIGHT, METHOD, OVERLAP, PRECISION, RESIZE_MODE, RESTORE_CHUNK,
                                        RESTORE_OPTIONS, RESTORE_PRECISION, RESTORE_SIZE, SCALE, TEMPORAL, TILE, WIDTH)

FACES = (RESOLUTION, *FACE_OPTIONS)
UPSCALE_OPTIONS = (METHOD, SCALE, WIDTH, HEIGHT, TILE, OVERLAP, CHUNK, PRECISION)  # the Upscale node's order
SCORE = (FPS, CROPS, MIN_TRACK_FRAMES, JPEG)
DECLARED = {option.name: option for option in (*SETTINGS, *VAD_OPTIONS, *RUN_OPTION.values(), DEVICE, COMPILE,
                                               PRESET, *FACES, *UPSCALE_OPTIONS, *RESTORE_OPTIONS, TEMPORAL,
                                               RESIZE_MODE, CRF, *SCORE)}
# A name that means something else where it is written: not the declared option, so not checked against it.
OTHER_MEANINGS = {
    ("latentsync/cli/features.py", "device"): "the whisper encoder's device (cpu by default)",
    ("latentsync/cli/score.py", "device"): "the scorer's device",
    ("latentsync/cli/upscale.py", "device"): "the upscaler's device",
    ("latentsync/cli/experiment.py", "device"): "the experiment's device",
}
RESTATED = {"default", "min", "max", "choices", "options", "step"}
LIPSYNC = ["lipsync", "--video", "v.mp4", "--audio", "a.wav", "--out", "o.mp4", "--unet", "u.pt", "--whisper", "t.pt",
           "--vae", "vae.safetensors"]


def _literal(node: ast.AST) -> bool:
    """A value written out in the call (a number, a string, a list of them), not taken from a declaration."""
    if isinstance(node, ast.UnaryOp):
        return _literal(node.operand)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return all(_literal(element) for element in node.elts)
    return isinstance(node, ast.Constant) and node.value is not None


def _declared_name(call: ast.Call) -> str | None:
    """The option a node input (`io.X.Input("name", ...)`) or a flag (`add_argument("--name", ...)`) is for."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr in ("Input", "add_argument")) or not call.args:
        return None
    first = call.args[0]
    if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
        return None
    name = first.value.removeprefix("--").replace("-", "_")
    return name if name in DECLARED or name == "vad_threshold" else None


def test_no_node_input_or_flag_restates_a_declared_default_range_or_choices():
    restated = []
    for path in sorted([*(REPO / "nodes").glob("*.py"), *(REPO / "latentsync" / "cli").glob("*.py")]):
        where = path.relative_to(REPO).as_posix()
        for call in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(call, ast.Call) or (name := _declared_name(call)) is None:
                continue
            if (where, name) in OTHER_MEANINGS:
                continue
            for keyword in call.keywords:
                if keyword.arg in RESTATED and _literal(keyword.value):
                    restated.append(f"{where}:{call.lineno} {name} {keyword.arg}=")
    assert not restated, f"written out instead of taken from the declaration: {restated}"


def _flags(command: str) -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {action.dest: action for action in sub._actions}


@pytest.mark.parametrize("command, options", [
    ("lipsync", [*SETTINGS, *RUN_OPTION.values(), DEVICE, SELECT, INDEX, SMOOTHING]),
    ("vad", list(VAD_OPTIONS)),
    ("faces", [*FACES[:4], FACE_THRESHOLD, SMOOTHING]),  # resolution ... index, threshold (--position below)
    ("upscale", [RESIZE_MODE, TILE, OVERLAP, CHUNK, CRF]),  # --scale and --dtype below
    ("score", [MIN_TRACK_FRAMES]),  # --jpeg below
])
def test_each_flag_offers_what_its_declaration_says(command, options):
    flags = _flags(command)
    for option in options:
        action = flags[option.name]
        assert action.option_strings[0] == option.flag and action.default == option.default, option.name
        assert action.help.startswith(option.help), option.name
        if option.kind is bool:
            assert isinstance(action, argparse.BooleanOptionalAction), option.name
            continue
        assert action.type.option is option and (action.choices == option.choices), option.name
    for command, dest in (("lipsync", "vad_threshold"), ("features", "vad_threshold")):
        action = _flags(command)[dest]
        assert action.default == THRESHOLD.default and action.type.option is THRESHOLD
    assert _flags("lipsync")["compile"].choices == COMPILE.choices
    assert _flags("lipsync")["preset"].choices == PRESET.choices and set(PRESETS) < set(PRESET.choices)


def test_flags_spelled_their_own_way_offer_what_their_declarations_say(capsys):
    """upscale's --scale (default: the model's own) and --dtype (the Upscale node's precision), faces' --position
    (the nodes' position_x and position_y as X,Y) and score's --jpeg/--no-jpeg (jpeg_round_trip)."""
    upscale = _flags("upscale")
    assert upscale["scale"].type.option is SCALE and upscale["scale"].default is None
    assert upscale["dtype"].type.option is PRECISION and upscale["dtype"].choices == PRECISION.choices == DTYPE.choices
    assert upscale["dtype"].default == PRECISION.default and upscale["dtype"].help.startswith(PRECISION.help)
    argv = ["upscale", "i.png", "--out", "o.png", "--mode", "bicubic"]
    for flag, good, bad in (("--scale", "16", "16.5"), ("--scale", "0.05", "0"), ("--size", "16384x1", "16385x1"),
                            ("--tile", "4096", "4097"), ("--overlap", "256", "257"), ("--chunk", "256", "0"),
                            ("--crf", "51", "52"), ("--dtype", "bf16", "fp8")):
        build_parser().parse_args([*argv, flag, good])
        with pytest.raises(SystemExit):
            build_parser().parse_args([*argv, flag, bad])
        line = capsys.readouterr().err.strip()
        assert line.startswith(f"error: argument {flag}") and "\n" not in line, line
    faces = ["faces", "v.mp4", "--select", "position"]
    assert build_parser().parse_args([*faces, "--position", "0,1"]).position == (0.0, 1.0)
    for bad in ("1.5,0.5", "0.5,-0.1", "nan,0.5", "0.5"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*faces, f"--position={bad}"])
        assert "--position" in capsys.readouterr().err
    assert _flags("faces")["position"].default is None  # the library's default: the nodes' defaults
    assert build_parser().parse_args(["faces", "v.mp4"]).threshold == FACE_THRESHOLD.default == -1
    score = _flags("score")
    assert isinstance(score["jpeg"], argparse.BooleanOptionalAction) and JPEG.name in score["jpeg"].help


@pytest.mark.parametrize("option", [*SETTINGS, *VAD_OPTIONS], ids=lambda option: option.name)
def test_a_flag_refuses_what_the_declaration_refuses_and_names_itself(option, capsys):
    if option.choices:
        bad, good = "nonsense", option.default
    else:
        bad, good = str(option.high * 10 + 1 if option.high else -1), str(option.default)
    argv = [*LIPSYNC, option.flag, good] if option in SETTINGS else ["vad", "a.wav", option.flag, good]
    assert getattr(build_parser().parse_args(argv), option.name) == option.default
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv[:-1], bad])
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"error: argument {option.flag}") and "\n" not in line, line


def test_the_library_accepts_the_ranges_the_node_and_the_flags_offer():
    """SamplerSettings.validate checks each setting against its declaration: the ends of each range pass, a step
    beyond either end is refused with the setting's name and range."""
    for setting in SETTINGS:
        if setting.choices:
            continue
        for end in (setting.low, setting.high):
            SamplerSettings(**{setting.name: setting.kind(end)}).validate()
        for beyond in (setting.low - 1, setting.high + 1, math.nan):
            with pytest.raises(ValueError, match=rf"^{setting.name} must be .*{re.escape(setting.bounds())}"):
                SamplerSettings(**{setting.name: beyond}).validate()
    with pytest.raises(ValueError, match="^steps must be a whole number from 1 to 200, got 1000$"):
        SamplerSettings(steps=1000).validate()


def test_experiment_keys_are_checked_against_their_declarations(tmp_path):
    assert {option.name: option.default for option in KEYS}.items() <= DEFAULTS.items()
    plan = tmp_path / "configs.json"
    for key, bad in (("steps", 0), ("dtype", "fp8"), ("quantization", "int2"), ("guidance", 11), ("restore", "x")):
        plan.write_text(f'{{"configs": [{{"name": "a", "{key}": {bad!r}}}]}}'.replace("'", '"'))
        with pytest.raises(ValueError, match=rf"configs.json: {key} in 'a' must be"):
            load_plan(plan)


def test_the_score_block_of_an_experiment_is_checked_against_the_scorers_declarations(tmp_path):
    plan = tmp_path / "configs.json"
    plan.write_text(json.dumps({"configs": [{"name": "a"}]}))
    assert load_plan(plan)[2] == {"crops": CROPS.default, "min_track": MIN_TRACK_FRAMES.default, "jpeg": "auto"}
    for key, bad in (("crops", "mediapipe"), ("min_track", -1), ("min_track", 2.5), ("min_track", 1001)):
        plan.write_text(json.dumps({"configs": [{"name": "a"}], "score": {key: bad}}))
        with pytest.raises(ValueError, match=rf"configs.json: score.{key} must be"):
            load_plan(plan)


def test_the_face_threshold_means_each_detectors_own_score():
    """One number on the node and the flag (-1: the detector's default), checked against what it means for the
    chosen detector: a dlib HOG score (may be negative), the CNN's confidence or insightface's probability (0 to 1)."""
    assert detector_threshold(FACE_THRESHOLD.default) is None and detector_threshold(None) is None
    assert detector_threshold(-0.5) == -0.5 and DLIB_THRESHOLD.default == 0 and INSIGHTFACE_THRESHOLD.default == 0.5
    assert (FACE_THRESHOLD.low, FACE_THRESHOLD.high) == (DLIB_THRESHOLD.low, DLIB_THRESHOLD.high)
    for detector, bad in (("dlib", math.nan), ("dlib", 6.0), ("insightface", -0.5), ("insightface", 1.5),
                          ("auto", 6.0), ("dlib-cnn", -0.5)):
        with pytest.raises(ValueError, match=f"^the {detector} face threshold must be"):
            make_detector(detector, bad)  # before any model loads
    with pytest.raises(ValueError, match="^threshold must be a number from -1 to 5, got nan$"):
        detector_threshold(math.nan)
    with pytest.raises(ValueError,
                       match="^the face detector must be one of auto, dlib, dlib-cnn, insightface, got 'mediapipe'$"):
        make_detector("mediapipe")


def test_a_face_selection_is_checked_against_the_nodes_declarations():
    from latentsync.face.detect import selection_problem

    assert selection_problem(SELECT.default, INDEX.high, (POSITION_X.high, POSITION_Y.low)) is None
    assert "from 0 to 32, got 33" in selection_problem("index", INDEX.high + 1)
    assert "from 0 to 1" in selection_problem("position", 0, (POSITION_X.high + 0.5, POSITION_Y.default))


def _said(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# Where a help page (js/docs/<node>/en.md) states a default: (page, pattern, the declared values its groups state).
HELP_PAGE_DEFAULTS = [
    ("LatentSyncDetectFaces",
     r"(-?\d+) keeps the detector's default \(auto HOG score (\S+), dlib score (\S+), dlib-cnn confidence (\S+), "
     r"insightface probability (\S+)\)",
     (FACE_THRESHOLD.default, AUTO_THRESHOLD.default, DLIB_THRESHOLD.default, CNN_THRESHOLD.default,
      INSIGHTFACE_THRESHOLD.default)),
    ("LatentSyncDetectFaces", r"at the defaults \((\w+), (\w+), (\d+)\)",
     (FACES[1].default, SELECT.default, RESOLUTION.default)),
    ("LatentSyncDetectFaces", r"`(\d+)`, `(\w+)`, `(\w+)`, threshold (-?\d+)",
     (RESOLUTION.default, FACES[1].default, SELECT.default, FACE_THRESHOLD.default)),
    ("LatentSyncUpscale", r"tile \((\d+)\), overlap \((\d+)\) and chunk \((\d+)\)",
     (TILE.default, OVERLAP.default, CHUNK.default)),
    ("LatentSyncUpscale", r"\*\*width\*\* — an exact output width in pixels; (\d+) takes it", (WIDTH.default,)),
    ("LatentSyncUpscale", r"\*\*precision\*\* — the model's precision: `(\w+)`", (PRECISION.default,)),
    ("LatentSyncRestoreMouths", r"\*\*size\*\* — the output crop side in pixels; (\d+) takes",
     (RESTORE_SIZE.default,)),
    ("LatentSyncRestoreMouths", r"chunk (\d+) fits an 8 GB card", (RESTORE_CHUNK.default,)),
    ("LatentSyncRestoreMouths", r"\*\*precision\*\* — `(\w+)` runs fp32", (RESTORE_PRECISION.default,)),
    ("LatentSyncSyncNetScore", r"\(reference: (\d+), i\.e\. 2 s\)", (MIN_TRACK_FRAMES.default,)),
    ("LatentSyncSyncNetScore", r"`(\w+)` \(default\) is `on` with `crops = s3fd`", (JPEG.default,)),
]


@pytest.mark.parametrize("page, pattern, declared", HELP_PAGE_DEFAULTS,
                         ids=[f"{page}-{i}" for i, (page, _, _) in enumerate(HELP_PAGE_DEFAULTS)])
def test_the_help_pages_state_the_declared_defaults(page, pattern, declared):
    text = " ".join((REPO / "js" / "docs" / page / "en.md").read_text(encoding="utf-8").split())
    found = re.search(pattern, text)
    assert found, (page, pattern)
    assert found.groups() == tuple(_said(value) for value in declared), (page, found.group(0))


def test_options_check_one_line_naming_the_option_as_spelled():
    option = Option("padding_ms", 30, "help", 0, 2000, step=10)
    assert option.check(40.0) == 40 and option.kind is int
    for bad, said in ((-1, "from 0 to 2000, got -1"), (2.5, "a whole number from 0 to 2000, got 2.5"),
                      ("x", "got 'x'"), (True, "got True"), (math.inf, "got inf")):
        with pytest.raises(ValueError, match=re.escape(said)) as caught:
            option.check(bad, "--padding-ms")
        assert str(caught.value).startswith("--padding-ms must be ")
    assert DTYPE.problem("fp8") == "must be one of auto, fp32, fp16, bf16, got 'fp8'"
    assert CAST_VAD_POLICY.default == "silence" and CAST_VAD_POLICY.choices == DECLARED["vad_policy"].choices


def test_the_vad_thresholds_default_is_written_once():
    """The literal 0.5 as a VAD threshold's default (a keyword default, a parameter default, a declaration) appears
    once in latentsync/ and nodes/: THRESHOLD in audio/vad.py."""
    found = []
    for path in sorted([*(REPO / "latentsync").rglob("*.py"), *(REPO / "nodes").glob("*.py")]):
        where = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.arguments):
                named = [*node.args[len(node.args) - len(node.defaults):], *node.kwonlyargs]
                values = [*node.defaults, *node.kw_defaults]
                found += [f"{where}:{arg.lineno}" for arg, value in zip(named, values)
                          if "threshold" in arg.arg and "face" not in where and isinstance(value, ast.Constant)
                          and value.value == 0.5]
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and \
                    "threshold" in str(node.args[0].value) and "face" not in where:
                values = [*node.args[1:2], *(k.value for k in node.keywords if k.arg == "default")]
                found += [f"{where}:{node.lineno}" for value in values
                          if isinstance(value, ast.Constant) and value.value == 0.5]
    assert found == [f"latentsync/audio/vad.py:{_line_of('THRESHOLD = Option(')}"], found


def _line_of(text: str) -> int:
    lines = (REPO / "latentsync" / "audio" / "vad.py").read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, 1) if line.startswith(text))


@pytest.mark.comfyui
def test_each_node_input_offers_what_its_declaration_says(object_info):
    """The sampler nodes' settings and preset, the VAD node's options, the UNet loader's, the face, upscale,
    restore and score nodes', as ComfyUI serves them: exactly the declaration's default, range or choices (the face
    resolution as text, as saved workflows hold it), in the order saved workflows store their values."""
    expected = {"LatentSyncSampler": [*SETTINGS, PRESET], "LatentSyncSampleVideo": [*SETTINGS, PRESET, *FACE_OPTIONS,
                                                                                    CRF],
                "LatentSyncSpeakersSampler": [CAST_VAD_POLICY if s.name == "vad_policy" else s for s in SETTINGS],
                "LatentSyncVAD": list(VAD_OPTIONS), "LatentSyncUNetLoader": [DTYPE, RUN_OPTION["quantization"],
                                                                           COMPILE],
                "LatentSyncDetectFaces": list(FACE_OPTIONS), "LatentSyncUpscale": list(UPSCALE_OPTIONS),
                "LatentSyncRestoreMouths": [*RESTORE_OPTIONS, TEMPORAL], "LatentSyncSyncNetScore": list(SCORE)}
    order = {"LatentSyncDetectFaces": ["images", "resolution", "detector", "select", "index", "position_x",
                                       "position_y", "threshold", "track_all", "smoothing"],
             "LatentSyncUpscale": ["images", "method", "model_name", "scale", "width", "height", "tile", "overlap",
                                   "chunk", "precision", "upscale_model", "faces", "fit_to_faces", "mouth_only"],
             "LatentSyncRestoreMouths": ["images", "faces", "model_name", "strength", "feather", "size", "chunk",
                                         "precision", "restore_model", "temporal"],
             "LatentSyncSyncNetScore": ["images", "audio", "fps", "syncnet_model", "crops", "s3fd_model", "min_track",
                                        "jpeg_round_trip", "faces", "source_images"]}
    for node, names in order.items():
        info = object_info[node]["input"]
        assert [*info.get("required", {}), *info.get("optional", {})] == names, node
    spec = object_info["LatentSyncDetectFaces"]["input"]["required"]["resolution"]
    assert list(spec[1].get("options", spec[0])) == [str(side) for side in RESOLUTION.choices]
    assert spec[1]["default"] == str(RESOLUTION.default)
    for node, options in expected.items():
        info = object_info[node]["input"]
        inputs = {**info.get("required", {}), **info.get("optional", {})}
        for option in options:
            kind, spec = inputs[option.name][0], inputs[option.name][1]
            assert spec.get("default") == option.default, (node, option.name)
            if option.choices:
                assert list(spec.get("options", kind)) == list(option.choices), (node, option.name)
            else:
                assert (spec.get("min"), spec.get("max")) == (option.low, option.high), (node, option.name)


def test_every_declared_option_has_one_short_line_of_help():
    """A declaration's help is the node's tooltip and the flag's help: one line of at most 120 characters (what
    ComfyUI shows without wrapping; tests/test_comfyui.py checks the served tooltips too)."""
    import importlib
    import pkgutil

    import latentsync
    from latentsync.core.options import Option

    found = {}
    for module in pkgutil.walk_packages(latentsync.__path__, "latentsync."):
        if not module.name.endswith("__main__"):
            for name, value in vars(importlib.import_module(module.name)).items():
                if isinstance(value, Option):
                    found[id(value)] = (f"{module.name}.{name}", value.help)
    assert len(found) > 40  # every group is declared: sampler, run, VAD, faces, upscale, score ...
    long = [(where, len(text)) for where, text in found.values() if "\n" in text or len(text) > 120]
    assert not long, long
