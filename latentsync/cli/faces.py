"""`python -m latentsync faces VIDEO`: the face box chosen in every frame of a video, as JSON."""
from __future__ import annotations

import argparse

from ..face.align import crop_geometry
from ..face.types import no_face_found
from ..face.detect import DETECTORS, SELECTIONS, FaceTracker, check_selection, make_detector, track_from_faces
from ..media.video import decode_frames, file_orientation


def parse_position(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected X,Y as fractions of the frame, e.g. 0.5,0.3; got {text!r}") from exc
    return x, y


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """--select, --index and --position, as `faces` and `lipsync` both take them."""
    parser.add_argument("--select", choices=SELECTIONS, default="largest",
                        help="which face to follow when there are several (then tracked from frame to frame)")
    parser.add_argument("--index", type=int, default=0,
                        help="with --select index: the n-th face from the left, 0 = the leftmost")
    parser.add_argument("--position", type=parse_position, default=None,
                        help="with --select position: X,Y as fractions of the frame from 0 to 1, e.g. 0.5,0.4")


def add_faces_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "faces", help='find the face to lip-sync in every frame; prints {"frames": N, "fps": F, '
                      '"faces": [{"frame": i, "box": [x1, y1, x2, y2] | null}, ...]} (null: no usable face, '
                      "the frame passes through)")
    parser.add_argument("video", help="video file (mp4, mov, mkv, ...)")
    parser.add_argument("--detector", choices=DETECTORS, default="dlib",
                        help="dlib: offline default; insightface: the reference's buffalo_l models (user-supplied)")
    parser.add_argument("--insightface-dir", default=None,
                        help="folder with det_10g.onnx and 2d106det.onnx (default: the usual buffalo_l folders)")
    parser.add_argument("--resolution", type=int, choices=(256, 512), default=256,
                        help="crop resolution: 256 for LatentSync 1.5, 512 for 1.6 (sets the reported crop size)")
    add_selection_arguments(parser)
    parser.add_argument("--threshold", type=float, default=None,
                        help="detection threshold (dlib HOG score, default 0; insightface probability, default 0.5)")
    parser.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    parser.set_defaults(run=faces_command)
    return parser


def faces_command(args: argparse.Namespace) -> dict:
    """Run the `faces` command; returns the JSON the CLI prints."""
    check_selection(args.select, args.index, args.position)  # before the detector loads and frames decode
    options = {"models_dir": args.insightface_dir} if args.detector == "insightface" else {}
    detector = make_detector(args.detector, args.threshold, **options)
    tracker = FaceTracker(detector, args.select, args.index, args.position)
    frames, fps, _ = decode_frames(args.video)
    turned = file_orientation(args.video).warning(args.video)  # the frames come upright; say so
    faces, frame_hw = [], (0, 0)
    for frame in frames:
        frame_hw = frame.shape[:2]
        faces.append(tracker.step(frame))
    track = track_from_faces(faces, frame_hw, detector.name)
    _, crop_wh = crop_geometry(args.resolution)
    return {"frames": len(track), "fps": round(fps, 6), "width": int(frame_hw[1]), "height": int(frame_hw[0]),
            "detector": track.detector, "resolution": args.resolution, "crop_size": list(crop_wh),
            "frames_with_face": int(track.valid.sum()), "faces": track.faces_json(),
            "warnings": ([turned] if turned else []) + ([] if track.valid.any() else [no_face_found(len(track))])}
