"""`python -m latentsync score`: LSE-C, LSE-D and the AV offset of a video, as the reference metric computes them."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..media.audio import AudioError, load_audio
from ..media.video import decode_frames, video_info
from ..score.crops import pack_face_detector
from ..score.evaluate import JPEG, MIN_TRACK_FRAMES, FaceCrops, TrackRules, score_video, wants_jpeg
from ..score.s3fd import load_s3fd
from ..score.syncnet import load_syncnet
from .options import add_option


def add_score_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "score", help="SyncNet lip-sync score of a video; prints "
                      '{"lse_c": ..., "lse_d": ..., "offset": frames, "crops": "s3fd"|"pack"|"input", "jpeg": '
                      'true|false, ...}')
    parser.add_argument("video", help="video file; frames are taken at 25 fps (nearest frame by time), as the "
                                      "metric is defined at 25 fps")
    parser.add_argument("--audio", default=None, help="audio to score against (default: the video's own audio track)")
    parser.add_argument("--syncnet", required=True, help="SyncNet weights, LatentSync's "
                                                         "checkpoints/auxiliary/syncnet_v2.model")
    parser.add_argument("--s3fd", default=None, help="S3FD face detector (checkpoints/auxiliary/sfd_face.pth): "
                                                     "crop faces as the reference does, comparable with papers")
    parser.add_argument("--already-cropped", action="store_true",
                        help="the video already is a face crop (resized to 224x224), as in the reference's "
                             "per-crop evaluation")
    parser.add_argument("--jpeg", action=argparse.BooleanOptionalAction, default=None,
                        help=f"send every face-crop frame through a JPEG round trip before SyncNet, as the "
                             f"reference's evaluation reads its crops from JPEG files (the node's {JPEG.name}; "
                             f"default: on with --s3fd, to compare with papers; off otherwise, to measure the frames "
                             f"as they are)")
    add_option(parser, MIN_TRACK_FRAMES)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--json", action="store_true",
                        help="print JSON (the only output format; accepted for clarity)")
    parser.set_defaults(run=score_command)
    return parser


def video_fps(path: str | Path) -> float:
    fps = video_info(path).fps
    if not fps:
        raise ValueError(f"{path} does not state a frame rate")
    return fps


def crop_mode(args: argparse.Namespace) -> str:
    """Where the face crops come from: "input" (--already-cropped), "s3fd" (--s3fd, as papers) or "pack"."""
    return "input" if args.already_cropped else "s3fd" if args.s3fd else "pack"


def score_command(args: argparse.Namespace) -> dict:
    """Run the `score` command; returns the JSON dict the CLI prints."""
    fps = video_fps(args.video)
    if args.already_cropped and args.s3fd:
        raise ValueError("--already-cropped and --s3fd exclude each other")
    try:
        waveform, sample_rate = load_audio(args.audio or args.video)
    except AudioError as exc:
        if args.audio is None:
            raise AudioError(f"{exc}; pass --audio with the speech to score against") from exc
        raise
    crops, extra = crop_mode(args), {}
    if crops == "s3fd":
        extra = {"s3fd": load_s3fd(args.s3fd, device=args.device)}
    elif crops == "pack":
        extra = {"face_boxes": pack_face_detector()}
    syncnet = load_syncnet(args.syncnet, device=args.device)
    source = FaceCrops(crops, jpeg=wants_jpeg(getattr(args, "jpeg", None), crops), **extra)
    score = score_video(lambda: decode_frames(args.video)[0], waveform, sample_rate, fps, syncnet, source,
                        tracks=TrackRules(min_track=args.min_track))
    return {**score.to_json(), "video_fps": fps}
