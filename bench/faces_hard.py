"""Hard faces with a known truth: how often each detector finds the face, how well it places the landmarks, how
steady they are, and how fast, on frames of the shared clips transformed the way real footage is hard.

    python -m bench.faces_hard [--detectors dlib,dlib-cnn,auto] [--frames 12] [--runs 2] [--families size,roll]
                               [--insightface DIR] [--picture OUT.jpg]

Each case renders short runs of consecutive frames of the shared clips (`--runs` per clip, `--frames` each):

- size 32/48/64/96: the frame shrunk until the face is that many pixels wide, inside a 1280x720 grey frame;
- every other family starts from a 640x480 view of the clip with the face 120 px wide, then:
  roll ±15/30°, yaw ±25/40° (a perspective warp of the face plane), dim (gamma 2.5), backlit (dim face, bright
  surroundings), blur (motion blur over 10 % of the face), jpeg (quality 20), grey, cover (the upper or lower
  third of the face under a dark patch: a hand, a microphone), mirror.

The truth is the face HOG finds on the untouched full-resolution frame (only frames where it is sure), moved by
the same geometry: the box keeps its centre and takes the local area scale, the alignment points are mapped.
Every run goes through `FaceTracker`, as the product runs (detect where needed, follow between). Per case:
recall (chosen face at IoU >= 0.5 with the truth), false faces per frame (faces any search returned that are not
the truth), landmark error (mean distance of the three alignment points, over the eye distance), jitter (the
case's first frame repeated with fresh sensor noise: frame-to-frame motion of the points over the eye distance,
smoothing off; the head does not move), frames per second. Then jitter on a still face (one frame repeated with fresh sensor noise: frame-to-frame motion of the
crop's anchor points over the eye distance; the head does not move, so all of it is jitter), with and without
smoothing, and the crop agreement of `auto` with InsightFace (`--insightface`, the buffalo_l folder) or, where
that is not installed, with dlib's 68-point brows and nose (the centroids InsightFace's points stand for).
"""
from __future__ import annotations

import argparse
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from latentsync.face.align import anchors_in_frame, crop_displacement, crop_geometry, smoothed_matrices
from latentsync.face.detect import FaceTracker, iou, make_detector
from latentsync.media.video import decode_frames

REPO = Path(__file__).resolve().parents[1]
CLIPS = ("latentsync_demo1_video.mp4", "latentsync_demo3_video.mp4")
GREY = (118, 118, 118)
VIEW_WH, VIEW_FACE = (1280, 720), 120  # the view every family but size starts from
SIZE_WH = (1280, 720)
EYE_PER_BROW = 1.14  # brow-centre distance / eye distance under the pack's 5-point rule (1 - 2 * BROW_ALONG)
SURE = 0.8  # the HOG score a truth face must reach on the untouched frame


@dataclass
class Truth:
    box: np.ndarray  # [4]
    points3: np.ndarray  # [3, 2]

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.points3[1] - self.points3[0])) / EYE_PER_BROW


# --- geometry: 3x3 homographies in pixels ---------------------------------------------------------------------

def _apply(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    p = np.c_[points, np.ones(len(points))] @ h.T
    return p[:, :2] / p[:, 2:]


def _about(centre, core: np.ndarray) -> np.ndarray:
    to, back = np.eye(3), np.eye(3)
    to[:2, 2], back[:2, 2] = -np.asarray(centre), centre
    return back @ core @ to


def roll(degrees: float) -> Callable:
    a = np.radians(degrees)
    return lambda centre, face: _about(centre, np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0],
                                                         [0, 0, 1.0]]))


def yaw(degrees: float) -> Callable:
    """The face plane turned about its vertical axis, seen from three face widths away."""
    a = np.radians(degrees)
    return lambda centre, face: _about(centre, np.array([[np.cos(a), 0, 0], [0, 1.0, 0],
                                                         [np.sin(a) / (3 * face), 0, 1.0]]))


def mirror(centre, face) -> np.ndarray:
    return _about(centre, np.diag([-1.0, 1.0, 1.0]))


