"""A swarm worker: one process, optionally pinned to one core, running a range of participants.

``callrt swarm`` starts one per core; ``callrt swarm --worker --url URL --participants A-B`` runs
one by hand (on another machine, say) against a remote coordinator. A worker joins its
participants (a few at a time), keeps them in their calls for ``seconds``, leaves, and writes its
report (``--json PATH``). While it runs it samples, every second, what it received, the latency,
its event loop's lateness and its CPU; with ``ipc`` those samples go to stdout as JSON lines for
the parent's live view, otherwise a progress line goes to stderr.

SIGINT/SIGTERM end the run early: participants leave, the report is written (``interrupted``)
and the process exits with 130.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from signaling import event_loop
from signaling.swarm.layout import Layout, MediaSpec, format_range, whole_calls
from signaling.swarm.participant import Participant, Thresholds
from signaling.swarm.stamped import MarkedTone, StampedTestPattern
from signaling.swarm.stats import percentile_r1

logger = logging.getLogger(__name__)

REPORT_KIND = "callrt-swarm-worker"
REPORT_VERSION = 1
LAG_INTERVAL_S = 0.02
JOIN_TIMEOUT_S = 30.0
WARMUP_S = 1.0
"""After every expected stream delivered its first frame, at least this long before the measuring
window opens; then until the event loop has settled (``SETTLED_LAG_MS``), ``WARMUP_MAX_S`` at most."""
SETTLED_LAG_MS = 10.0
"""The loop counts as settled once a whole second's loop-lag p95 is at most this. All participants
joining at once leave a backlog (seen with 100 audio bots: latency p95 ~700 ms at 1 s after the
last stream started, 85 ms two seconds later, steady after); the window measures steady state."""
WARMUP_MAX_S = 10.0
"""A worker that never settles opens its window after this anyway: its overload is then measured."""
STREAMS_START_TIMEOUT_S = 20.0
"""At most this long after the joins for every stream to start; the window opens anyway after it
(a stream that never started is then reported, not waited for). Peer connections finish ICE and
DTLS after ``join()`` returns, and with every participant of a saturated machine joining at once
that can take seconds: measuring from then on reported the ramp-up as lateness."""
Engine = Literal["callrt", "aiortc"]


@dataclass
class WorkerOptions:
    """Everything one worker needs; the parent passes it as command-line options."""

    layout: Layout
    participants: range
    media: MediaSpec
    seconds: float
    engine: Engine = "callrt"
    url: str | None = None
    api_key: str | None = None
    api_secret: str | None = None
    index: int = 0
    """Worker number (for the report)."""
    cpu: int | None = None
    """Core to pin the whole process to (None: not pinned)."""
    loop: Literal["asyncio", "uvloop"] = "asyncio"
    executor_threads: int | None = None
    """Size of the loop's default executor, where aiortc runs its per-peer encoders (None: Python's default)."""
    join_concurrency: int = 8
    thresholds: Thresholds = field(default_factory=Thresholds)
    experiments: list[str] = field(default_factory=list)
    """Prototypes of media/rtc changes to measure (see ``signaling.swarm.experiments``)."""
    json_path: str | None = None
    ipc: bool = False
    """JSON lines on stdout for the parent (else a progress line on stderr)."""


def pin_to(cpu: int) -> None:
    """Pin every thread of this process (and so every thread started later) to ``cpu``."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, {cpu})


