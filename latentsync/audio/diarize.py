"""Who speaks when in one mixed voice track: pyannote's speaker-diarization pipeline from local files, or the
speaker turns a user writes down as RTTM.

The pipeline is pyannote/speaker-diarization-3.1, installed as files the user downloaded (see the catalogue's
`diarization`, `pyannote` and `wespeaker` entries):

    models/pyannote/speaker-diarization-3.1/config.yaml
    models/pyannote/segmentation-3.0/pytorch_model.bin
    models/pyannote/wespeaker-voxceleb-resnet34-LM/pytorch_model.bin

Its config.yaml names the two models by hub id; each is looked for in the folder named after its repository
beside the pipeline's folder, and never fetched. The models are read by `vad_pyannote.load_pyannote_model`
(data only, a fixed list of architectures, a strict state dict), and pyannote's `SpeakerDiarization` is built
from the loaded objects, so pyannote itself resolves no name. Telemetry is off around every call into it.
"""
from __future__ import annotations

import contextlib
import functools
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..catalogue import CATALOGUE
from ..media.audio import SAMPLE_RATE, AudioError
from .vad import SpeechSegments, merge_segments
from .vad_pyannote import ARCHITECTURES as SEGMENTATION_ARCHITECTURES
from .vad_pyannote import _import, _pyannote, load_pyannote_model, telemetry_off

EMBEDDING_ARCHITECTURES = {  # the speaker embedding of speaker-diarization-3.1
    "pyannote.audio.models.embedding.wespeaker.WeSpeakerResNet34":
        ("pyannote.audio.models.embedding", "WeSpeakerResNet34"),
}
PIPELINE_NAMES = ("pyannote.audio.pipelines.SpeakerDiarization",
                  "pyannote.audio.pipelines.speaker_diarization.SpeakerDiarization")
CLUSTERING = "AgglomerativeClustering"  # 3.1's; community-1's VBx needs a PLDA and is not supported
# The `pipeline.params` of a config.yaml we understand, with the type each must have (models are named apart).
OPTIONS = {"embedding_batch_size": int, "segmentation_batch_size": int, "embedding_exclude_overlap": bool,
           "segmentation_step": float}
MIN_SAMPLES = SAMPLE_RATE // 10  # 0.1 s: shorter audio holds no turn to find
PROGRESS_TOTAL = 100
SEGMENTATION_SHARE = 10  # of PROGRESS_TOTAL: the embeddings (a ResNet per chunk and speaker) take the rest
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/(?P<name>[A-Za-z0-9][\w.-]*)(@[\w.-]+)?$")
# RTTM record types other than SPEAKER (NIST RT-09); their lines carry no speaker turn and are skipped.
OTHER_RTTM_TYPES = {"SEGMENT", "NOSCORE", "NO_RT_METADATA", "LEXEME", "NON-LEX", "NON-SPEECH", "FILLER", "EDIT",
                    "IP", "SU", "CB", "A/P", "SPKR-INFO"}

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SpeakerTurns:
    """Each speaker's speech in one track: per speaker sorted, non-overlapping segments (seconds); two speakers
    may speak at once."""

    duration: float
    speakers: dict[str, SpeechSegments]

    def __post_init__(self) -> None:
        for name, speech in self.speakers.items():
            if not name or any(c.isspace() for c in name):
                raise ValueError(f"a speaker name must be one word (RTTM has no room for spaces), got {name!r}")
            if abs(speech.duration - self.duration) > 1e-6:
                raise ValueError(f"speaker {name}'s segments are of a {speech.duration} s clip, not of this "
                                 f"{self.duration} s one")

    @property
    def names(self) -> tuple[str, ...]:
        """The speakers in the order they first speak (silent ones last)."""
        def first(name: str) -> tuple[float, str]:
            speech = self.speakers[name].speech
            return (speech[0][0] if speech else math.inf, name)

        return tuple(sorted(self.speakers, key=first))

    def to_rttm(self, uri: str = "audio") -> str:
        """One `SPEAKER` line per turn, in time order, with millisecond times (as pyannote writes them)."""
        if not uri or any(c.isspace() for c in uri):
            raise ValueError(f"an RTTM uri must be one word, got {uri!r}")
        turns = sorted((start, end, name) for name in self.speakers for start, end in self.speakers[name].speech)
        return "".join(f"SPEAKER {uri} 1 {start:.3f} {end - start:.3f} <NA> <NA> {name} <NA> <NA>\n"
                       for start, end, name in turns)

    def to_json(self) -> dict:
        return {"duration": round(self.duration, 6),
                "speakers": {name: self.speakers[name].to_json()["speech"] for name in self.names}}


