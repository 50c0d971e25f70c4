"""Who speaks when: pyannote's speaker-diarization-3.1 from local files (random weights in the official layouts),
offline and safely loaded, and speaker turns written as RTTM."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import socket
import sys
from typing import Iterator

import pytest
import torch

import two_people
from conftest import missing
from hostile_files import intact, make_target, write_hostile
from latentsync.audio.diarize import SpeakerTurns, diarize, load_diarization, parse_rttm
from latentsync.audio.vad import SpeechSegments
from latentsync.catalogue import CATALOGUE
from latentsync.checkpoint import CheckpointError

RATE = 16000


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """models/pyannote/ with speaker-diarization-3.1/config.yaml, segmentation-3.0 and the WeSpeaker embedding."""
    # find_spec, not an import: pyannote is imported by the pack's loader only, inside its containment
    if importlib.util.find_spec("pyannote") is None:
        missing("pyannote.audio (the optional pyannote extra)")
    from scripts.model_files import write_pyannote_diarization

    return write_pyannote_diarization(tmp_path_factory.mktemp("models") / "pyannote")


@pytest.fixture(scope="module")
def mix():
    return torch.from_numpy(two_people.mix())


def copy_layout(models, target, config: str | None = None):
    """The three files of `models` under `target` (a models/pyannote/), the config's text replaced if given."""
    for folder in ("speaker-diarization-3.1", "segmentation-3.0", "wespeaker-voxceleb-resnet34-LM"):
        shutil.copytree(models.parent / folder, target / folder)
    if config is not None:
        (target / "speaker-diarization-3.1" / "config.yaml").write_text(config)
    return target / "speaker-diarization-3.1"


class NetworkUsed(BaseException):
    """Not an Exception: retry loops (huggingface_hub's) do not swallow it, so the first attempt ends the call."""


