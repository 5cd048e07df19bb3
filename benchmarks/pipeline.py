"""Frame-pipeline benchmark: per-stage costs, fan-out CPU and end-to-end CPU, each against a same-run baseline.

    python -m benchmarks.pipeline [--quick] [--json PATH] [--markdown PATH] [--only stages,fanout,e2e]

Per stage (640x480, 1280x720, 1920x1080): conversion + wrap against aiortc's default path
(and livekit-rtc's libyuv ``convert`` when the optional ``livekit`` package is installed),
wrap against a memory copy, encode/decode wrappers against the raw PyAV call, to-NumPy and
to-BGR against PyAV's ``to_ndarray``. Fan-out: sender CPU for 1, 2, 4, 8 real peers against
aiortc's per-peer encoding. End to end: CPU per frame against the isolated stage sum. The peers
run on the loop the ``callrt`` command runs participants on (``signaling.event_loop``: uvloop
when installed; ``--loop`` or ``CALLRT_LOOP`` to choose), callrt's and aiortc's alike.
Progress goes to stderr, the markdown table to stdout. Timings are wall-clock on a shared
machine: compare ratios, which come from the same run, rather than absolute figures.
"""

from __future__ import annotations

import argparse
import logging
import sys

from benchmarks._report import Progress, Record, publish
from signaling import event_loop

RESOLUTIONS = ((640, 480), (1280, 720), (1920, 1080))
PARTS = ("stages", "fanout", "e2e")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny iteration counts (for tests; numbers are noise)")
    p.add_argument("--json", metavar="PATH", help="write the records as JSON to PATH")
    p.add_argument("--markdown", metavar="PATH", help="write the markdown table to PATH")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--peers", default=None, help="fan-out peer counts, e.g. 1,2,4,8")
    p.add_argument("--resolutions", default=None, help="per-stage resolutions, e.g. 640x480,1280x720")
    p.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default=None,
                   help="event loop of the fan-out and end-to-end peers (default: CALLRT_LOOP, else uvloop "
                        "when installed, as the callrt command runs participants)")
    return p.parse_args(argv)


def _resolutions(spec: str | None, quick: bool) -> list[tuple[int, int]]:
    if spec:
        return [(int(w), int(h)) for w, h in (r.lower().split("x") for r in spec.split(","))]
    return [RESOLUTIONS[0]] if quick else list(RESOLUTIONS)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns a process exit code."""
    args = _parse(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        print(f"unknown part(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    logging.getLogger("aioice").setLevel(logging.WARNING)
    quick = args.quick
    resolutions = _resolutions(args.resolutions, quick)
    peers = [int(n) for n in args.peers.split(",")] if args.peers else ([1, 2] if quick else [1, 2, 4, 8])
    iters, codec_frames = (4, 4) if quick else (200, 150)
    warmup, window = (1.0, 0.6) if quick else (2.0, 5.0)

    total = 0
    if "stages" in parts:
        total += len(resolutions) * 8 + 1
    if "fanout" in parts:
        total += 2 * len(peers)
    if "e2e" in parts:
        total += 2 if quick else 4
    loop = event_loop.chosen_loop(args.loop)

    def _on_loop(found: list[Record]) -> list[Record]:
        for r in found:  # both sides of every peer row ran on it
            r.extra["loop"] = loop
        return found

    progress = Progress(total, "pipeline")
    records: list[Record] = []

    if "stages" in parts:
        from benchmarks._stages import audio_stages, video_stages

        for w, h in resolutions:
            records += video_stages(w, h, iters, codec_frames, progress)
        records += audio_stages(iters if quick else 300, progress)
    if "fanout" in parts:
        from benchmarks._peers import fanout_records

        records += _on_loop(event_loop.run(fanout_records(peers, 640, 480, warmup, window, progress.step),
                                           loop=loop))
    if "e2e" in parts:
        from benchmarks._peers import e2e_records

        # Six turns of 2 s each way: the VM's speed drifts by tens of percent over minutes, and with
        # three turns of 50 isolated frames the back-to-back sum alone read 4.4-5.7 ms per 640x480
        # frame across runs of one hour (the end-to-end side 6.5-7.4 ms).
        e2e_window, iso_frames, rounds = (0.6, 10, 1) if quick else (12.0, 360, 6)
        for w, h in [RESOLUTIONS[0]] if quick else list(RESOLUTIONS[:2]):
            records += _on_loop(event_loop.run(e2e_records(w, h, warmup, e2e_window, iso_frames, progress.step,
                                                           rounds), loop=loop))

    publish(records, "Frame pipeline (python -m benchmarks pipeline)", args.json, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