class Monitor:
    """Samples the event loop's lateness continuously and CPU, reception and latency once a second."""

    def __init__(self, timeline: Any, cpu: int | None) -> None:
        import psutil

        self.timeline = timeline
        self.cpu = cpu
        self.proc = psutil.Process()
        self._psutil = psutil
        self.lags: list[float] = []
        self._second_lags: list[float] = []
        self.samples: list[dict[str, Any]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.t0 = time.time()

    def start(self) -> None:
        self.proc.cpu_percent(None)
        self._psutil.cpu_percent(percpu=True)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._lag_loop(), name="swarm-lag")]

    async def _lag_loop(self) -> None:
        # perf_counter, not loop.time(): uvloop's clock has millisecond steps
        while True:
            t = time.perf_counter()
            await asyncio.sleep(LAG_INTERVAL_S)
            lag = max(0.0, (time.perf_counter() - t - LAG_INTERVAL_S) * 1000)
            self._second_lags.append(lag)

    def sample(self, joined: int, phase: str) -> dict[str, Any]:
        """Close the current second: what arrived, latency, loop lag, CPU."""
        now = time.time()
        span = max(1e-3, now - (self.samples[-1]["wall"] if self.samples else self.t0))
        audio, video, lat = self.timeline.roll()
        lags, self._second_lags = self._second_lags, []
        if phase == "running":
            self.lags.extend(lags)
        cpu = self.proc.cpu_percent(None)
        core = None
        if self.cpu is not None:
            per = self._psutil.cpu_percent(percpu=True)
            core = per[self.cpu] if self.cpu < len(per) else None
        s = {
            "wall": now, "phase": phase, "joined": joined,
            "rx_audio": round(audio / span, 1), "rx_video": round(video / span, 1),
            "latency_ms_p50": percentile_r1(lat, 0.5), "latency_ms_p95": percentile_r1(lat, 0.95),
            "loop_lag_ms_p95": percentile_r1(lags, 0.95), "cpu_percent": round(cpu, 1),
            "core_percent": None if core is None else round(core, 1),
        }
        self.samples.append(s)
        return s

    def restart_second(self) -> None:
        """Forget the lateness sampled so far in this second (the measuring window starts now)."""
        self._second_lags = []

    async def aclose(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Worker:
    """Runs one range of participants with one engine (module doc)."""

    def __init__(self, opts: WorkerOptions) -> None:
        from signaling.swarm.checks import Timeline

        self.opts = opts
        self.timeline = Timeline()
        callrt = opts.engine == "callrt"
        self.participants = [
            Participant(k, opts.layout, opts.media, self.timeline,
                        preencode_audio=callrt and opts.media.audio_encoding == "replay",
                        preencode_video=callrt and opts.media.video_encoding == "replay")
            for k in opts.participants]
        self.stop = asyncio.Event()
        self.interrupted = False
        self.monitor = Monitor(self.timeline, opts.cpu)
        self.phase = "starting"
        self.window: tuple[float, float] | None = None
        self.streams_started_s = 0.0
        """Seconds from the end of the joins until every expected stream delivered a first frame."""
        self.warmup_s = 0.0
        """Seconds from then until the measuring window opened."""
        self.settled = False
        """Whether the loop settled before the window opened (else ``WARMUP_MAX_S`` ran out)."""
        self.threads = 0
        self.rss_mb = 0.0

    @property
    def joined(self) -> int:
        return sum(1 for p in self.participants if p.joined)

    def request_stop(self) -> None:
        if not self.stop.is_set():
            logger.info("worker %d: stopping early", self.opts.index)
            self.interrupted = True
            self.stop.set()

    async def run(self) -> dict[str, Any]:
        opts = self.opts
        if opts.engine == "aiortc" and not whole_calls(opts.layout, opts.participants):
            from signaling.swarm.errors import InvalidSwarmSpec

            raise InvalidSwarmSpec("the plain-aiortc baseline needs whole calls in each worker "
                                   f"({format_range(opts.participants)} splits a call of {opts.layout.per_call})")
        from signaling.swarm.experiments import apply as apply_experiments

        apply_experiments(opts.experiments)
        self.monitor.start()
        ticker = asyncio.get_running_loop().create_task(self._tick(), name="swarm-ticker")
        engine = self._engine()
        try:
            await self._prepare()
            self.phase = "joining"
            await engine.join()
            t_joined = time.monotonic()
            while (not self.stop.is_set() and time.monotonic() - t_joined < STREAMS_START_TIMEOUT_S
                   and not all(p.streams_started() for p in self.participants if p.joined)):
                with contextlib.suppress(TimeoutError):  # polls the checks; wakes at once on SIGINT
                    async with asyncio.timeout(0.1):
                        await self.stop.wait()
            self.streams_started_s = time.monotonic() - t_joined
            await self._warm_up()
            if not self.stop.is_set():
                self.phase = "running"
                for p in self.participants:
                    p.open_window()
                self.monitor.restart_second()
                t_open = time.time()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), opts.seconds)
                self.window = (t_open, time.time())
                self.threads = self.monitor.proc.num_threads()
                self.rss_mb = self.monitor.proc.memory_info().rss / 2**20
        finally:
            self.phase = "leaving"
            if self.window is None:
                self.window = (time.time(), time.time())
            try:
                await asyncio.wait_for(engine.leave(), 30 + 0.2 * len(self.participants))
            except TimeoutError:
                logger.warning("worker %d: leaving took too long", opts.index)
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            await self.monitor.aclose()
        return self.report()

    async def _warm_up(self) -> None:
        """Let jitter buffers, encoder rates and the join backlog settle (``WARMUP_S``, ``SETTLED_LAG_MS``)."""
        t0, wall0 = time.monotonic(), time.time()
        while not self.stop.is_set() and time.monotonic() - t0 < WARMUP_MAX_S:
            with contextlib.suppress(TimeoutError):  # wakes at once on SIGINT
                async with asyncio.timeout(0.1):
                    await self.stop.wait()
            last = self.monitor.samples[-1] if self.monitor.samples else None
            if (time.monotonic() - t0 >= WARMUP_S and last is not None and last["wall"] - 1.0 >= wall0
                    and last["loop_lag_ms_p95"] is not None and last["loop_lag_ms_p95"] <= SETTLED_LAG_MS):
                self.settled = True
                break
        self.warmup_s = time.monotonic() - t0

    async def _prepare(self) -> None:
        """Pre-encode the bots' tones and pattern cycles before anyone joins (one thread, so joins do
        not compete with it)."""
        sources: list[MarkedTone | StampedTestPattern] = [
            s for p in self.participants for s in (p.tone, p.pattern) if s is not None and s.preencode]
        if not sources:
            return
        self.phase = "preparing"
        t0 = time.monotonic()

        def encode_all() -> None:
            for s in sources:
                s.prepare_blocking()

        await asyncio.to_thread(encode_all)
        logger.info("worker %d: %d sources pre-encoded in %.1f s", self.opts.index, len(sources),
                    time.monotonic() - t0)

    def _engine(self) -> _Engine:
        if self.opts.engine == "aiortc":
            return _AiortcEngine(self)
        return _CallrtEngine(self)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            s = self.monitor.sample(self.joined, self.phase)
            self._emit({"type": "stats", "worker": self.opts.index, "engine": self.opts.engine,
                        "participants": len(self.participants), **s})

    def _emit(self, record: dict[str, Any]) -> None:
        if self.opts.ipc:
            sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
            sys.stdout.flush()
        elif record["type"] == "stats":
            lat = record["latency_ms_p95"]
            msg = (f"[worker {self.opts.index} {record['phase']}] {record['joined']}/{record['participants']} joined, "
                   f"rx {record['rx_audio'] + record['rx_video']:.0f} frames/s, latency p95 "
                   f"{'-' if lat is None else f'{lat:.0f} ms'}, loop lag p95 {record['loop_lag_ms_p95']} ms, "
                   f"CPU {record['cpu_percent']:.0f}%")
            print(msg, file=sys.stderr, flush=True)

    def report(self) -> dict[str, Any]:
        opts = self.opts
        assert self.window is not None
        t_open, t_close = self.window
        running = [s for s in self.monitor.samples if s["phase"] == "running"]
        lags = self.monitor.lags

        def mean(key: str) -> float | None:
            vals = [s[key] for s in running if s[key] is not None]
            return round(statistics.fmean(vals), 1) if vals else None

        return {
            "kind": REPORT_KIND, "version": REPORT_VERSION,
            "run_id": opts.layout.run_id, "engine": opts.engine, "worker": opts.index,
            "host": socket.gethostname(), "pid": os.getpid(), "cpu": opts.cpu, "loop": opts.loop,
            "executor_threads": opts.executor_threads, "experiments": list(opts.experiments),
            "layout": {"calls": opts.layout.calls, "per_call": opts.layout.per_call},
            "participants_range": [opts.participants.start, opts.participants.stop],
            "media": opts.media.as_dict(), "seconds": opts.seconds, "thresholds": opts.thresholds.as_dict(),
            "window": [t_open, t_close], "interrupted": self.interrupted,
            "streams_started_s": round(self.streams_started_s, 2),
            "warmup_s": round(self.warmup_s, 2), "settled": self.settled,
            "cpu_percent": mean("cpu_percent"), "core_percent": mean("core_percent"),
            "rx_frames_per_s": round(self._window_frames() / (t_close - t_open), 1) if t_close > t_open else 0.0,
            "loop_lag_ms_p50": percentile_r1(lags, 0.5), "loop_lag_ms_p95": percentile_r1(lags, 0.95),
            "loop_lag_ms_max": round(max(lags), 1) if lags else None,
            "threads": self.threads, "rss_mb": round(self.rss_mb, 1),
            "timeline": [{**{k: v for k, v in s.items() if k != "wall"}, "t": round(s["wall"] - t_open, 2)}
                         for s in self.monitor.samples if s["phase"] != "leaving"],
            "participants": [p.result(t_close, opts.thresholds, opts.index, opts.engine)
                             for p in self.participants],
        }


    def _window_frames(self) -> int:
        return sum(c.window_frames for p in self.participants
                   for c in (*p.video_checks.values(), *p.audio_checks.values()))