def _warp(image: Image.Image, h: np.ndarray, size: tuple[int, int]) -> Image.Image:
    inverse = np.linalg.inv(h)
    inverse = inverse / inverse[2, 2]
    return image.transform(size, Image.PERSPECTIVE, tuple(inverse.ravel()[:8]), Image.BILINEAR, fillcolor=GREY)


def render(frame: np.ndarray, truth: Truth, face_px: float, size: tuple[int, int], at: tuple[float, float],
           geometry: Callable | None = None) -> tuple[np.ndarray, Truth]:
    """`frame` scaled so its face is `face_px` wide, its face centre placed at `at` (fractions of `size`), then
    `geometry` about the face centre; grey where the frame does not reach."""
    scale = face_px / (truth.box[2] - truth.box[0])
    small = Image.fromarray(frame).resize((max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale))),
                                          Image.LANCZOS)
    sx, sy = small.width / frame.shape[1], small.height / frame.shape[0]
    centre = np.array([at[0] * size[0], at[1] * size[1]])
    face_centre = np.array([(truth.box[0] + truth.box[2]) / 2 * sx, (truth.box[1] + truth.box[3]) / 2 * sy])
    h = np.eye(3)
    h[:2, 2] = centre - face_centre
    if geometry is not None:
        h = geometry(centre, face_px) @ h
    image = np.asarray(_warp(small, h, size))
    full = h @ np.diag([sx, sy, 1.0])
    points = _apply(full, truth.points3)
    if geometry is mirror:
        points = points[[1, 0, 2]]
    jacobian = _local_scale(full, (truth.box[:2] + truth.box[2:]) / 2)
    middle = _apply(full, ((truth.box[:2] + truth.box[2:]) / 2)[None])[0]
    half = (truth.box[2:] - truth.box[:2]) / 2 * jacobian
    return image, Truth(np.r_[middle - half, middle + half], points.astype(np.float32))


def _local_scale(h: np.ndarray, at: np.ndarray, step: float = 1.0) -> float:
    p = _apply(h, np.array([at, at + [step, 0], at + [0, step]]))
    (ax, ay), (bx, by) = p[1] - p[0], p[2] - p[0]
    return float(np.sqrt(abs(ax * by - ay * bx))) / step


# --- light and damage ------------------------------------------------------------------------------------------