def parse_rttm(text: str, duration: float) -> SpeakerTurns:
    """Speaker turns from RTTM text (`SPEAKER <uri> <channel> <onset> <duration> <NA> <NA> <name> <NA> <NA>`).

    Blank lines and comments (`#`, `;;`) are skipped, and so are the other RTTM record types. A speaker's
    overlapping or touching turns are merged, and turns are clipped to `[0, duration]`. One recording only: a
    text whose lines name several uris is refused.
    """
    if not (duration > 0 and math.isfinite(duration)):
        raise ValueError(f"the audio's duration must be positive, got {duration}")
    turns: dict[str, list[tuple[float, float]]] = {}
    uris: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith(("#", ";;")):
            continue
        if fields[0].upper() in OTHER_RTTM_TYPES:
            continue

        def bad(problem: str) -> ValueError:
            return ValueError(f"RTTM line {number}: {problem}: {line.strip()!r}")

        if fields[0] != "SPEAKER":
            raise bad(f"expected a SPEAKER record, got {fields[0]!r}")
        if len(fields) != 10:
            raise bad(f"expected 10 fields (SPEAKER uri channel onset duration <NA> <NA> name <NA> <NA>), "
                      f"got {len(fields)}")
        try:
            onset, length = float(fields[3]), float(fields[4])
        except ValueError:
            raise bad("the onset and duration (fields 4 and 5) must be numbers, in seconds") from None
        if not (math.isfinite(onset) and math.isfinite(length)):
            raise bad("the onset and duration must be finite")
        if onset < 0:
            raise bad(f"negative onset {onset}")
        if length < 0:
            raise bad(f"negative duration {length}")
        uris.setdefault(fields[1], number)
        turns.setdefault(fields[7], []).append((onset, onset + length))
    if len(uris) > 1:
        raise ValueError(f"the RTTM describes {len(uris)} recordings ({', '.join(uris)}); give only the lines "
                         "of this audio")
    if not turns:
        raise ValueError("the RTTM has no SPEAKER line")
    speakers = {name: SpeechSegments(duration, merged) for name, spans in turns.items()
                if (merged := merge_segments(spans, duration))}
    if not speakers:
        last = max(end for spans in turns.values() for _, end in spans)
        raise ValueError(f"no turn of the RTTM falls within the audio's {duration:.2f} s (its turns end by "
                         f"{last:.2f} s): is it the RTTM of this audio?")
    return SpeakerTurns(duration, speakers)