class _Engine:
    def __init__(self, worker: Worker) -> None:
        self.w = worker

    async def join(self) -> None:
        raise NotImplementedError

    async def leave(self) -> None:
        raise NotImplementedError

    async def _bounded(self, jobs: list[Callable[[], Awaitable[None]]]) -> None:
        sem = asyncio.Semaphore(self.w.opts.join_concurrency)

        async def one(job: Callable[[], Awaitable[None]]) -> None:
            async with sem:
                if not self.w.stop.is_set():
                    await job()

        await asyncio.gather(*(one(j) for j in jobs))


class _CallrtEngine(_Engine):
    async def join(self) -> None:
        from signaling.swarm.bots import make_bots

        o = self.w.opts
        if not (o.url and o.api_key and o.api_secret):
            from signaling.swarm.errors import InvalidSwarmSpec

            raise InvalidSwarmSpec("a callrt worker needs --url, --api-key and --api-secret")
        self.bots = make_bots(self.w.participants, o.layout, o.url, o.api_key, o.api_secret)

        def job(bot: Any) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                from media.errors import CallrtError

                try:
                    await asyncio.wait_for(bot.join(), JOIN_TIMEOUT_S)
                except CallrtError as exc:
                    bot.p.error = f"join failed: [{exc.code}] {exc.message}"
                except TimeoutError:
                    bot.p.error = f"join did not complete in {JOIN_TIMEOUT_S:g} s"
                except Exception as exc:  # a load tool records a participant's failure and goes on
                    logger.debug("%s: join failed", bot.p.user_id, exc_info=True)
                    bot.p.error = f"join failed: {type(exc).__name__}: {exc}"
                if bot.p.error:
                    logger.warning("%s: %s", bot.p.user_id, bot.p.error)
            return run

        await self._bounded([job(b) for b in getattr(self, "bots", [])])

    async def leave(self) -> None:
        bots = getattr(self, "bots", [])
        sem = asyncio.Semaphore(self.w.opts.join_concurrency)

        async def one(bot: Any) -> None:
            async with sem:
                await bot.leave()

        await asyncio.gather(*(one(b) for b in bots), return_exceptions=True)