@contextlib.contextmanager
def no_network() -> Iterator[list]:
    """Every way out of the process through Python's socket module is refused and recorded (the list it gives);
    the hub is not told to stay offline, so anything that tries to fetch reaches the guard."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise NetworkUsed(f"network use: {args[:2]}")

    with pytest.MonkeyPatch.context() as patch:
        for owner, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"), (socket, "getaddrinfo"),
                            (socket, "create_connection")):
            patch.setattr(owner, name, refuse)
        patch.delenv("HF_HUB_OFFLINE", raising=False)
        hub = sys.modules.get("huggingface_hub.constants")
        if hub is not None:  # read once, at its import
            patch.setattr(hub, "HF_HUB_OFFLINE", False)
        yield attempts


@pytest.fixture(scope="module")
def pipeline(models):
    """Loaded with the network guarded: loading is where pyannote would resolve a name on the hub."""
    with no_network() as attempts:
        loaded = load_diarization(models)
    assert attempts == []
    return loaded


def flat(spans) -> list[float]:
    return [t for span in spans for t in span]


def check_structure(turns: SpeakerTurns, samples: int) -> None:
    assert turns.duration == pytest.approx(samples / RATE)
    assert turns.speakers, "the random model found no speech at all; the test would prove nothing"
    for name, speech in turns.speakers.items():
        assert re.fullmatch(r"SPEAKER_\d\d", name), name
        times = flat(speech.speech)
        assert times == sorted(times) and all(s < e for s, e in speech.speech)  # sorted, non-overlapping
        assert times[0] >= 0 and times[-1] <= turns.duration
    firsts = [turns.speakers[name].speech[0][0] for name in turns.names]
    assert firsts == sorted(firsts) and set(turns.names) == set(turns.speakers)


def test_runs_offline_from_local_files(pipeline, mix):
    with no_network() as attempts:
        turns = diarize(mix, pipeline, num_speakers=2)
    assert attempts == []
    check_structure(turns, mix.numel())
    assert len(turns.speakers) <= 2


def test_the_guard_would_catch_a_fetch(pipeline, tmp_path):
    """Control: pyannote resolving a hub id itself (what the pack never lets it do) reaches the guard."""
    with no_network() as attempts, pytest.raises(NetworkUsed):
        sys.modules["pyannote.audio"].Model.from_pretrained(CATALOGUE["wespeaker"].source, cache_dir=tmp_path)
    assert attempts


def test_turns_are_pyannotes_output_and_progress_and_telemetry(models, pipeline, mix, monkeypatch):
    monkeypatch.setenv("PYANNOTE_METRICS_ENABLED", "true")  # a user who opted in elsewhere keeps that
    outputs, seen = [], []

    def recording(*args, **kwargs):  # the pipeline, keeping what it returned
        outputs.append(pipeline(*args, **kwargs))
        return outputs[-1]

    turns = diarize(mix, recording, max_speakers=1,
                    progress=lambda done, total: seen.append((done, total, os.environ["PYANNOTE_METRICS_ENABLED"])))
    assert os.environ["PYANNOTE_METRICS_ENABLED"] == "true"
    check_structure(turns, mix.numel())
    assert len(turns.speakers) == 1
    annotation = outputs[0].speaker_diarization
    assert set(annotation.labels()) == set(turns.speakers)
    for label in annotation.labels():
        expected = [(s.start, min(s.end, turns.duration)) for s in annotation.label_timeline(label).support()]
        assert flat(turns.speakers[label].speech) == pytest.approx(flat(expected))
    assert {env for _, _, env in seen} == {"false"}
    done = [d for d, _, _ in seen]
    assert done == sorted(done) and done[-1] == seen[-1][1]

    monkeypatch.delenv("PYANNOTE_METRICS_ENABLED")
    load_diarization(models)
    assert "PYANNOTE_METRICS_ENABLED" not in os.environ


def test_cancelled_by_progress(pipeline, mix):
    def stop(done, total):
        raise InterruptedError("stop")

    with pytest.raises(InterruptedError):
        diarize(mix, pipeline, progress=stop)


def test_bad_calls_are_refused_before_running(pipeline, mix):
    with pytest.raises(ValueError, match="at least 0.1 s"):
        diarize(mix[None], pipeline)
    with pytest.raises(ValueError, match="num_speakers must be a whole number"):
        diarize(mix, pipeline, num_speakers=0)
    with pytest.raises(ValueError, match="not both"):
        diarize(mix, pipeline, num_speakers=2, max_speakers=3)
    with pytest.raises(ValueError, match=r"min_speakers \(3\) is above max_speakers \(2\)"):
        diarize(mix, pipeline, min_speakers=3, max_speakers=2)


def test_missing_files_say_where_they_were_looked_for(models, tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        load_diarization(tmp_path / "speaker-diarization-3.1")
    message = str(caught.value)
    assert str(tmp_path / "speaker-diarization-3.1" / "config.yaml") in message
    assert CATALOGUE["diarization"].url in message

    config = (models / "config.yaml").read_text().replace("pyannote/wespeaker-voxceleb-resnet34-LM",
                                                          "someone/not-downloaded")
    folder = copy_layout(models, tmp_path / "pyannote", config)
    with pytest.raises(FileNotFoundError) as caught:
        load_diarization(folder)
    message = str(caught.value)
    assert str(tmp_path / "pyannote" / "not-downloaded") in message and "someone/not-downloaded" in message
    assert "https://huggingface.co/someone/not-downloaded" in message

    shutil.rmtree(tmp_path / "pyannote" / "segmentation-3.0")
    with pytest.raises(FileNotFoundError) as caught:
        load_diarization(folder / "config.yaml")  # the file itself, or its folder
    assert str(tmp_path / "pyannote" / "segmentation-3.0" / "pytorch_model.bin") in str(caught.value)
    assert CATALOGUE["pyannote"].licence in str(caught.value)


def test_a_pickled_payload_in_the_embedding_is_never_run(models, tmp_path):
    folder = copy_layout(models, tmp_path / "pyannote")
    embedding = tmp_path / "pyannote" / "wespeaker-voxceleb-resnet34-LM" / "pytorch_model.bin"
    target = make_target(tmp_path / "target.bin")
    for kind in ("pickle-in-zip", "pickle"):
        write_hostile(embedding, kind, target)
        with pytest.raises(CheckpointError) as caught:
            load_diarization(folder)
        assert intact(target), kind
        assert str(embedding) in str(caught.value) and "nothing was loaded" in str(caught.value)


def test_a_model_in_the_wrong_slot_is_refused_by_name(models, tmp_path):
    folder = copy_layout(models, tmp_path / "pyannote")
    wespeaker = tmp_path / "pyannote" / "wespeaker-voxceleb-resnet34-LM" / "pytorch_model.bin"
    segmentation = tmp_path / "pyannote" / "segmentation-3.0" / "pytorch_model.bin"
    shutil.copy(wespeaker, segmentation)
    with pytest.raises(CheckpointError, match=r"holds a pyannote\.audio\.models\.embedding\.wespeaker\."
                                              r"WeSpeakerResNet34, not a segmentation model"):
        load_diarization(folder)
    shutil.copy(models.parent / "segmentation-3.0" / "pytorch_model.bin", segmentation)
    shutil.copy(segmentation, wespeaker)
    with pytest.raises(CheckpointError, match=r"PyanNet, not a speaker-embedding model"):
        load_diarization(folder)


def test_configs_the_pack_does_not_run_are_refused(models, tmp_path):
    text = (models / "config.yaml").read_text()
    config = copy_layout(models, tmp_path / "pyannote") / "config.yaml"
    for change, message in (
        (("AgglomerativeClustering", "VBxClustering"), "clusters speakers with VBxClustering"),
        (("pyannote.audio.pipelines.SpeakerDiarization", "pyannote.audio.pipelines.VoiceActivityDetection"),
         "not a pyannote speaker-diarization config"),
        (("embedding_batch_size: 32", "embedding_batch_size: many"), "embedding_batch_size must be a positive int"),
        (("segmentation_batch_size: 32", "segmentation_batch_size: 32\n    token: abc"), r"options the pack does "
                                                                                       r"not know \(token\)"),
        (("pyannote/segmentation-3.0", "../../elsewhere"), "names its segmentation model '../../elsewhere'"),
        (("threshold: 0.7045654963945799", "thresh: 0.7"), "its params do not fit the pipeline"),
        (("    min_cluster_size: 12\n", ""), "its params leave some of the pipeline's unset"),
    ):
        config.write_text(text.replace(*change))
        assert config.read_text() != text, change
        with pytest.raises(ValueError, match=message):
            load_diarization(config)


# RTTM ----------------------------------------------------------------------------------------------------------

HAND_WRITTEN = """\
# two speakers; bob's second line comes first, alice's turns overlap and touch, one turn runs past the end
SPEAKER mix 1 3.000 1.000 <NA> <NA> bob <NA> <NA>
SPEAKER mix 1 0.000 1.500 <NA> <NA> alice <NA> <NA>

