"""`python -m latentsync faces VIDEO`: the face box chosen in every frame of a video, as JSON."""
from __future__ import annotations

import argparse

from ..face.align import crop_geometry
from ..face.types import no_face_found
from ..face.detect import (DETECTOR, INDEX, POSITION_X, POSITION_Y, SELECT, THRESHOLD, FaceTracker, check_selection,
                           detector_threshold, make_detector, track_from_faces)
from ..face.mask import RESOLUTION
from ..face.smooth import SMOOTHING
from ..media.video import decode_frames, file_orientation
from .options import add_option


def parse_position(text: str) -> tuple[float, float]:
    """`X,Y`, each checked against the nodes' position_x and position_y (`detect.POSITION_X`/`POSITION_Y`)."""
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected X,Y as fractions of the frame, e.g. 0.5,0.3; got {text!r}") from exc
    problem = POSITION_X.problem(x) or POSITION_Y.problem(y)
    if problem:
        raise argparse.ArgumentTypeError(f"X,Y must be fractions of the frame {POSITION_X.bounds()}, got {text!r}")
    return x, y


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """--select, --index and --position, as `faces` and `lipsync` both take them (`detect.SELECT`, ...)."""
    add_option(parser, SELECT)
    add_option(parser, INDEX)
    parser.add_argument("--position", type=parse_position, default=None,
                        help=f"with --select position: X,Y as fractions of the frame {POSITION_X.bounds()} (the "
                             f"nodes' position_x and position_y). Default: {POSITION_X.default:g},"
                             f"{POSITION_Y.default:g}.")


def add_faces_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "faces", help='find the face to lip-sync in every frame; prints {"frames": N, "fps": F, '
                      '"faces": [{"frame": i, "box": [x1, y1, x2, y2] | null}, ...]} (null: no usable face, '
                      "the frame passes through)")
    parser.add_argument("video", help="video file (mp4, mov, mkv, ...)")
    add_option(parser, DETECTOR)
    parser.add_argument("--insightface-dir", default=None,
                        help="folder with det_10g.onnx and 2d106det.onnx (default: the usual buffalo_l folders)")
    add_option(parser, RESOLUTION, help=f"{RESOLUTION.help} It sets the reported crop size.")
    add_selection_arguments(parser)
    add_option(parser, THRESHOLD)
    add_option(parser, SMOOTHING)
    parser.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    parser.set_defaults(run=faces_command)
    return parser


def faces_command(args: argparse.Namespace) -> dict:
    """Run the `faces` command; returns the JSON the CLI prints."""
    check_selection(args.select, args.index, args.position)  # before the detector loads and frames decode
    options = {"models_dir": args.insightface_dir} if args.detector == "insightface" else {}
    detector = make_detector(args.detector, detector_threshold(args.threshold), **options)
    tracker = FaceTracker(detector, args.select, args.index, args.position, smoothing=args.smoothing)
    frames, fps, _ = decode_frames(args.video)
    turned = file_orientation(args.video).warning(args.video)  # the frames come upright; say so
    faces, frame_hw = [], (0, 0)
    for frame in frames:
        frame_hw = frame.shape[:2]
        faces.append(tracker.step(frame))
    track = track_from_faces(faces, frame_hw, detector.name)
    _, crop_wh = crop_geometry(args.resolution)
    return {"frames": len(track), "fps": round(fps, 6), "width": int(frame_hw[1]), "height": int(frame_hw[0]),
            "detector": track.detector, "smoothing": args.smoothing, "resolution": args.resolution,
            "crop_size": list(crop_wh), "frames_with_face": int(track.valid.sum()), "faces": track.faces_json(),
            "warnings": ([turned] if turned else []) + ([] if track.valid.any() else [no_face_found(len(track))])}