class _AiortcEngine(_Engine):
    async def join(self) -> None:
        from signaling.swarm.baseline import BaselineCall

        by_call: dict[int, list[Participant]] = {}
        for p in self.w.participants:
            by_call.setdefault(p.call, []).append(p)
        self.calls = [BaselineCall(members) for members in by_call.values()]

        def job(call: BaselineCall) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                try:
                    await call.join()
                except Exception as exc:  # aiortc raises plain exceptions; record them per participant
                    for p in call.members:
                        p.error = f"negotiation failed: {exc!r}"
                    logger.warning("baseline call %d: %r", call.members[0].call, exc)
            return run

        await self._bounded([job(c) for c in self.calls])

    async def leave(self) -> None:
        for call in getattr(self, "calls", []):
            await call.leave()


def write_report(report: dict[str, Any], path: str) -> None:
    """Write atomically (a reader never sees half a report)."""
    target = Path(path)
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    tmp.replace(target)


async def _main(opts: WorkerOptions) -> tuple[dict[str, Any] | None, int]:
    loop = asyncio.get_running_loop()
    if opts.executor_threads:
        from concurrent.futures import ThreadPoolExecutor

        loop.set_default_executor(ThreadPoolExecutor(opts.executor_threads, thread_name_prefix="swarm-exec"))
    worker = Worker(opts)
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, worker.request_stop)
    report = await worker.run()
    if opts.json_path:
        write_report(report, opts.json_path)
    if opts.ipc:
        worker._emit({"type": "report", "worker": opts.index, "path": opts.json_path})
    return report, 130 if worker.interrupted else 0


def run_worker(opts: WorkerOptions) -> tuple[dict[str, Any] | None, int]:
    """Pin, choose the event loop, run; returns the report and the exit status."""
    if opts.cpu is not None:
        pin_to(opts.cpu)
    try:
        return event_loop.run(_main(opts), loop=opts.loop)
    except KeyboardInterrupt:
        return None, 130
