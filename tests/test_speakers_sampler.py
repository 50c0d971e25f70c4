"""Two faces, two voices: each face track lip-synced to its own speaker (latentsync/sample/cast.py), on the
two-person material of tests/two_people.py with the tiny random-weight UNet and the PoolVAE stand-in of the
sampler tests. What is checked is where pixels change and when, which does not depend on trained weights."""
import numpy as np
import pytest
import torch

from sampler_fixtures import RESOLUTION, PoolVAE, face_boxes, fake_features, golden_tiny_unet, outside_boxes
from two_people import two_person_frames

from latentsync.audio.vad import SpeechSegments
from latentsync.face.blend import Blend
from latentsync.face.detect import detect_faces
from latentsync.face.tracks import FaceTracks
from latentsync.sample.cast import lipsync_cast
from latentsync.sample.frame_plan import runs
from latentsync.sample.sampler import Output, SamplerSettings, lipsync
from latentsync.speakers.cast import Speaker, make_cast, parse_mapping

pytestmark = pytest.mark.usefixtures("one_thread")

FRAMES = 48
# Speaker 1 (the left face) talks in frames 0-15 and 40-47, speaker 2 (the right face) in 22-47: 40-47 overlap.
TALKS = {1: [(0, 16), (40, 48)], 2: [(22, 48)]}


def mask(speaker: int) -> np.ndarray:
    out = np.zeros(FRAMES, bool)
    for a, b in TALKS[speaker]:
        out[a:b] = True
    return out


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
    return golden_tiny_unet(tmp_path_factory.mktemp("unet"))


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    return torch.from_numpy(two_person_frames(FRAMES)).float() / 255


@pytest.fixture(scope="module")
def tracks(clip) -> FaceTracks:
    left, right = (detect_faces(clip, select="index", index=i) for i in (0, 1))
    assert left.valid.all() and right.valid.all()
    assert (left.boxes[:, 2] < clip.shape[2] / 2).all() and (right.boxes[:, 0] > clip.shape[2] / 2).all()
    return FaceTracks(tracks=[left, right], labels=["A", "B"], frame_hw=left.frame_hw, detector=left.detector)


def stem_speakers() -> list[Speaker]:
    """One audio per person: each speaker's own features (silent outside its turns) and its own speech."""
    out = []
    for number in (1, 2):
        features = fake_features(FRAMES, seed=number, speech_mask=mask(number))
        out.append(Speaker(f"SPEAKER_{number}", features, features.speech))
    return out


def mixed_speakers() -> list[Speaker]:
    """One mixed track split by diarization: shared features, each speaker its own turns."""
    features = fake_features(FRAMES, seed=7)
    return [Speaker(f"SPEAKER_{n}", features, SpeechSegments(FRAMES / 25, tuple((a / 25, b / 25) for a, b in
                                                                                    runs(mask(n)))))
            for n in (1, 2)]


def settings(**changes) -> SamplerSettings:
    return SamplerSettings(**{"steps": 2, "crossfade_frames": 2, **changes})


def region(faces, frame_hw) -> list[torch.Tensor]:
    """Per frame, `[H, W]` bool: inside the face crop's footprint."""
    return [~outside_boxes(frame_hw, box) for box in face_boxes(faces)]


def footprints(clip, track) -> list[torch.Tensor]:
    from latentsync.face.align import align

    return region(align(clip, track, RESOLUTION), tuple(clip.shape[1:3]))


def changed(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor) -> bool:
    return not torch.equal(a[where], b[where])


def test_each_mouth_moves_only_while_its_speaker_speaks(unet, clip, tracks):
    cast = make_cast(tracks, stem_speakers(), "A = SPEAKER_1, B = SPEAKER_2")
    result = lipsync_cast(clip, cast, unet, PoolVAE(), settings(vad_policy="skip"), resolution=RESOLUTION)
    assert len(result.frames) == FRAMES
    left, right = footprints(clip, tracks.by_label("A")), footprints(clip, tracks.by_label("B"))
    fade = 2  # crossfade_frames: skip fades from generated frames into the passed-through ones
    for i in range(FRAMES):
        out, source = result.frames[i], clip[i]
        anywhere = left[i] | right[i]
        assert torch.equal(out[~anywhere], source[~anywhere]), i  # nothing outside the two faces changes
        for speaks, where, name in ((mask(1), left[i], "left"), (mask(2), right[i], "right")):
            if not speaks[max(i - fade, 0): i + fade + 1].any():  # skip: its frames pass through in pauses
                assert not changed(out, source, where & ~(left[i] & right[i])), (name, i)
            if speaks[i]:
                assert changed(out, source, where), (name, i)  # generated while speaking
    # nobody speaks in 16-21: the frames farther than the cross-fade from both turns are not diffused at all
    assert not result.generated[18:20].any() and result.generated[[0, 17, 20, 30, 45]].all()
    assert [s["face"] for s in result.stats["faces"]] == ["A", "B"]


