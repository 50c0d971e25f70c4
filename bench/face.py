"""Face pipeline benchmark: frames per second of detect + align + paste back on the shared 1080x1920 clips,
on CPU (goal: >= 10 fps on 2 cores). The baseline, measured in the same run, is the reference's way of
detecting: a full-frame search on every frame instead of following the face.

    python -m bench.face [--frames 150] [--resolution 256] [--calibrate]

--calibrate also fits the dlib 5-point -> 3-point rule to the centroids of dlib's 68-point brows and nose on
the clips (the 68-point model is used only here; its training data forbids commercial use) and prints how
far the two alignments are apart, in crop pixels.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from latentsync.media.video import decode_frames
from latentsync.face.align import (align, anchors_in_frame, crop_displacement, crop_geometry,
                                   motion_stats, similarity_transform, smoothed_matrices)
from latentsync.face.detect import (BROW_ALONG, BROW_DOWN, NOSE_DOWN, DlibFaceDetector,
                                    FaceTracker, _face_recognition_model, track_from_faces)
from latentsync.face.paste import paste_back

REPO = Path(__file__).resolve().parents[1]

CLIPS = ("latentsync_demo1_video.mp4", "latentsync_demo3_video.mp4")


def load(clip: Path, count: int) -> np.ndarray:
    frames, _, _ = decode_frames(clip)
    return np.stack([frame for _, frame in zip(range(count), frames)])


def timed_track(frames: np.ndarray, detector, max_track_gap: int):
    tracker = FaceTracker(detector, max_track_gap=max_track_gap)
    start = time.perf_counter()
    faces = [tracker.step(frame) for frame in frames]
    return track_from_faces(faces, frames.shape[1:3], detector.name), time.perf_counter() - start


def calibrate(media: Path, step: int) -> None:
    import dlib

    model = dlib.shape_predictor(str(_face_recognition_model("shape_predictor_68_face_landmarks.dat")))
    five = dlib.shape_predictor(str(_face_recognition_model("shape_predictor_5_face_landmarks.dat")))
    detector = DlibFaceDetector()
    template, crop_wh = crop_geometry(256)
    rows, targets, nose_rows, nose_targets, pairs = [], [], [], [], []
    for clip in CLIPS:
        frames, _, _ = decode_frames(media / clip)
        tracker = FaceTracker(detector)
        for i, frame in enumerate(frames):
            face = tracker.step(frame)
            if face is None or i % step:
                continue
            box = [int(round(v)) for v in face.box]
            rect = dlib.rectangle(box[0], box[1], box[2] - 1, box[3] - 1)
            p5 = np.array([(q.x, q.y) for q in five(frame, rect).parts()], np.float64)
            p68 = np.array([(q.x, q.y) for q in model(frame, rect).parts()], np.float64)
            left_eye, right_eye = p5[2:4].mean(0), p5[0:2].mean(0)
            eyes, middle = right_eye - left_eye, (left_eye + right_eye) / 2
            down = p5[4] - middle
            brows = p68[17:22].mean(0), p68[22:27].mean(0)
            rows += [np.stack([eyes, down], 1), np.stack([-eyes, down], 1)]
            targets += [brows[0] - left_eye, brows[1] - right_eye]
            nose_rows.append(down[:, None])
            nose_targets.append(p68[27:36].mean(0) - middle)
            reference = np.stack([brows[0], brows[1], p68[27:36].mean(0)])
            pairs.append((face.points3, reference))
    brow = np.linalg.lstsq(np.concatenate(rows), np.concatenate(targets), rcond=None)[0]
    nose = np.linalg.lstsq(np.concatenate(nose_rows), np.concatenate(nose_targets), rcond=None)[0]
    print(f"fit on {len(pairs)} frames: BROW_ALONG {brow[0]:.3f}, BROW_DOWN {brow[1]:.3f}, NOSE_DOWN {nose[0]:.3f} "
          f"(in use: {BROW_ALONG}, {BROW_DOWN}, {NOSE_DOWN})")
    distances = []
    for ours, reference in pairs:
        a, _ = similarity_transform(ours, template, smooth=False)
        b, _ = similarity_transform(reference, template, smooth=False)
        distances.append(crop_displacement(a.numpy(), b.numpy(), crop_wh))
    d = np.array(distances)
    print(f"alignment difference, 5-point rule vs 68-point centroids (crop corners and centre, px of the "
          f"210x280 crop): mean {d.mean():.2f}, median {np.median(d):.2f}, p95 {np.percentile(d, 95):.2f}, "
          f"max {d.max():.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=150, help="frames per clip (decoded before timing)")
    parser.add_argument("--resolution", type=int, choices=(256, 512), default=256)
    parser.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    parser.add_argument("--calibrate", action="store_true", help="also fit and check the 5-point rule")
    parser.add_argument("--calibrate-step", type=int, default=5, help="use every n-th frame for --calibrate")
    args = parser.parse_args()

    detector = DlibFaceDetector()
    print(f"torch threads: {torch.get_num_threads()}; resolution {args.resolution}")
    print(f"{'clip':28} {'frames':>6} {'detect':>8} {'full-scan':>9} {'align':>7} {'paste':>7} "
          f"{'fps':>6} {'baseline':>8} {'ratio':>6} {'jitter%':>7}")
    for clip in CLIPS:
        frames = load(args.media / clip, args.frames)
        timed_track(frames[:2], detector, 25)  # warm-up: first calls allocate
        track, t_detect = timed_track(frames, detector, 25)
        _, t_full = timed_track(frames, detector, -1)
        start = time.perf_counter()
        faces = align(frames, track, args.resolution)
        t_align = time.perf_counter() - start
        start = time.perf_counter()
        paste_back(frames, faces, faces.pixel_values(), inplace=True)
        t_paste = time.perf_counter() - start
        n = len(frames)
        fps = n / (t_detect + t_align + t_paste)
        baseline = n / (t_full + t_align + t_paste)
        jitter = motion_stats(anchors_in_frame(smoothed_matrices(track.points3, track.valid, 256), 256))
        print(f"{clip:28} {n:6d} {1000 * t_detect / n:6.1f}ms {1000 * t_full / n:7.1f}ms {1000 * t_align / n:5.1f}ms "
              f"{1000 * t_paste / n:5.1f}ms {fps:6.1f} {baseline:8.1f} {fps / baseline:6.2f} "
              f"{100 * jitter['jitter_rel']:7.2f}   faces {int(track.valid.sum())}/{n}")
    print("fps = detect + align + paste back per frame (decoding excluded); baseline = the same with a full-frame "
          "search every frame; jitter% = RMS second difference of the smoothed alignment points / brow distance")
    if args.calibrate:
        calibrate(args.media, args.calibrate_step)


if __name__ == "__main__":
    main()