def load_diarization(folder: str | Path, *, device: str | torch.device | None = None):
    """pyannote's `SpeakerDiarization` pipeline from a local speaker-diarization-3.1 folder (or its config.yaml),
    with the models it names read from their sibling folders; on `device` (default: the CPU)."""
    _pyannote()  # first: without the extra, say what to install
    config_path = Path(folder)
    if config_path.is_dir() or config_path.suffix not in (".yaml", ".yml"):
        config_path = config_path / "config.yaml"
    config = _read_config(config_path)
    params = config["pipeline"].get("params") or {}
    unknown = sorted(set(params) - set(OPTIONS) - {"segmentation", "embedding", "clustering"})
    if unknown:
        raise ValueError(f"{config_path} sets pipeline options the pack does not know ({', '.join(unknown)}); "
                         f"expected {CATALOGUE['diarization'].what}'s config.yaml")
    clustering = params.get("clustering", CLUSTERING)
    if clustering != CLUSTERING:
        raise ValueError(f"{config_path} clusters speakers with {clustering}; the pack runs {CLUSTERING} "
                         "(pyannote/speaker-diarization-3.1's) only")
    options = {key: _option(config_path, key, params[key]) for key in OPTIONS if key in params}

    segmentation = load_pyannote_model(_model_path(config_path, params, "segmentation", "pyannote"),
                                       SEGMENTATION_ARCHITECTURES, _hint("pyannote"), what="a segmentation model")
    embedding = load_pyannote_model(_model_path(config_path, params, "embedding", "wespeaker"),
                                    EMBEDDING_ARCHITECTURES, _hint("wespeaker"),
                                    what="a speaker-embedding model this pipeline runs")
    speaker_diarization = _import("pyannote.audio.pipelines.speaker_diarization")
    with telemetry_off():
        pipeline = speaker_diarization.SpeakerDiarization(
            segmentation=segmentation, embedding=embedding, plda=_no_plda(), clustering=clustering, **options)
        try:
            if config.get("freeze"):
                pipeline.freeze(config["freeze"])
            pipeline.instantiate(config.get("params") or {})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{config_path}: its params do not fit the pipeline ({type(exc).__name__}: "
                             f"{exc})") from exc
        if not pipeline.instantiated:  # pyannote would fill the gaps with its own defaults, for another pipeline
            raise ValueError(f"{config_path}: its params leave some of the pipeline's unset (it sets "
                             f"{config.get('params')}; the pipeline has {pipeline.parameters()})")
        if device is not None:
            pipeline.to(torch.device(device))
    return pipeline


