"""Bot swarm density: ``callrt swarm --baseline`` on issue 7's two shapes, as benchmark records.

* audio only: ``--audio-participants`` (default 100) in two-party calls, Opus 48 kHz mono;
* video: 3 four-party calls (12 participants) at 640x480 30 fps VP8, with audio.

Each runs callrt, then the same load with plain aiortc, in pinned worker processes (one per
core). Records: participants in real time, CPU % per participant, latency p50/p95, received rate,
join and first-frame times, event-loop lag, memory; each next to plain aiortc's figure from the
same run. ``--experiment`` / ``--loop uvloop`` apply to callrt's workers as in ``callrt swarm``.
The machine is usually shared: the records carry the CPU % other processes took on the workers'
cores. ``--quick``: 8 audio participants and one 4-party 320x240 call, a few seconds each.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from benchmarks._report import Progress, Record, publish

BASELINE = "plain aiortc (same run)"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks swarm", description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None, help="write the records as JSON")
    p.add_argument("--markdown", default=None, help="write the markdown table")
    p.add_argument("--audio-participants", type=int, default=100)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--only", default="audio,video", help="audio,video")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    p.add_argument("--experiment", action="append", default=[])
    return p.parse_args(argv)


def _records(report: dict[str, Any], shape: str) -> list[Record]:
    runs = report["runs"]
    c = runs["callrt"]["summary"]
    b = runs.get("aiortc", {}).get("summary", {})
    extra = {"participants": c["participants"], "others_cpu_percent_on_cores": c["others_percent_on_cores"],
             "baseline_others_cpu_percent_on_cores": b.get("others_percent_on_cores"),
             "late_lossy_failed": [c["late"], c["lossy"], c["failed"]],
             "baseline_late_lossy_failed": [b.get("late"), b.get("lossy"), b.get("failed")]}
    rows = [
        ("participants in real time", "real_time", "participants"),
        ("CPU per participant", "cpu_percent_per_participant", "%cpu"),
        ("participants one core feeds (est.)", "capacity_per_core_est", "participants"),
        ("latency p50", "latency_ms_p50", "ms"),
        ("latency p95 (across participants)", "latency_ms_p95", "ms"),
        ("received rate per stream p50", "rate_p50", "frames/s"),
        ("join p50", "join_ms_p50", "ms"),
        ("first frame p50", "first_frame_ms_p50", "ms"),
        ("event loop lag p95 (worst worker)", "loop_lag_ms_p95", "ms"),
        ("memory, all workers", "rss_mb", "MB"),
    ]
    out = []
    for name, key, unit in rows:
        value = c.get(key)
        if value is None:
            continue
        out.append(Record(f"swarm {shape}: {name}", float(value), unit, baseline=BASELINE,
                          baseline_value=None if b.get(key) is None else float(b[key]), extra=extra))
    return out


def main(argv: list[str] | None = None) -> int:
    from signaling.swarm.layout import MediaSpec, parse_video
    from signaling.swarm.runner import SwarmOptions, SwarmRunner

    args = _parse(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    seconds = 4.0 if args.quick else args.seconds
    shapes: list[tuple[str, SwarmOptions]] = []
    if "audio" in parts:
        n = 8 if args.quick else args.audio_participants
        shapes.append((f"{n} audio-only in two-party calls",
                       SwarmOptions(calls=max(1, n // 2), per_call=2, media=MediaSpec(audio=True))))
    if "video" in parts:
        video, calls = ("320x240@15", 1) if args.quick else ("640x480@30", 3)
        shapes.append((f"{calls * 4} video {video} VP8 in four-party calls",
                       SwarmOptions(calls=calls, per_call=4, media=MediaSpec(audio=True, video=parse_video(video)))))
    progress = Progress(len(shapes), "swarm")
    records: list[Record] = []
    for shape, opts in shapes:
        opts.seconds, opts.baseline, opts.live = seconds, True, False
        opts.loop, opts.experiments = args.loop, list(args.experiment)
        report = asyncio.run(SwarmRunner(opts).run())
        records += _records(report, shape)
        progress.step(shape)
    publish(records, "Bot swarm (python -m benchmarks swarm)", args.json, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
