"""``callrt swarm``: the command line of the bot swarm (run, ``--worker``, ``--merge``).

``signaling/cli.py`` registers it with ``add_swarm_parser(sub)``; ``python -m signaling.swarm``
takes the same options without the subcommand. ``DESCRIPTION`` is what ``--help`` shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from signaling.cli_args import fraction, integer, number, positive
from signaling.swarm.errors import InvalidSwarmSpec
from signaling.swarm.layout import Layout, MediaSpec, check_loop, new_run_id, parse_range, parse_video

DESCRIPTION = """\
Put many bots into calls and verify every stream they receive: --calls C calls of --per-call P bots
over worker processes (one per core by default), publishing a tone (--audio) and/or a test pattern
(--video WxH@FPS) for --seconds. Each participant's latency, received rate and loss are measured and
get a verdict (real-time, late, lossy, failed); a live line shows progress, then a report is printed.

Without --url the bots use a coordinator started inside this command. --worker runs one worker of a
run split over several machines (a --participants range of the same --run-id), and --merge combines
their reports.

examples:
  callrt swarm --calls 50 --per-call 2 --audio --seconds 20 --baseline
  callrt swarm --calls 3 --per-call 4 --video 640x480@30 --seconds 20
"""


def add_options(p: argparse.ArgumentParser, *, inherited: bool = False) -> None:
    """Every swarm option, on ``p`` (a ``swarm`` subparser, or ``python -m signaling.swarm``'s parser).

    ``inherited``: ``p`` is a ``callrt`` subparser whose ``--url`` and ``--json`` may also be given before
    ``swarm`` (``callrt --url X swarm``), so here they are set only when given (``callrt``'s parser holds
    the defaults: no URL, ``--json`` as a flag, which ``run_swarm_cli`` reads as "print the report").
    """
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if inherited else value

    p.add_argument("--url", default=default(None), help="coordinator URL (default: start one inside this process)")
    p.add_argument("--json", nargs="?", const="-", default=default(None), metavar="PATH",
                   help="write the report as JSON to PATH (no PATH: print it instead of the text)")
    g = p.add_argument_group("load")
    g.add_argument("--calls", type=int, default=2, help="calls (default 2)")
    g.add_argument("--per-call", type=int, default=2, help="participants per call (default 2)")
    g.add_argument("--seconds", type=positive, default=20.0, help="measured seconds in the calls (default 20)")
    g.add_argument("--audio", action=argparse.BooleanOptionalAction, default=True,
                   help="publish a marked tone, Opus 48 kHz mono (default on)")
    g.add_argument("--video", default="none", metavar="WxH@FPS", help="publish a stamped test pattern, e.g. "
                   "640x480@30 (default none)")
    g.add_argument("--codec", choices=["vp8", "h264"], default="vp8")
    g.add_argument("--bitrate", type=integer(1), default=800_000, help="video bits/s (default 800000)")
    g.add_argument("--audio-encoding", choices=["replay", "live"], default="replay",
                   help="callrt bots send their tone encoded once at start (replay, default) or encode it "
                        "live like a microphone (live); the aiortc baseline always encodes live")
    g.add_argument("--video-encoding", choices=["replay", "live"], default="replay",
                   help="callrt bots send a 10 s cycle of their pattern encoded once at start (replay, "
                        "default) or encode every frame live like a camera (live); the aiortc baseline "
                        "always encodes live")
    g = p.add_argument_group("processes")
    g.add_argument("--processes", type=int, default=None, help="workers (default: one per core)")
    g.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin each worker to a core")
    g.add_argument("--split", choices=["auto", "calls", "participants"], default="auto",
                   help="give workers whole calls or equal participant counts (auto: whole calls when they "
                        "divide evenly; the aiortc baseline always gets whole calls)")
    g.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio", help="event loop of the workers")
    g.add_argument("--executor-threads", type=integer(1), default=None, metavar="N",
                   help="threads of each worker's default executor (aiortc's per-peer encoders run there)")
    g.add_argument("--join-concurrency", type=integer(1), default=8, metavar="N", help="joins at once per worker")
    g.add_argument("--experiment", action="append", default=[], metavar="NAME",
                   help="callrt workers: apply a prototype of a media/rtc change (see signaling/swarm/experiments.py)")
    g.add_argument("--run-id", default=None, help="names the calls and users (default: random); workers of one "
                   "run on several machines share it")
    g = p.add_argument_group("report")
    g.add_argument("--baseline", action="store_true",
                   help="also run the same load with plain aiortc and print every figure next to it")
    g.add_argument("--plot", default=None, metavar="PATH.png", help="latency and received rate over time per worker")
    g.add_argument("--all-rows", action="store_true", help="list every participant, not only the ones in trouble")
    g.add_argument("--keep-logs", action="store_true", help="keep the workers' logs and reports")
    g.add_argument("--late-ms", type=positive, default=250.0, help="latency p95 above this is late (default 250)")
    g.add_argument("--trend-ms", type=number(0), default=100.0, help="latency growth above this is late (default 100)")
    g.add_argument("--min-rate", type=fraction, default=0.96,
                   help="received rate below this fraction of the source's is lossy (default 0.96)")
    g.add_argument("--max-loss", type=fraction, default=0.02, help="loss above this fraction is lossy (default 0.02)")
    g = p.add_argument_group("workers on other machines, merging")
    g.add_argument("--worker", action="store_true",
                   help="run one worker: --participants A-B of the layout against --url, write --json PATH")
    g.add_argument("--participants", default=None, metavar="A-B", help="--worker: participant range (inclusive)")
    g.add_argument("--cpu", type=integer(0), default=None, help="--worker: pin to this core")
    g.add_argument("--engine", choices=["callrt", "aiortc"], default="callrt", help="--worker: engine")
    g.add_argument("--worker-index", type=integer(0), default=0, help="--worker: number shown in reports")
    g.add_argument("--ipc", action="store_true", help=argparse.SUPPRESS)
    g.add_argument("--merge", nargs="+", default=None, metavar="REPORT.json",
                   help="merge worker or swarm reports into one and print it")


def add_swarm_parser(subparsers: Any) -> None:
    """Register ``callrt swarm``.

    It takes the common ``--api-key``, ``--api-secret`` and ``-v`` but its own ``--url`` (absent: start a
    coordinator) and ``--json [PATH]`` (a path writes the report there). Like the common options on
    every ``callrt`` subcommand, they are set only when given after ``swarm``: the values and defaults
    come from ``callrt``'s own parser, so ``callrt --api-key K swarm`` works too. ``callrt``'s common
    parser is not used as a parent: argparse's conflict resolution would edit its shared actions and
    break every other command.
    """
    p = subparsers.add_parser("swarm", help="many verified bot participants over worker processes, live figures, "
                              "a report", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_credentials(p, argparse.SUPPRESS, argparse.SUPPRESS, verbose_default=argparse.SUPPRESS)
    add_options(p, inherited=True)
    p.set_defaults(func=run_swarm_cli)


def _add_credentials(p: argparse.ArgumentParser, api_key: str | None, api_secret: str | None,
                     verbose_default: Any = 0) -> None:
    p.add_argument("--api-key", default=api_key, help="API key (default CALLRT_API_KEY)")
    p.add_argument("--api-secret", default=api_secret, help="API secret, to mint the bots' tokens "
                   "(default CALLRT_API_SECRET)")
    p.add_argument("-v", "--verbose", action="count", default=verbose_default, help="more logging (-vv: debug)")


def _thresholds(args: argparse.Namespace) -> Any:
    from signaling.swarm.participant import Thresholds

    return Thresholds(min_rate=args.min_rate, max_loss=args.max_loss, late_ms=args.late_ms, trend_ms=args.trend_ms)


def _media(args: argparse.Namespace) -> MediaSpec:
    return MediaSpec(audio=args.audio, video=parse_video(args.video), codec=args.codec, bitrate=args.bitrate,
                     audio_encoding=args.audio_encoding, video_encoding=args.video_encoding)


def _emit(args: argparse.Namespace, report: dict[str, Any], text: str) -> None:
    if args.json and args.json != "-":
        from signaling.swarm.worker import write_report

        write_report(report, args.json)
    if args.json == "-":
        print(json.dumps(report, indent=1))
    elif not getattr(args, "ipc", False):
        print(text)
    if args.plot:
        from signaling.swarm.plot import plot

        plot(report, args.plot)
        if args.json != "-":
            print(f"plot written to {args.plot}")


def run_swarm_cli(args: argparse.Namespace) -> int:
    """The ``swarm`` handler: 0 when no participant failed, 1 otherwise, 130 when interrupted."""
    from signaling.swarm import report as rp

    if isinstance(args.json, bool):  # ``callrt --json swarm``: callrt's flag, "print the report as JSON"
        args.json = "-" if args.json else None

    if args.merge:
        merged = rp.merge([rp.load(p) for p in args.merge])
        _emit(args, merged, rp.render(merged, all_rows=args.all_rows))
        return 0 if merged["ok"] else 1
    if args.worker:
        return _run_worker(args)
    from signaling.swarm.runner import SwarmOptions, run_swarm

    opts = SwarmOptions(
        calls=args.calls, per_call=args.per_call, media=_media(args), seconds=args.seconds,
        processes=args.processes, url=args.url, api_key=args.api_key, api_secret=args.api_secret,
        run_id=args.run_id, split=args.split, baseline=args.baseline, pin=args.pin, loop=args.loop,
        executor_threads=args.executor_threads, join_concurrency=args.join_concurrency,
        thresholds=_thresholds(args), experiments=args.experiment, live=True, keep_logs=args.keep_logs)
    report = asyncio.run(run_swarm(opts))
    _emit(args, report, rp.render(report, all_rows=args.all_rows))
    if report.get("interrupted"):
        return 130
    return 0 if report["ok"] else 1


def _run_worker(args: argparse.Namespace) -> int:
    from signaling.swarm import report as rp
    from signaling.swarm.worker import WorkerOptions, run_worker

    if args.participants is None:
        raise InvalidSwarmSpec("--worker needs --participants A-B")
    check_loop(args.loop)
    if args.run_id is None and not args.ipc:
        raise InvalidSwarmSpec("--worker needs the run's --run-id (workers of one run share it)")
    layout = Layout(args.run_id or new_run_id(), args.calls, args.per_call)
    api_key = args.api_key or os.environ.get("CALLRT_API_KEY")
    api_secret = args.api_secret or os.environ.get("CALLRT_API_SECRET")
    if args.engine == "callrt" and not (args.url and api_key and api_secret):
        raise InvalidSwarmSpec("--worker needs --url and the API key and secret (--api-key/--api-secret or "
                               "CALLRT_API_KEY/CALLRT_API_SECRET) to mint its participants' tokens")
    opts = WorkerOptions(
        layout=layout, participants=parse_range(args.participants, layout.total), media=_media(args),
        seconds=args.seconds, engine=args.engine, url=args.url, api_key=api_key, api_secret=api_secret,
        index=args.worker_index, cpu=args.cpu, loop=args.loop, executor_threads=args.executor_threads,
        join_concurrency=args.join_concurrency, thresholds=_thresholds(args), experiments=args.experiment,
        json_path=args.json if args.json and args.json != "-" else None, ipc=args.ipc)
    report, status = run_worker(opts)
    if report is None:
        return status
    if args.json == "-":
        print(json.dumps(report, indent=1))
    elif not args.ipc:
        print(rp.render_worker(report, all_rows=args.all_rows))
    if status == 0 and any(p["verdict"] == "failed" for p in report["participants"]):
        status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    """``python -m signaling.swarm``: the same options as ``callrt swarm``."""
    import logging

    from media.errors import CallrtError
    from signaling.tables import print_error

    p = argparse.ArgumentParser(prog="python -m signaling.swarm", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_credentials(p, os.environ.get("CALLRT_API_KEY"), os.environ.get("CALLRT_API_SECRET"))
    add_options(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return run_swarm_cli(args)
    except CallrtError as exc:
        return print_error("callrt swarm", exc, args.json == "-")
    except KeyboardInterrupt:
        return 130