def gamma(image: np.ndarray, g: float, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Darker (g > 1) with a dark room's sensor noise (`noise` grey levels, RMS)."""
    dark = 255 * (image / 255.0) ** g + np.random.default_rng(seed).normal(0.0, noise, image.shape)
    return np.clip(np.round(dark), 0, 255).astype(np.uint8)


def backlit(image: np.ndarray, truth: Truth) -> np.ndarray:
    h, w = image.shape[:2]
    y, x = np.mgrid[:h, :w]
    c = (truth.box[:2] + truth.box[2:]) / 2
    r = (truth.box[2:] - truth.box[:2]) * 0.9
    inside = (((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2) <= 1
    light = np.where(inside, 0.0, 0.75)[..., None]
    dark = gamma(image, 2.5, noise=4.0).astype(np.float32)
    return (dark * (1 - light) + 250 * light).astype(np.uint8)


def motion_blur(image: np.ndarray, length: int, angle: float = 30.0) -> np.ndarray:
    a = np.radians(angle)
    acc = np.zeros(image.shape, np.float32)
    for t in np.linspace(-length / 2, length / 2, max(length, 2)):
        acc += np.roll(image, (round(t * np.sin(a)), round(t * np.cos(a))), axis=(0, 1))
    return (acc / max(length, 2)).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def grey(image: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(Image.fromarray(image).convert("L"))[..., None], 3, axis=2)


def cover(image: np.ndarray, truth: Truth, third: str) -> np.ndarray:
    out = image.copy()
    x0, y0, x1, y1 = truth.box
    height = (y1 - y0) / 3
    top = y0 if third == "upper" else y1 - height
    out[max(int(top), 0):max(int(top + height), 0), max(int(x0 - 0.1 * (x1 - x0)), 0):max(int(x1 + 0.1 * (x1 - x0)), 0)] = (70, 50, 40)
    return out


@dataclass
class Case:
    family: str
    name: str
    make: Callable  # (frame, truth, k) -> (image, truth)
    face_px: int


def _view(face_px: int, geometry=None, after=None):
    def make(frame, truth, k):
        image, moved = render(frame, truth, face_px, VIEW_WH, (0.5, 0.45), geometry)
        return (after(image, moved) if after else image), moved
    return make


def cases(view_faces: tuple[int, ...] = (VIEW_FACE,)) -> list[Case]:
    """Every case: the size family, then each other family with the face at each of `view_faces` px."""
    out = [Case("size", f"{px}px", (lambda px: lambda frame, truth, k: render(
        frame, truth, px, SIZE_WH, (0.35, 0.4)))(px), px) for px in (32, 48, 64, 96)]
    for px in view_faces:
        out += [Case("roll", f"{d:+d}°", _view(px, roll(d)), px) for d in (-30, -15, 15, 30)]
        out += [Case("yaw", f"{d:+d}°", _view(px, yaw(d)), px) for d in (-40, -25, 25, 40)]
        out += [Case("light", "dim", _view(px, after=lambda image, t: gamma(image, 2.5, noise=4.0)), px),
                Case("light", "backlit", _view(px, after=backlit), px),
                Case("blur", "motion", _view(px, after=lambda image, t: motion_blur(image, max(px // 10, 2))), px),
                Case("jpeg", "q20", _view(px, after=lambda image, t: jpeg(image, 20)), px),
                Case("grey", "grey", _view(px, after=lambda image, t: grey(image)), px),
                Case("cover", "upper", _view(px, after=lambda image, t: cover(image, t, "upper")), px),
                Case("cover", "lower", _view(px, after=lambda image, t: cover(image, t, "lower")), px),
                Case("mirror", "mirror", _view(px, mirror), px)]
    return out


# --- the runs --------------------------------------------------------------------------------------------------

def truth_runs(media: Path, runs: int, frames: int) -> list[list[tuple[np.ndarray, Truth | None]]]:
    """`runs` runs of `frames` consecutive frames from each clip, spread over it, with HOG's sure face on the
    untouched frame as the truth (None where it is not sure)."""
    hog = make_detector("dlib")
    out = []
    for clip in CLIPS:
        decoded, _, _ = decode_frames(media / clip)
        count = sum(1 for _ in decode_frames(media / clip)[0])  # a second pass: only the runs' frames are kept
        starts = np.linspace(0, count - frames, runs + 2)[1:-1].astype(int)
        wanted = {start + k for start in starts for k in range(frames)}
        kept = {i: frame for i, frame in enumerate(decoded) if i in wanted}
        for start in starts:
            run = []
            for frame in (kept[start + k] for k in range(frames)):
                faces = [f for f in hog.detect(frame) if f.score >= SURE]
                face = max(faces, key=lambda f: f.area, default=None)
                run.append((frame, None if face is None else Truth(np.array(face.box), face.points3)))
            out.append(run)
    return out


class Counting:
    """A detector that remembers every face it returned since `take()`."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.returned = inner, inner.name, []

    def detect(self, frame, around=None):
        faces = self.inner.detect(frame, around)
        self.returned.extend(faces)
        return faces

    def take(self) -> list:
        out, self.returned = self.returned, []
        return out


@dataclass
class Score:
    frames: int = 0
    found: int = 0
    false: int = 0
    errors: list = None
    seconds: float = 0.0
    jitter: float = float("nan")

    def row(self) -> dict:
        errors = self.errors or []
        return {"frames": self.frames, "recall": self.found / max(self.frames, 1), "false_per_frame":
                self.false / max(self.frames, 1), "landmark_error": float(np.mean(errors)) if errors else float("nan"),
                "jitter": self.jitter, "fps": self.frames / self.seconds if self.seconds else float("nan")}


def run_case(case: Case, runs, detector) -> Score:
    """Every run of the case through a fresh `FaceTracker` (no smoothing: the detector's own points)."""
    score = Score(errors=[])
    counting = Counting(detector)
    for run in runs:
        tracker = FaceTracker(counting, smoothing=False)
        for k, (frame, truth) in enumerate(run):
            if truth is None:
                continue  # the truth is unsure: the frame is left out of the run altogether
            image, moved = case.make(frame, truth, k)
            start = time.perf_counter()
            face = tracker.step(image)
            score.seconds += time.perf_counter() - start
            score.frames += 1
            if face is not None and iou(face.box, moved.box) >= 0.5:
                score.found += 1
                score.errors.append(float(np.linalg.norm(face.points3 - moved.points3, axis=1).mean())
                                    / moved.eye_distance)
            distinct = []
            for other in counting.take():
                if iou(other.box, moved.box) < 0.5 and all(iou(other.box, d.box) < 0.5 for d in distinct):
                    distinct.append(other)
            score.false += len(distinct)
    score.jitter = case_jitter(case, runs, detector)
    return score


def case_jitter(case: Case, runs, detector, repeats: int = 12, noise: float = 2.0) -> float:
    """The detector's own jitter on a still face of the case: its first frame repeated with fresh sensor noise
    (`noise` grey levels), through the tracker without smoothing; the mean frame-to-frame motion of the three
    points over the eye distance (the head does not move: all of it is jitter). NaN if the face is lost."""
    frame, truth = next((f, t) for f, t in runs[0] if t is not None)
    image, moved = case.make(frame, truth, 0)
    rng = np.random.default_rng(1)
    tracker, points = FaceTracker(detector, smoothing=False), []
    for _ in range(repeats):
        face = tracker.step(np.clip(image + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8))
        if face is None or iou(face.box, moved.box) < 0.5:
            return float("nan")
        points.append(face.points3)
    return float(np.linalg.norm(np.diff(np.array(points), axis=0), axis=-1).mean() / moved.eye_distance)


def still_jitter(runs, detector, noise: float = 3.0, repeats: int = 40) -> dict:
    """One frame of each run repeated with fresh sensor noise: the mean frame-to-frame motion of the crop's
    anchor points (the reference's alignment of the tracked points), over the eye distance, with the landmark
    smoothing off (today) and on. The head does not move: all of the motion is jitter."""
    rng = np.random.default_rng(0)
    result = {}
    for smoothing in (False, True):
        motions = []
        for run in runs:
            frame, truth = next(((f, t) for f, t in run if t is not None), (None, None))
            if truth is None:
                continue
            tracker = FaceTracker(detector, smoothing=smoothing)
            points, valid = [], []
            for _ in range(repeats):
                noisy = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
                face = tracker.step(noisy)
                points.append(face.points3 if face is not None else np.full((3, 2), np.nan, np.float32))
                valid.append(face is not None)
            anchors = anchors_in_frame(smoothed_matrices(np.array(points), np.array(valid), 256), 256)
            step = np.linalg.norm(np.diff(anchors, axis=0), axis=-1).mean(axis=1)
            motions += list(step[np.isfinite(step)] / truth.eye_distance)
        result["on" if smoothing else "off"] = float(np.mean(motions))
    result["ratio"] = result["on"] / result["off"]
    return result


def easy_speed(runs, names=("dlib", "auto")) -> dict:
    """Frames per second of the tracker on the untouched clips (full resolution), per detector."""
    out = {}
    for name in names:
        detector = make_detector(name)
        frames, seconds = 0, 0.0
        for run in runs:
            tracker = FaceTracker(detector)
            start = time.perf_counter()
            for frame, _ in run:
                tracker.step(frame)
            seconds += time.perf_counter() - start
            frames += len(run)
        out[name] = frames / seconds
    return out


def reference_points(frame: np.ndarray, box, model) -> np.ndarray:
    """The reference's three points as dlib's 68-point model places them: the centroids of the two brows and of
    the nose, which InsightFace's 106 points stand for in the reference."""
    import dlib

    rect = dlib.rectangle(*(int(round(v)) for v in box[:2]), int(round(box[2])) - 1, int(round(box[3])) - 1)
    p = np.array([(q.x, q.y) for q in model(frame, rect).parts()], np.float64)
    return np.stack([p[17:22].mean(0), p[22:27].mean(0), p[27:36].mean(0)]).astype(np.float32)


def crop_agreement(runs, insightface: Path | None, resolution: int = 256) -> dict:
    """How far `auto`'s crops (smoothing on, as it runs) are from others, in % of the crop's width (the largest
    move of its corners and centre), through the reference's own low-pass (`smoothed_matrices`) for both:
    from the reference's (InsightFace's tracker where `insightface`, the buffalo_l folder, is given; else the
    68-point centroids on auto's boxes) and from the pack's crops before `auto` (HOG, no smoothing)."""
    from latentsync.face.dlib_models import _face_recognition_model
    import dlib

    _, crop_wh = crop_geometry(resolution)
    model = dlib.shape_predictor(str(_face_recognition_model("shape_predictor_68_face_landmarks.dat")))
    other = make_detector("insightface", models_dir=insightface) if insightface else None
    nothing = np.full((3, 2), np.nan, np.float32)
    moves = {"reference": [], "before": []}
    for run in runs:
        tracker, before = FaceTracker(make_detector("auto")), FaceTracker(make_detector("dlib"), smoothing=False)
        reference = FaceTracker(other, smoothing=False) if other else None
        ours, theirs, old = [], [], []
        for frame, _ in run:
            face, previous = tracker.step(frame), before.step(frame)
            if reference is not None:
                found = reference.step(frame)
                theirs.append(found.points3 if found is not None else nothing)
            else:
                theirs.append(reference_points(frame, face.box, model) if face is not None else nothing)
            ours.append(face.points3 if face is not None else nothing)
            old.append(previous.points3 if previous is not None else nothing)
        ours, theirs, old = np.array(ours), np.array(theirs), np.array(old)
        for key, other_points in (("reference", theirs), ("before", old)):
            ok = np.isfinite(ours).all(axis=(1, 2)) & np.isfinite(other_points).all(axis=(1, 2))
            a, b = smoothed_matrices(ours, ok, resolution), smoothed_matrices(other_points, ok, resolution)
            moves[key] += [100 * crop_displacement(a[i], b[i], crop_wh) / crop_wh[0] for i in np.flatnonzero(ok)]
    out = {"against": "insightface" if insightface else "dlib 68-point centroids"}
    for key, values in moves.items():
        values = np.array(values)
        out[key] = {"frames": len(values), "mean_pct": float(values.mean()), "p95_pct": float(np.percentile(values, 95)),
                    "max_pct": float(values.max())}
    return out


def picture(runs, names, out: Path) -> None:
    """What each detector finds on three hard frames: a row per case, a column per detector."""
    from PIL import ImageDraw

    chosen = {("size", "48px"), ("cover", "upper"), ("roll", "+30°")}
    picks = [c for c in cases((64,)) if (c.family, c.name) in chosen]
    frame, truth = next((f, t) for f, t in runs[0] if t is not None)
    tile = 220
    sheet = Image.new("RGB", (tile * len(names), (tile + 18) * len(picks) + 18), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for j, name in enumerate(names):
        draw.text((j * tile + 6, 3), name, fill=(0, 0, 0))
    for i, case in enumerate(picks):
        image, moved = case.make(frame, truth, 0)
        for j, name in enumerate(names):
            face = FaceTracker(make_detector(name), smoothing=False).step(image)
            view = Image.fromarray(image)
            pen = ImageDraw.Draw(view)
            if face is not None:
                pen.rectangle(list(face.box), outline=(0, 255, 0), width=2)
                for x, y in face.points3:
                    pen.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(255, 220, 0))
            c, s = (moved.box[:2] + moved.box[2:]) / 2, (moved.box[2] - moved.box[0]) * 1.6
            view = view.crop((int(c[0] - s), int(c[1] - s), int(c[0] + s), int(c[1] + s))).resize((tile, tile))
            y = 18 + i * (tile + 18)
            sheet.paste(view, (j * tile, y))
            label = f"{case.family} {case.name} ({case.face_px} px): " if j == 0 else ""
            draw.text((j * tile + 6, y + tile + 3), label + ("found" if face is not None else "missed"), fill=(0, 0, 0))
    sheet.save(out, quality=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", default="dlib,dlib-cnn,auto")
    parser.add_argument("--frames", type=int, default=12, help="consecutive frames a run")
    parser.add_argument("--runs", type=int, default=2, help="runs a clip")
    parser.add_argument("--families", default="", help="only these families (comma separated)")
    parser.add_argument("--view-faces", default="120,64", help="face widths (px) for every family but size")
    parser.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    parser.add_argument("--insightface", type=Path, default=None, help="buffalo_l folder: compare crops with it")
    parser.add_argument("--picture", type=Path, default=None, help="write the detectors' picture here (jpg; the Detect Faces help "
                        "page shows js/docs/LatentSyncDetectFaces/LatentSyncDetectFaces_hard.jpg)")
    parser.add_argument("--json", type=Path, default=None, help="also write every number here")
    args = parser.parse_args()
    names = args.detectors.split(",") + (["insightface"] if args.insightface else [])
    runs = truth_runs(args.media, args.runs, args.frames)
    print(f"{sum(t is not None for run in runs for _, t in run)} truth frames in {len(runs)} runs")
    wanted = set(filter(None, args.families.split(",")))
    chosen = [c for c in cases(tuple(int(v) for v in args.view_faces.split(","))) if not wanted or c.family in wanted]
    report = {"cases": [], "families": {}}
    print(f"{'family':7} {'case':8} {'face':>4} " + " ".join(f"{n:>37}" for n in names))
    print(f"{'':21} " + " ".join(f"{'recall false  err  jitter    fps':>37}" for _ in names))
    detectors = {n: make_detector(n, models_dir=args.insightface) if n == "insightface" else make_detector(n)
                 for n in names}
    for case in chosen:
        cells = []
        for name in names:
            row = run_case(case, runs, detectors[name]).row()
            report["cases"].append({"family": case.family, "case": case.name, "face_px": case.face_px,
                                    "detector": name, **row})
            cells.append(f"{100 * row['recall']:5.0f}% {row['false_per_frame']:5.2f} {row['landmark_error']:5.3f} "
                         f"{row['jitter']:6.4f} {row['fps']:6.1f}")
        print(f"{case.family:7} {case.name:8} {case.face_px:4} " + " ".join(f"{c:>37}" for c in cells), flush=True)
    print("\nrecall of faces >= 48 px, by family (goal for auto: >= 95 %, covered >= 80 %)")
    for name in names:
        rows = [r for r in report["cases"] if r["detector"] == name and r["face_px"] >= 48]
        by_family = {}
        for r in rows:
            by_family.setdefault(r["family"], []).append(r)
        summary = {f: sum(r["recall"] * r["frames"] for r in rs) / max(sum(r["frames"] for r in rs), 1)
                   for f, rs in by_family.items()}
        report["families"][name] = summary
        print(f"  {name:12} " + "  ".join(f"{f} {100 * v:.0f}%" for f, v in summary.items()))
    jitter = still_jitter(runs, make_detector("auto"))
    report["still_jitter"] = jitter
    print(f"\nstill-face jitter (auto; anchor motion a frame / eye distance): smoothing off {jitter['off']:.4f}, "
          f"on {jitter['on']:.4f}, ratio {jitter['ratio']:.2f} (goal <= 0.5)")
    speed = easy_speed(runs)
    report["easy_fps"] = speed
    print(f"easy clips, full resolution, tracked: dlib {speed['dlib']:.1f} fps, auto {speed['auto']:.1f} fps, "
          f"ratio {speed['auto'] / speed['dlib']:.2f} (goal >= 0.8)")
    agreement = crop_agreement(runs, args.insightface)
    report["crop_agreement"] = agreement
    for key, label in (("reference", f"the reference's ({agreement['against']})"), ("before", "HOG's, unsmoothed")):
        a = agreement[key]
        print(f"crops of auto vs {label}, {a['frames']} frames, % of the crop width: mean {a['mean_pct']:.2f}, "
              f"p95 {a['p95_pct']:.2f}, max {a['max_pct']:.2f} (goal <= 2)")
    if args.picture:
        picture(runs, names, args.picture)
        print(f"picture: {args.picture}")
    if args.json:
        import json

        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