SPEAKER mix 1 1.000 1.000 <NA> <NA> alice <NA> <NA>
;; a NIST-style comment
SPKR-INFO mix 1 <NA> <NA> <NA> unknown bob <NA> <NA>
SPEAKER mix 1 2.000 0.500 <NA> <NA> alice <NA> <NA>
SPEAKER mix 1 2.2 1.3 <NA> <NA> bob <NA> <NA>
SPEAKER mix 1 5.5 1.0 <NA> <NA> alice <NA> <NA>
SPEAKER mix 1 7.0 1.0 <NA> <NA> carol <NA> <NA>
"""


def test_a_hand_written_rttm():
    turns = parse_rttm(HAND_WRITTEN, duration=6.0)
    assert turns.names == ("alice", "bob")  # carol speaks only after the end
    assert flat(turns.speakers["alice"].speech) == pytest.approx([0.0, 2.5, 5.5, 6.0])  # merged, clipped
    assert flat(turns.speakers["bob"].speech) == pytest.approx([2.2, 4.0])  # sorted, merged; overlaps alice
    assert turns.to_json() == {"duration": 6.0, "speakers": {"alice": [[0.0, 2.5], [5.5, 6.0]],
                                                              "bob": [[2.2, 4.0]]}}


def test_rttm_round_trip():
    turns = SpeakerTurns(7.25, {"SPEAKER_01": SpeechSegments(7.25, ((0.5, 1.25), (4.0, 7.25))),
                                "SPEAKER_00": SpeechSegments(7.25, ((1.0, 2.125),))})
    text = turns.to_rttm("clip")
    assert all(line.split()[:3] == ["SPEAKER", "clip", "1"] and len(line.split()) == 10
               for line in text.splitlines())
    again = parse_rttm(text, 7.25)
    assert again.names == turns.names == ("SPEAKER_01", "SPEAKER_00")
    for name in turns.names:
        assert flat(again.speakers[name].speech) == pytest.approx(flat(turns.speakers[name].speech), abs=1e-3)


def test_the_two_people_script_as_rttm():
    text = "".join(f"SPEAKER two_people 1 {start:.3f} {end - start:.3f} <NA> <NA> person{who} <NA> <NA>\n"
                   for who, start, end in two_people.SCRIPT)
    turns = parse_rttm(text, two_people.DURATION)
    assert turns.names == ("person1", "person2")
    for who in (1, 2):
        assert flat(turns.speakers[f"person{who}"].speech) == pytest.approx(flat(two_people.turns(who)))


@pytest.mark.parametrize("line, message", [
    ("SPEAKER mix 1 0.5 1.0 <NA> <NA> alice <NA>", "RTTM line 2: expected 10 fields"),
    ("SPEAKER mix 1 half 1.0 <NA> <NA> alice <NA> <NA>", "RTTM line 2: the onset and duration .* must be numbers"),
    ("SPEAKER mix 1 0.5 -1.0 <NA> <NA> alice <NA> <NA>", "RTTM line 2: negative duration"),
    ("SPEAKER mix 1 -0.5 1.0 <NA> <NA> alice <NA> <NA>", "RTTM line 2: negative onset"),
    ("SPEAKER mix 1 nan 1.0 <NA> <NA> alice <NA> <NA>", "RTTM line 2: the onset and duration must be finite"),
    ("alice 0.5 1.0", "RTTM line 2: expected a SPEAKER record"),
    ("SPEAKER other 1 0.5 1.0 <NA> <NA> alice <NA> <NA>", r"2 recordings \(mix, other\)"),
])
def test_bad_rttm_lines_are_named(line, message):
    text = "SPEAKER mix 1 0.0 1.0 <NA> <NA> bob <NA> <NA>\n" + line + "\n"
    with pytest.raises(ValueError, match=message):
        parse_rttm(text, 10.0)


def test_rttm_that_says_nothing_about_this_audio():
    with pytest.raises(ValueError, match="no SPEAKER line"):
        parse_rttm("# nothing\n\n", 5.0)
    with pytest.raises(ValueError, match=r"no turn .* within the audio's 5.00 s .* end by 12.00 s"):
        parse_rttm("SPEAKER mix 1 10.0 2.0 <NA> <NA> bob <NA> <NA>\n", 5.0)
    with pytest.raises(ValueError, match="one word"):
        SpeakerTurns(5.0, {"two words": SpeechSegments(5.0, ((0.0, 1.0),))})
    with pytest.raises(ValueError, match="of a 4.0 s clip"):
        SpeakerTurns(5.0, {"bob": SpeechSegments(4.0, ((0.0, 1.0),))})