def test_overlap_drives_both_mouths_and_faces_are_pasted_in_label_order(unet, clip, tracks):
    speakers = mixed_speakers()
    cast = make_cast(tracks, speakers, "A = 1, B = 2")
    config = settings(vad_policy="silence")
    result = lipsync_cast(clip, cast, unet, PoolVAE(), config, resolution=RESOLUTION)
    # The same as A's pass and then B's pass over A's frames: the later face goes on top, every run.
    first = lipsync(clip, speakers[0].features.with_speech(speakers[0].speech), unet, PoolVAE(), config,
                    faces=tracks.by_label("A"), resolution=RESOLUTION)
    second = lipsync(first.frames, speakers[1].features.with_speech(speakers[1].speech), unet, PoolVAE(), config,
                     faces=tracks.by_label("B"), resolution=RESOLUTION)
    assert torch.equal(result.frames, second.frames)
    again = lipsync_cast(clip, cast, unet, PoolVAE(), config, resolution=RESOLUTION)
    assert torch.equal(again.frames, result.frames)
    # silence: both faces are diffused in every frame (at rest while their speaker is silent)
    assert bool(result.generated.all())
    swapped = make_cast(tracks, speakers, "A = 2, B = 1")  # the mapping decides which voice drives which face
    other = lipsync_cast(clip, swapped, unet, PoolVAE(), config, resolution=RESOLUTION)
    assert not torch.equal(other.frames, result.frames)


def test_a_face_without_a_speaker_is_left_untouched(unet, clip, tracks):
    cast = make_cast(tracks, stem_speakers(), "A = none, B = 2")
    result = lipsync_cast(clip, cast, unet, PoolVAE(), settings(vad_policy="silence"), resolution=RESOLUTION)
    left, right = footprints(clip, tracks.by_label("A")), footprints(clip, tracks.by_label("B"))
    for i in range(0, FRAMES, 7):
        assert not changed(result.frames[i], clip[i], left[i] & ~right[i])
        assert changed(result.frames[i], clip[i], right[i])


def test_the_speakers_must_fit_one_clip(unet, clip, tracks):
    mixed = mixed_speakers()
    with pytest.raises(ValueError, match="vad_policy 'off' would drive every face"):
        lipsync_cast(clip, make_cast(tracks, mixed, "auto"), unet, PoolVAE(), settings(), resolution=RESOLUTION)
    short = fake_features(FRAMES - 10, seed=3, speech_mask=mask(1)[:FRAMES - 10])
    uneven = [Speaker("long", mixed[0].features, mixed[0].speech), Speaker("short", short, short.speech)]
    with pytest.raises(ValueError, match="differ in length"):
        lipsync_cast(clip, make_cast(tracks, uneven, "auto"), unet, PoolVAE(), settings(vad_policy="skip"),
                     resolution=RESOLUTION)
    with pytest.raises(ValueError, match="no face has a speaker"):
        lipsync_cast(clip, make_cast(tracks, mixed, "A = none"), unet, PoolVAE(), settings(vad_policy="skip"),
                     resolution=RESOLUTION)


def test_the_mapping_text():
    speakers = stem_speakers()
    labels = ["A", "B", "C"]
    assert parse_mapping(" auto ", labels, speakers).auto and parse_mapping("", labels, speakers).auto
    parsed = parse_mapping("A = SPEAKER_2; b: 1\nC = none", labels, speakers)
    assert dict(parsed.assigned) == {"A": "SPEAKER_2", "B": "SPEAKER_1", "C": None}
    assert parse_mapping("A + C = speaker_1", labels, speakers).merges == (("A", "C"),)
    for text, message in (("D = 1", "no face track 'D'; the tracks are A, B, C"),
                          ("A = 3", "no speaker '3'; the speakers are 1 = SPEAKER_1, 2 = SPEAKER_2"),
                          ("A = 1, A = 2", "named twice"), ("A 1", "is not TRACK = SPEAKER")):
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            parse_mapping(text, labels, speakers)


def test_the_mapping_text_keeps_the_cast(tracks):
    speakers = stem_speakers()
    cast = make_cast(tracks, speakers, "B = 1")
    assert cast.mapping == {"A": None, "B": "SPEAKER_1"}
    assert make_cast(tracks, speakers, cast.mapping_text()).mapping == cast.mapping
    assert make_cast(tracks, speakers, "auto").mapping == {"A": "SPEAKER_1", "B": "SPEAKER_2"}  # in order


