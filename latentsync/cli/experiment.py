"""`python -m latentsync experiment`: a matrix of lip-sync configurations, each scored with SyncNet."""
from __future__ import annotations

import argparse
import sys

from ..run.cluster import RayCluster
from ..run.experiment import run_experiment


def add_experiment_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "experiment", help="run every configuration of a configs file on one clip, score each with SyncNet, and "
                           "write OUT/README.md (table), results.csv, chart.png and one mp4 per configuration",
        description="Runs every configuration of the configs file on one clip and scores each with SyncNet. The "
                    "report (README.md, results.csv, chart.png) is rewritten after each configuration; one that "
                    "fails becomes a row with its error and the run goes on.",
        epilog="Exit code: 0 when every configuration ran, 1 when the run finished but some configurations "
               "failed (see the report's error column and the JSON's \"error\" entries), 2 when the run could "
               "not start (a bad configs file, an unreadable clip), 130 when interrupted.")
    parser.add_argument("--video", required=True, help="the talking-face clip")
    parser.add_argument("--audio", required=True, help="the voice to lip-sync to")
    parser.add_argument("--configs", required=True, help="configs file (JSON); bench/poc_experiment.json "
                                                         "reproduces the PoC's experiment")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--models", default=None, help="folder that relative model paths are read from, e.g. "
                                                       "ComfyUI/models (default: the configs file's folder)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--ray", default=None, metavar="local|auto|ADDRESS",
                        help="one configuration per task on a Ray cluster (pip install ray): local starts one on this "
                             "machine for the run, auto joins the one `ray start` runs here, or a cluster's address")
    parser.add_argument("--workers", type=int, default=None, help="with --ray: tasks at once (default: the "
                                                                    "cluster's GPUs, else CPUs)")
    parser.set_defaults(run=experiment_command)
    return parser


def experiment_command(args: argparse.Namespace) -> tuple[dict, int]:
    """Run the `experiment` command; returns the JSON summary and the exit code (1 if a configuration failed)."""
    cluster = None
    if args.ray:
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {args.workers}")
        cluster = RayCluster(args.ray, args.workers)
    rows = run_experiment(args.video, args.audio, args.configs, args.out, models_dir=args.models,
                          device=args.device, progress=lambda line: print(line, file=sys.stderr, flush=True),
                          cluster=cluster)
    keys = ("name", "lse_c", "lse_d", "offset", "seconds", "peak_mb", "warnings", "error")
    results = [{k: r[k] for k in keys if k in r} for r in rows]
    failed = sum("error" in r for r in rows)
    return {"out": args.out, "failed": failed, "results": results}, 1 if failed else 0