def diarize(audio16k: torch.Tensor, pipeline, *, num_speakers: int | None = None, min_speakers: int | None = None,
            max_speakers: int | None = None, progress: Progress | None = None) -> SpeakerTurns:
    """Who speaks when in 16 kHz mono audio (`[T]`), by a pipeline from `load_diarization`.

    `num_speakers` fixes the number of speakers; otherwise `min_speakers` / `max_speakers` bound the number the
    pipeline finds. `progress(done, total)` is called as the audio is processed; it may raise to cancel.
    Speakers are named as pyannote names them (SPEAKER_00, SPEAKER_01, ...).
    """
    if audio16k.ndim != 1 or audio16k.numel() < MIN_SAMPLES:
        raise AudioError(f"expected at least 0.1 s of 16 kHz mono audio as a [T] tensor, got shape "
                         f"{tuple(audio16k.shape)}")
    _check_counts(num_speakers, min_speakers, max_speakers)
    duration = audio16k.numel() / SAMPLE_RATE
    file = {"waveform": audio16k.detach().float().cpu()[None], "sample_rate": SAMPLE_RATE, "uri": "audio"}

    def hook(step, artefact, file=None, completed=None, total=None):
        if progress is None or completed is None or not total:
            return
        if step == "segmentation":
            progress(SEGMENTATION_SHARE * int(completed) // int(total), PROGRESS_TOTAL)
        elif step == "embeddings":
            share = PROGRESS_TOTAL - SEGMENTATION_SHARE
            progress(SEGMENTATION_SHARE + share * int(completed) // int(total), PROGRESS_TOTAL)

    # pyannote prints clustering notes on stdout, where the command line writes its JSON: send them to stderr.
    with telemetry_off(), _tf32_kept(), contextlib.redirect_stdout(sys.stderr):
        output = pipeline(file, num_speakers=num_speakers, min_speakers=min_speakers, max_speakers=max_speakers,
                          hook=hook)
    annotation = getattr(output, "speaker_diarization", output)  # a `legacy` pipeline returns the Annotation
    speakers = {}
    for label in annotation.labels():
        spans = [(float(s.start), float(s.end)) for s in annotation.label_timeline(label).support()]
        if merged := merge_segments(spans, duration):
            speakers[str(label)] = SpeechSegments(duration, merged)
    return SpeakerTurns(duration, speakers)


def _read_config(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"pyannote pipeline config not found: {path}; "
                                f"{CATALOGUE['diarization'].where_to_get()} (the folder's name is the one "
                                "to keep: config.yaml names its models, which go in sibling folders)")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a readable YAML file ({type(exc).__name__}); expected "
                         f"{CATALOGUE['diarization'].what}'s config.yaml") from exc
    pipeline = config.get("pipeline") if isinstance(config, dict) else None
    if not isinstance(pipeline, dict) or pipeline.get("name") not in PIPELINE_NAMES:
        found = pipeline.get("name") if isinstance(pipeline, dict) else None
        raise ValueError(f"{path} is not a pyannote speaker-diarization config (its pipeline is {found!r}); "
                         f"expected {CATALOGUE['diarization'].what}'s config.yaml")
    if not isinstance(pipeline.get("params") or {}, dict) or not isinstance(config.get("params") or {}, dict):
        raise ValueError(f"{path}: `pipeline.params` and `params` must be mappings")
    return config


def _model_path(config_path: Path, params: dict, role: str, key: str) -> Path:
    """The local file for the model `config.yaml` names as its `role`: a hub id `owner/name` is the folder `name`
    beside the pipeline's own folder (the layout the hub's repositories have when downloaded side by side)."""
    named = params.get(role, CATALOGUE[key].source)
    found = HUB_ID.match(named) if isinstance(named, str) else None
    if found is None:
        raise ValueError(f"{config_path} names its {role} model {named!r}; the pack reads a Hugging Face id "
                         f"(owner/name) there, resolved to a folder beside {config_path.parent}")
    hub_id = named.split("@")[0]
    path = config_path.parent.parent / found["name"] / "pytorch_model.bin"
    if not path.is_file():
        known = next((m for m in CATALOGUE.values() if m.source == hub_id), None)
        licence = f" ({known.licence} licence)" if known else ""
        raise FileNotFoundError(f"{role} model not found: {path}. {config_path} names {hub_id}, which the pack "
                                f"looks for in {path.parent}/ (never on the hub): download pytorch_model.bin from "
                                f"https://huggingface.co/{hub_id}{licence} and put it there")
    return path


def _option(config_path: Path, key: str, value):
    kind = OPTIONS[key]
    if kind is bool:
        fits = isinstance(value, bool)
    else:  # YAML reads 1 as an int where a float is meant
        fits = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool) and value > 0
    if not fits:
        wanted = "true or false" if kind is bool else f"a positive {kind.__name__}"
        raise ValueError(f"{config_path}: pipeline option {key} must be {wanted}, got {value!r}")
    return value


def _hint(key: str) -> str:
    return f"{CATALOGUE[key].what}: {CATALOGUE[key].where_to_get()}"


@functools.cache
def _no_plda():
    """A stand-in for the PLDA that pyannote 4's `SpeakerDiarization` loads by default from the hub (for its VBx
    clustering). 3.1's agglomerative clustering never reads it; passing one keeps pyannote from fetching it."""
    plda = _import("pyannote.audio.core.plda").PLDA

    class AgglomerativeOnly(plda):
        def __init__(self) -> None:  # no files: nothing of it is ever used
            pass

    return AgglomerativeOnly()


def _check_counts(num: int | None, low: int | None, high: int | None) -> None:
    for name, value in (("num_speakers", num), ("min_speakers", low), ("max_speakers", high)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a whole number >= 1 (or None), got {value!r}")
    if num is not None and (low is not None or high is not None):
        raise ValueError("give num_speakers, or min_speakers / max_speakers, not both")
    if low is not None and high is not None and low > high:
        raise ValueError(f"min_speakers ({low}) is above max_speakers ({high})")


@contextlib.contextmanager
def _tf32_kept() -> Iterator[None]:
    """pyannote turns TensorFloat-32 off for the whole process when a pipeline runs on CUDA (for reproducible
    embeddings); keep that for our call and put the host's setting back after it."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