def test_auto_mapping_by_syncnet_reports_how_it_decided(clip, tracks, tmp_path):
    """The Assign node's `auto` with a SyncNet (random weights in the official file: which face wins is
    tests/test_match.py's subject; here, that every speaker gets one face at most, the cast follows the
    decision, and what cannot be measured falls back to the order with the reason)."""
    from syncnet_model_files import write_syncnet_file
    from two_people import stems

    from latentsync.score.syncnet import load_syncnet
    from latentsync.speakers.cast import auto_mapping

    syncnet = load_syncnet(write_syncnet_file(tmp_path / "syncnet_v2.model"))
    voices = stems(FRAMES / 25, ((1, 0.0, 0.6), (2, 1.0, FRAMES / 25)))
    speakers = [Speaker(s.name, s.features, s.speech, torch.from_numpy(voices[n]))
                for n, s in zip((1, 2), stem_speakers())]
    mapping, how = auto_mapping(clip, 25.0, tracks, speakers, syncnet)
    assert set(mapping) == {"A", "B"} and how.startswith("auto (SyncNet): ")
    named = [name for name in mapping.values() if name]
    assert len(named) == len(set(named)) and set(named) <= {"SPEAKER_1", "SPEAKER_2"}
    for name in named:
        assert name in how  # one line per speaker says why
    cast = make_cast(tracks, speakers, "auto", mapping, how)
    assert cast.mapping == mapping and cast.how == how
    unheard = [Speaker(s.name, s.features, s.speech) for s in speakers]
    assert auto_mapping(clip, 25.0, tracks, unheard, syncnet)[0] is None  # no audio: in order, and it says so
    mapping, how = auto_mapping(clip[:4], 25.0, tracks.subset(slice(0, 4)), speakers, syncnet)
    assert mapping is None and "could not compare" in how  # 4 frames: too short for the metric


def test_the_landmark_blend_changes_only_part_of_each_face(unet, clip, tracks):
    """blend_mask landmarks: each face's paste touches a part of what the reference's whole-crop paste touches;
    a custom mask is refused (one mask cannot say which face it is for)."""
    cast = make_cast(tracks, mixed_speakers(), "A = 1, B = 2")
    config = settings(vad_policy="silence")
    whole = lipsync_cast(clip, cast, unet, PoolVAE(), config, resolution=RESOLUTION)
    mouth = lipsync_cast(clip, cast, unet, PoolVAE(), config, resolution=RESOLUTION,
                         output=Output(blend=Blend("landmarks")))
    touched_whole = (whole.frames != clip).any(dim=-1)
    touched_mouth = (mouth.frames != clip).any(dim=-1)
    assert touched_mouth.any() and bool((touched_mouth <= touched_whole).all())
    assert touched_mouth.sum() < 0.6 * touched_whole.sum()
    with pytest.raises(ValueError, match="custom is not offered for several faces"):
        lipsync_cast(clip, cast, unet, PoolVAE(), config, resolution=RESOLUTION,
                     output=Output(blend=Blend("custom", custom=torch.ones(1, *clip.shape[1:3]))))


def test_the_blend_weights_combine_every_faces_paste(unet, clip, tracks):
    """Output(weights=True): per pixel the largest of the faces' blend weights, so each face's paste shows in it,
    pixels of weight 0 are the input's exactly and every changed pixel has a weight above 0."""
    cast = make_cast(tracks, stem_speakers(), "A = SPEAKER_1, B = SPEAKER_2")
    result = lipsync_cast(clip, cast, unet, PoolVAE(), settings(vad_policy="skip"), resolution=RESOLUTION,
                          output=Output(weights=True))
    weights = result.blend_weights
    assert weights is not None and weights.shape == clip.shape[:3] and 0 <= weights.min() <= weights.max() <= 1
    kept, changed_pixels = weights == 0, (result.frames != clip).any(-1)
    assert torch.equal(result.frames[kept], clip[kept]) and bool((weights[changed_pixels] > 0).all())
    left, right = footprints(clip, tracks.by_label("A")), footprints(clip, tracks.by_label("B"))
    for i in (5, 30, 45):  # the left voice only, the right only, both
        for speaks, where, name in ((mask(1), left[i], "left"), (mask(2), right[i], "right")):
            assert bool((weights[i][where] > 0).any()) == bool(speaks[i]), (name, i)
        assert not (weights[i][~(left[i] | right[i])] > 0).any()
    assert not (weights[18:20] > 0).any()  # nobody speaks: not generated (skip)
