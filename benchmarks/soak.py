"""Soak: N concurrent signaling clients against one coordinator, then a store audit; and many audio calls.

``python -m benchmarks.soak [--quick] [--clients N] [--seconds S] [--audio-calls M] [--audio-seconds S]
[--skip-rest] [--skip-audio] [--json PATH] [--markdown PATH]``

Part 1, REST soak (issue 6, item 3). The coordinator runs as a separate process (``callrt serve``,
i.e. ``python -m signaling.cli serve``, a fresh SQLite file) as in ``benchmarks.coordinator``, whose
helpers this module imports. N clients (default 200), each its own ``Client`` with its own user
token and event socket, signaling-only (``media_factory = None``, camera and microphone disabled,
``join(auto_subscribe=False)``), loop for ``--seconds`` (default 30):

    get_or_create a call -> join -> update(custom=<a value unique to this write>) -> leave

Three iterations in four use the client's call from a shared pool (about ten clients per pool
call, so they contend on it: concurrent joins, updates and leaves, and lost creation races); the
fourth creates a fresh call of the client's own. Calls are of a call type ``soak`` created at
start: the ``default`` grants plus ``update-call`` for ``user`` (in ``default`` only the host may
update custom data, and the pool calls have one host but ten writers). Each client paces itself to
at most ``MAX_ITERATIONS_PER_S`` iterations per second so that it stays under the coordinator's
default rate limit (20 creations + joins per user per second): at 200 clients throughput is
bounded long before that, so this only matters for small N (``paced_fraction`` in the JSON).
Per-op latency is the SDK call's wall time (request, response validation); an op that raises is an
error, counted by its typed ``code``.

Then the same clients offer the load open-loop (``PACED_LEVELS``: 50, 75 and 90 % of the
closed-loop throughput just measured, ``--seconds / 2`` each): each client starts an iteration on a
fixed schedule whether or not its previous one finished, and a late start counts in the latency
(no coordinated omission). A closed loop at saturation always shows latency ~= clients /
throughput; the paced phases show the latency a user gets while the coordinator has headroom.
Their writes go to the same ledger, so the store audit covers them too.

Baseline: ``GET /healthz`` through the very same clients, closed loop, the same concurrency, for a
third of ``--seconds`` (1..10 s), half right before the soak and half right after it, so that load
from elsewhere on the machine hits both alike: the floor of FastAPI + uvicorn + httpx here.

After the run the clients are closed, the coordinator is stopped, and its SQLite file is opened
read-only and audited against what the clients were told (acknowledged operations):

* every call a ``get_or_create`` acknowledged exists;
* per call, the stored ``custom`` is the acknowledged write with the highest returned ``version``
  (the last one); acknowledged versions are unique per call (no two writes saw the same state);
* per call, the stored ``version`` equals 1 + acknowledged joins + updates + leaves (each bumps it
  once) where no operation on the call failed, and is at least that where one did;
* no participant session twice (join replies, and ``(call, user)`` rows);
* no orphan: no participant row of a session whose leave was acknowledged (or of an unknown
  session), every participant row belongs to an existing call, and a call with nobody left has
  its session closed (``session_ended_at`` set).

Any violated check makes the exit status 1.

Part 2, audio calls. A fresh coordinator process; ``--audio-calls`` (default 20) two-party calls
in this process for ``--audio-seconds`` (default 60), each party publishing a ``devices.Tone`` of a
frequency no other party uses and no video (``call.camera.disable()``). Every receiving side is
verified at the end of the window by FFT (``devices.dominant_frequency`` of its last 2 s, within
``devices.tone.FREQ_TOLERANCE_HZ`` of the sender's tone) and its receive rate (frames/s over the
window; nominal 50 for 20 ms frames) is reported. CPU per participant = this process's CPU over
the window / (2 x calls); the coordinator's own process is measured apart. When the process cannot
keep up (one Python process carries about one core) the received rate falls and that figure is
capped by what the process got, so it is also given scaled to the nominal rate (x 50 / mean
received frames/s): the cost of one participant at full rate, from which the number of calls one
core carries follows (printed when the rate was not held). Baseline: the same number of plain
aiortc two-peer audio-only pairs (``RTCPeerConnection``s negotiated directly in this process, an
``aiortc.AudioStreamTrack`` subclass producing a sine each way), verified the same way; half of its
window right before the calls and half right after them, pooled. Exit status 1 if some stream is
not verified (wrong or no tone, or any video frame received).

Output: a markdown table (``benchmarks._report`` format) followed by the store checks, the error
counts and the per-call audio verification on stdout; progress on stderr; ``--json``/``--markdown``
files. All figures come from one machine shared with other work: treat them as pessimistic.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import gc
import json
import logging
import math
import os
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import av
import numpy as np
import psutil
from aiortc import AudioStreamTrack, MediaStreamTrack, RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from benchmarks._report import (
    Progress,
    Record,
    configure_logging,
    machine_description,
    markdown_table,
    percentile,
)
from benchmarks.coordinator import (
    BenchmarkError,
    ClientPool,
    Sample,
    SubprocessCoordinator,
    healthz,
    process_cpu,
)
from devices import Tone, dominant_frequency
from devices.tone import FREQ_TOLERANCE_HZ
from media.errors import CallrtError
from signaling.call import Call
from signaling.client import Client, ServerClient
from signaling.demo import StreamCheck
from signaling.errors import Conflict
from signaling.gc_tuning import tune_gc
from signaling.models import Event
from signaling.rtc.remote import RemoteTrack
from signaling.server.permissions import BUILTIN_CALL_TYPES
from signaling.tables import table
from signaling.tokens import TokenIssuer

logger = logging.getLogger(__name__)

T = TypeVar("T")

SOAK_CALL_TYPE = "soak"
AUDIO_CALL_TYPE = "default"
SHARERS_PER_CALL = 10
"""Clients per shared pool call (the pool has ceil(N / this) calls)."""
OWN_CALL_EVERY = 4
"""Every this-many-th iteration of a client creates a call of its own instead of using its pool call."""
MAX_ITERATIONS_PER_S = 8.0
"""Per client; with one join and at most one creation per iteration this stays under 20/s per user."""
PACED_LEVELS = (0.5, 0.75, 0.9)
"""Offered load of the paced (open-loop) phases, as fractions of the closed-loop throughput just measured."""
PACED_K0 = 1_000_000
"""Iteration numbers of paced phase ``n`` start at ``n * PACED_K0`` (written values and call ids stay unique)."""
AUDIO_BASE_HZ = 300.0
AUDIO_STEP_HZ = 50.0
AUDIO_FRAMES_PER_S = 50.0
"""Nominal: 20 ms frames."""
AUDIO_KEEP_FRAMES = 100
"""Received frames kept per stream for the FFT (the last 2 s)."""
RATE_HELD_FRACTION = 0.9
"""A stream "held" its rate when it received at least this fraction of the nominal frames/s."""
FIRST_AUDIO_TIMEOUT_S = 30.0
TONE_LEVEL = 0.4


# ---------------------------------------------------------------- plan


@dataclass(frozen=True)
class Plan:
    clients: int
    seconds: float
    baseline_seconds: float
    """Total /healthz baseline time, half before and half after the soak."""
    audio_calls: int
    audio_seconds: float
    audio_settle: float
    rest: bool = True
    audio: bool = True
    quick: bool = False
    paced_levels: tuple[float, ...] = PACED_LEVELS
    paced_seconds: float = 15.0

    @property
    def pool_size(self) -> int:
        return max(1, math.ceil(self.clients / SHARERS_PER_CALL))

    @property
    def progress_every(self) -> float:
        return 1.0 if self.quick else 2.0


def make_plan(args: argparse.Namespace) -> Plan:
    q = bool(args.quick)
    seconds = args.seconds if args.seconds is not None else (3.0 if q else 30.0)
    return Plan(
        clients=args.clients if args.clients is not None else (20 if q else 200),
        seconds=seconds,
        baseline_seconds=min(10.0, max(1.0, seconds / 3.0)),
        audio_calls=args.audio_calls if args.audio_calls is not None else (2 if q else 20),
        audio_seconds=args.audio_seconds if args.audio_seconds is not None else (3.0 if q else 60.0),
        audio_settle=0.3 if q else 1.0,
        rest=not args.skip_rest,
        audio=not args.skip_audio,
        quick=q,
        paced_levels=(0.5,) if q else PACED_LEVELS,
        paced_seconds=2.0 if q else max(2.0, seconds / 2.0),
    )


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def _p_ms(values: Sequence[float], q: float) -> float | None:
    return round(_ms(percentile(values, q)), 3) if values else None


def _status(line: str) -> None:
    """A progress line on stderr (overwritten in place on a terminal)."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + line)
    else:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _end_status() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\n")
        sys.stderr.flush()


# ---------------------------------------------------------------- part 1: the REST soak


@dataclass
class Write:
    """One acknowledged ``update(custom=...)``."""

    value: dict[str, Any]
    version: int
    updated_at: float


@dataclass
class Ledger:
    """What the clients were told: every acknowledged (and every failed) operation, per call."""

    calls_acked: set[str] = field(default_factory=set)
    writes: dict[str, list[Write]] = field(default_factory=lambda: defaultdict(list))
    unacked_values: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    """Custom values whose update raised: each may or may not have been applied."""
    joins: Counter[str] = field(default_factory=Counter)
    leaves: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    """Failed operations per call (any of them may have been applied)."""
    sessions: list[str] = field(default_factory=list)
    """Session ids of every acknowledged join, in order."""
    left: set[str] = field(default_factory=set)
    """Sessions whose leave was acknowledged."""
    not_left: set[str] = field(default_factory=set)
    """Sessions whose leave raised (they may remain until the coordinator reaps them)."""


@dataclass
class SoakStats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    """``"op: code"`` -> count."""
    error_samples: dict[str, str] = field(default_factory=dict)
    """``"op: code"`` -> the first such error's message."""
    recent: list[float] = field(default_factory=list)
    """Latencies since the last progress line."""
    paced_s: float = 0.0
    iterations: int = 0
    events: int = 0
    """Events the clients' sockets delivered (and the SDK validated) during the soak."""
    timeline: list[dict[str, float | None]] = field(default_factory=list)
    """Per progress interval: ops/s, p95 and max latency, errors so far, coordinator CPU share."""
    sample_event: dict[str, Any] | None = None
    """One ``call.updated`` as received, to time what the client spends on each event."""

    def on_event(self, event: Any) -> None:
        self.events += 1
        if self.sample_event is None and event.type == "call.updated":
            self.sample_event = event.model_dump(mode="json")

    @property
    def ops(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())

    def all_latencies(self) -> list[float]:
        return [x for v in self.latencies.values() for x in v]


OPS = ("get_or_create", "join", "update", "leave")


async def _timed(stats: SoakStats, op: str, awaitable: Awaitable[T], since: float | None = None
                 ) -> tuple[bool, T | None]:
    """Await one SDK operation; record its latency, or its error code. (ok, result).

    ``since``: when the operation was due (paced phases); a late start counts in its latency, so
    a coordinator that falls behind its schedule cannot hide it (no coordinated omission).
    """
    t0 = time.perf_counter() if since is None else min(since, time.perf_counter())
    try:
        result = await awaitable
    except CallrtError as exc:
        key = f"{op}: {exc.code}"
        stats.errors[key] += 1
        stats.error_samples.setdefault(key, str(exc)[:300])
        logger.debug("%s failed: %s", op, exc)
        return False, None
    except Exception as exc:  # anything untyped is a bug in itself: count it under its class name
        key = f"{op}: untyped {type(exc).__name__}"
        stats.errors[key] += 1
        stats.error_samples.setdefault(key, repr(exc)[:300])
        logger.warning("%s raised an untyped %r", op, exc)
        return False, None
    dt = time.perf_counter() - t0
    stats.latencies[op].append(dt)
    stats.recent.append(dt)
    return True, result


async def soak_client(i: int, client: Client, shared_call: str, tag: str, deadline: float,
                      stats: SoakStats, ledger: Ledger) -> None:
    """One client's loop until ``deadline`` (an iteration under way when it passes is finished)."""
    k = 0
    min_period = 1.0 / MAX_ITERATIONS_PER_S
    while time.perf_counter() < deadline:
        t_iter = time.perf_counter()
        call_id = f"{tag}-own-{i}-{k}" if k % OWN_CALL_EVERY == OWN_CALL_EVERY - 1 else shared_call
        await _iteration(i, k, client.call(SOAK_CALL_TYPE, call_id), tag, stats, ledger)
        stats.iterations += 1
        k += 1
        spare = min_period - (time.perf_counter() - t_iter)
        if spare > 0:
            stats.paced_s += spare
            await asyncio.sleep(spare)


async def paced_client(i: int, client: Client, shared_call: str, tag: str, start: float, period: float,
                       deadline: float, k0: int, stats: SoakStats, ledger: Ledger) -> None:
    """Open loop: iteration ``k`` is due at ``start + phase + k * period`` whether or not the last
    one answered in time (clients spread evenly over the period); ends at ``deadline``."""
    phase = (i * 0.6180339887 % 1.0) * period
    k = 0
    while True:
        due = start + phase + k * period
        if due >= deadline:
            return
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        kk = k0 + k
        call_id = f"{tag}-own-{i}-{kk}" if kk % OWN_CALL_EVERY == OWN_CALL_EVERY - 1 else shared_call
        await _iteration(i, kk, client.call(SOAK_CALL_TYPE, call_id), tag, stats, ledger, due=due)
        stats.iterations += 1
        k += 1


async def _iteration(i: int, k: int, call: Call, tag: str, stats: SoakStats, ledger: Ledger,
                     due: float | None = None) -> None:
    cid = call.cid
    ok, _ = await _timed(stats, "get_or_create", call.get_or_create(), since=due)
    if not ok:
        ledger.failed[cid] += 1
        return
    ledger.calls_acked.add(cid)
    await call.camera.disable()
    await call.microphone.disable()
    ok, joined = await _timed(stats, "join", call.join(auto_subscribe=False))
    if not ok or joined is None:
        ledger.failed[cid] += 1
        return
    session_id = joined.participant.session_id
    ledger.sessions.append(session_id)
    ledger.joins[cid] += 1
    value = {"writer": i, "seq": k, "run": tag}
    ok, updated = await _timed(stats, "update", call.update(custom=value))
    if ok and updated is not None:
        ledger.writes[cid].append(Write(value, updated.call.version, updated.call.updated_at.timestamp()))
    else:
        ledger.unacked_values[cid].append(value)
        ledger.failed[cid] += 1
    ok, _ = await _timed(stats, "leave", call.leave())
    if ok:
        ledger.left.add(session_id)
        ledger.leaves[cid] += 1
    else:
        ledger.not_left.add(session_id)
        ledger.failed[cid] += 1


async def run_healthz(clients: Sequence[Client], seconds: float, errors: Counter[str], samples: dict[str, str],
                      cpu: Callable[[], float] | None) -> Sample:
    """Closed loop of ``GET /healthz`` on every client for ``seconds``."""
    sample = Sample()
    deadline = time.perf_counter() + seconds

    async def worker(client: Client) -> None:
        op = healthz(client)
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                await op()
            except CallrtError as exc:
                errors[f"healthz: {exc.code}"] += 1
                samples.setdefault(f"healthz: {exc.code}", str(exc)[:300])
                continue
            sample.latencies.append(time.perf_counter() - t0)

    cpu0 = cpu() if cpu else None
    own0 = process_cpu()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    sample.wall_s = time.perf_counter() - t0
    sample.process_cpu_s = process_cpu() - own0
    if cpu is not None and cpu0 is not None:
        sample.server_cpu_s = cpu() - cpu0
    return sample


async def _report_progress(stats: SoakStats, t0: float, seconds: float, every: float,
                           cpu: Callable[[], float] | None, label: str = "soak") -> None:
    last_ops, last_t = 0, t0
    last_cpu = cpu() if cpu else 0.0
    while True:
        await asyncio.sleep(every)
        now = time.perf_counter()
        ops = stats.ops
        recent, stats.recent = stats.recent, []
        p95 = f"{_ms(percentile(recent, 95)):.0f} ms" if recent else "-"
        rate = (ops - last_ops) / max(now - last_t, 1e-9)
        point: dict[str, float | None] = {
            "t_s": round(now - t0, 2), "ops_per_s": round(rate, 1), "errors": stats.error_total,
            "p95_ms": round(_ms(percentile(recent, 95)), 1) if recent else None,
            "max_ms": round(_ms(max(recent)), 1) if recent else None}
        if cpu is not None:
            c = cpu()
            point["coordinator_cpu"] = round((c - last_cpu) / max(now - last_t, 1e-9), 2)
            last_cpu = c
        stats.timeline.append(point)
        last_ops, last_t = ops, now
        _status(f"[{label} {min(now - t0, seconds):5.1f}/{seconds:g}s] {ops} ops ({rate:.0f} ops/s), "
                f"{stats.error_total} errors, p95 {p95} (last {every:g}s)")


async def ensure_call_type(url: str, api_key: str, api_secret: str) -> None:
    """The ``soak`` call type: the ``default`` grants, plus ``update-call`` for every user."""
    grants = {role: list(caps) for role, caps in BUILTIN_CALL_TYPES["default"]["grants"].items()}
    grants["user"] = [*grants["user"], "update-call"]
    async with ServerClient(url, api_key=api_key, api_secret=api_secret) as sc:
        with contextlib.suppress(Conflict):
            await sc.create_call_type(SOAK_CALL_TYPE, grants=grants)


@dataclass
class SoakResult:
    plan: Plan
    stats: SoakStats
    soak: Sample
    baseline: Sample
    baseline_errors: Counter[str]
    baseline_error_samples: dict[str, str]
    ledger: Ledger
    db_path: Path
    coordinator_cpu_s: float | None
    connect_s: float
    machine: dict[str, object]
    paced: list[PacedPhase] = field(default_factory=list)


@dataclass
class PacedPhase:
    """One open-loop phase: every client runs its iterations on a schedule."""

    level: float
    """Offered load as a fraction of the closed-loop throughput."""
    offered_ops_per_s: float
    stats: SoakStats
    sample: Sample


def machine_load(cpu_percent_since: float, window_s: float, ours_s: float) -> dict[str, object]:
    """How busy the machine was over the window, and how much of it was someone else's work."""
    cores = psutil.cpu_count() or 1
    busy_cores = cpu_percent_since / 100.0 * cores
    return {"cores": cores, "machine_cpu_percent": round(cpu_percent_since, 1),
            "busy_cores": round(busy_cores, 2), "ours_cores": round(ours_s / window_s, 2),
            "others_cores": round(max(0.0, busy_cores - ours_s / window_s), 2),
            "load_average_1m": round(os.getloadavg()[0], 2)}


def client_event_cost(event: dict[str, Any] | None, n: int = 200) -> dict[str, object]:
    """What the SDK spends per received event (``json.loads`` + ``Event.model_validate``), timed here."""
    if event is None:
        return {}
    raw = json.dumps(event, separators=(",", ":"))
    t0 = time.perf_counter()
    for _ in range(n):
        Event.model_validate(json.loads(raw))
    return {"event_bytes": len(raw), "client_ms_per_event": round((time.perf_counter() - t0) * 1000 / n, 4)}


def _db_path(coord: SubprocessCoordinator) -> Path:
    assert coord.proc is not None
    args = [str(a) for a in coord.proc.args]  # type: ignore[union-attr]
    return Path(args[args.index("--db") + 1])


async def run_soak(plan: Plan, workdir: Path, progress: Progress) -> SoakResult:
    api_key = "soak-" + secrets.token_hex(4)
    api_secret = secrets.token_urlsafe(32)
    tag = "s" + secrets.token_hex(3)
    stats, ledger = SoakStats(), Ledger()
    baseline_errors: Counter[str] = Counter()
    baseline_samples: dict[str, str] = {}
    async with contextlib.AsyncExitStack() as stack:
        coord = SubprocessCoordinator(workdir, api_key, api_secret)
        stack.callback(coord.stop)
        await coord.start()
        db_path = _db_path(coord)
        await ensure_call_type(coord.url, api_key, api_secret)
        cpu = coord.cpu_probe()
        pool = ClientPool(coord.url, api_key, TokenIssuer(api_key, api_secret))
        stack.push_async_callback(pool.aclose)
        t0 = time.perf_counter()
        clients = await pool.users([f"{tag}-u{i}" for i in range(plan.clients)])
        connect_s = time.perf_counter() - t0
        for c in clients:  # open each HTTP connection, untimed
            await healthz(c)()
        tune_gc()  # as callrt serve does (signaling.gc_tuning); CALLRT_GC=default measures without
        progress.step(f"coordinator at {coord.url}; {plan.clients} clients connected in {connect_s:.1f}s")

        half = plan.baseline_seconds / 2
        baseline = await run_healthz(clients, half, baseline_errors, baseline_samples, cpu)
        progress.step(f"/healthz baseline (before), {baseline.ops} requests")

        shared = [f"{tag}-pool-{j}" for j in range(plan.pool_size)]
        for c in clients:
            c.on("*", stats.on_event)
        cpu0 = cpu() if cpu else None
        own0 = process_cpu()
        psutil.cpu_percent(None)
        t0 = time.perf_counter()
        reporter = asyncio.create_task(_report_progress(stats, t0, plan.seconds, plan.progress_every, cpu))
        try:
            deadline = t0 + plan.seconds
            await asyncio.gather(*(soak_client(i, c, shared[i % len(shared)], tag, deadline, stats, ledger)
                                   for i, c in enumerate(clients)))
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            _end_status()
        soak = Sample(latencies=stats.all_latencies(), wall_s=time.perf_counter() - t0,
                      process_cpu_s=process_cpu() - own0)
        coordinator_cpu_s = (cpu() - cpu0) if cpu is not None and cpu0 is not None else None
        soak.server_cpu_s = coordinator_cpu_s
        machine = machine_load(psutil.cpu_percent(None), soak.wall_s,
                               soak.process_cpu_s + (coordinator_cpu_s or 0.0))
        progress.step(f"soak: {stats.ops} ops in {soak.wall_s:.1f}s, {stats.error_total} errors")

        paced = []
        for n, level in enumerate(plan.paced_levels, start=1):
            paced.append(await run_paced(plan, clients, shared, tag, level, soak.ops_per_s, n * PACED_K0, ledger,
                                         cpu))
            progress.step(f"paced at {level:.0%} of saturation: {paced[-1].stats.ops} ops, "
                          f"p99 {paced[-1].sample.p(99):.0f} ms, {paced[-1].stats.error_total} errors")

        baseline.add(await run_healthz(clients, half, baseline_errors, baseline_samples, cpu))
        progress.step(f"/healthz baseline (after), {baseline.ops} requests in all")
    # the clients are closed and the coordinator stopped: its file is complete
    progress.step("clients closed, coordinator stopped")
    return SoakResult(plan=plan, stats=stats, soak=soak, baseline=baseline, baseline_errors=baseline_errors,
                      baseline_error_samples=baseline_samples, ledger=ledger, db_path=db_path,
                      coordinator_cpu_s=coordinator_cpu_s, connect_s=connect_s, machine=machine, paced=paced)


async def run_paced(plan: Plan, clients: Sequence[Client], shared: Sequence[str], tag: str, level: float,
                    saturation_ops_per_s: float, k0: int, ledger: Ledger,
                    cpu: Callable[[], float] | None) -> PacedPhase:
    """``level`` x the closed-loop throughput, offered on a schedule by the same clients (same ledger)."""
    offered = level * saturation_ops_per_s
    period = len(clients) * len(OPS) / max(offered, 1e-9)  # seconds between one client's iterations
    stats = SoakStats()
    t0 = time.perf_counter()
    reporter = asyncio.create_task(_report_progress(stats, t0, plan.paced_seconds, plan.progress_every, cpu,
                                                    label=f"paced {level:.0%}"))
    try:
        deadline = t0 + plan.paced_seconds
        await asyncio.gather(*(paced_client(i, c, shared[i % len(shared)], tag, t0, period, deadline, k0,
                                            stats, ledger) for i, c in enumerate(clients)))
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        _end_status()
    sample = Sample(latencies=stats.all_latencies(), wall_s=time.perf_counter() - t0)
    return PacedPhase(level=level, offered_ops_per_s=offered, stats=stats, sample=sample)


# ---------------------------------------------------------------- the store audit


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def audit_store(db_path: Path, ledger: Ledger) -> tuple[list[Check], dict[str, int]]:
    """Compare the coordinator's SQLite file (opened read-only) with what the clients were told."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        calls = {r["cid"]: r for r in db.execute(
            "SELECT cid, custom, version, session_id, session_ended_at FROM calls")}
        rows = db.execute("SELECT session_id, cid, user_id FROM participants").fetchall()
        dup_rows = db.execute("SELECT cid, user_id, COUNT(*) AS n FROM participants GROUP BY cid, user_id"
                              " HAVING n > 1").fetchall()
    finally:
        db.close()
    checks: list[Check] = []

    missing = sorted(ledger.calls_acked - calls.keys())
    checks.append(Check("every acknowledged call exists", not missing,
                        f"{len(ledger.calls_acked)} calls acknowledged, {len(calls)} in the store, "
                        f"{len(missing)} missing{': ' + ', '.join(missing[:5]) if missing else ''}"))

    wrong, explained, dup_versions = [], [], []
    n_writes = 0
    for cid, writes in ledger.writes.items():
        n_writes += len(writes)
        versions = [w.version for w in writes]
        if len(set(versions)) != len(versions):
            dup_versions.append(cid)
        last = max(writes, key=lambda w: (w.version, w.updated_at))
        row = calls.get(cid)
        stored = json.loads(row["custom"]) if row is not None else None
        if stored == last.value:
            continue
        if stored in ledger.unacked_values.get(cid, []):
            explained.append(cid)
        else:
            wrong.append(f"{cid}: stored {stored}, last acknowledged v{last.version} {last.value}")
    checks.append(Check("last acknowledged custom write is the stored one", not wrong,
                        f"{len(ledger.writes)} calls, {n_writes} acknowledged writes; {len(wrong)} calls differ"
                        + (f" ({wrong[0]})" if wrong else "")
                        + (f"; {len(explained)} ended on an unacknowledged write" if explained else "")))
    checks.append(Check("acknowledged write versions unique per call", not dup_versions,
                        f"{len(dup_versions)} calls with two writes acknowledged at the same version"))

    short, over = [], []
    for cid in ledger.calls_acked:
        row = calls.get(cid)
        if row is None:
            continue
        expected = 1 + ledger.joins[cid] + len(ledger.writes.get(cid, [])) + ledger.leaves[cid]
        if row["version"] < expected:
            short.append(f"{cid}: v{row['version']} < {expected}")
        elif row["version"] > expected and not ledger.failed[cid]:
            over.append(f"{cid}: v{row['version']} > {expected}")
    checks.append(Check("version == 1 + acknowledged joins + updates + leaves", not short and not over,
                        f"{len(short)} calls below (a lost write), {len(over)} above with no failed op "
                        f"(a write nobody asked for){': ' + (short + over)[0] if short or over else ''}"))

    dup_sessions = [s for s, n in Counter(ledger.sessions).items() if n > 1]
    checks.append(Check("no participant session twice", not dup_sessions and not dup_rows,
                        f"{len(ledger.sessions)} sessions joined, {len(dup_sessions)} session ids handed out twice, "
                        f"{len(dup_rows)} (call, user) pairs with two participant rows"))

    joined = set(ledger.sessions)
    orphans = [r["session_id"] for r in rows if r["session_id"] in ledger.left or r["session_id"] not in joined]
    expected_left_over = [r["session_id"] for r in rows if r["session_id"] in ledger.not_left]
    checks.append(Check("no orphan participant rows", not orphans,
                        f"{len(rows)} participant rows left; {len(orphans)} of sessions that left or that nobody "
                        f"joined; {len(expected_left_over)} of sessions whose leave failed"))

    homeless = [r["session_id"] for r in rows if r["cid"] not in calls]
    checks.append(Check("every participant row belongs to an existing call", not homeless,
                        f"{len(homeless)} rows name a missing call"))

    occupied = {r["cid"] for r in rows}
    open_sessions = [cid for cid, r in calls.items()
                     if r["session_id"] is not None and r["session_ended_at"] is None and cid not in occupied]
    checks.append(Check("empty calls have their session closed", not open_sessions,
                        f"{len(open_sessions)} calls with nobody in them and an open session"
                        f"{': ' + ', '.join(open_sessions[:5]) if open_sessions else ''}"))
    counts = {"calls_in_store": len(calls), "calls_acknowledged": len(ledger.calls_acked),
              "acknowledged_writes": n_writes, "acknowledged_joins": sum(ledger.joins.values()),
              "acknowledged_leaves": sum(ledger.leaves.values()), "participant_rows_left": len(rows),
              "failed_ops": sum(ledger.failed.values())}
    return checks, counts


def soak_records(result: SoakResult, checks: list[Check], counts: dict[str, int]) -> list[Record]:
    plan, stats, soak, base = result.plan, result.stats, result.soak, result.baseline
    if not soak.latencies or not base.latencies:
        raise BenchmarkError("the soak or its baseline completed no operation")
    who = f"{plan.clients} client{'s' if plan.clients != 1 else ''}"
    per_op = {op: {"ops": len(stats.latencies[op]), "p50_ms": _p_ms(stats.latencies[op], 50),
                   "p95_ms": _p_ms(stats.latencies[op], 95), "p99_ms": _p_ms(stats.latencies[op], 99),
                   "max_ms": _p_ms(stats.latencies[op], 100)} for op in OPS}
    soak_d = {**soak.details(), "p99_ms": round(soak.p(99), 3)}
    base_d = {**base.details(), "p99_ms": round(base.p(99), 3)}
    extra: dict[str, object] = {
        "clients": plan.clients, "seconds": plan.seconds, "quick": plan.quick, "coordinator": "separate process",
        "shared_pool_calls": plan.pool_size, "own_call_every": OWN_CALL_EVERY, "iterations": stats.iterations,
        "per_op": per_op, "errors": dict(stats.errors), "errors_total": stats.error_total,
        "error_samples": stats.error_samples, "baseline_errors": dict(result.baseline_errors),
        "baseline_error_samples": result.baseline_error_samples, "baseline_seconds": plan.baseline_seconds,
        "paced_s_total": round(stats.paced_s, 2),
        "paced_fraction": round(stats.paced_s / (plan.clients * soak.wall_s), 3),
        "connect_s": round(result.connect_s, 2),
        "events_received": stats.events, "events_per_s": round(stats.events / soak.wall_s, 1),
        "events_per_op": round(stats.events / max(stats.ops, 1), 2),
        **client_event_cost(stats.sample_event), "machine_during_soak": result.machine,
        "timeline": stats.timeline,
        "store_checks_passed": all(c.ok for c in checks),
        "store_checks": [asdict(c) for c in checks], "store_counts": counts,
        "measured": soak_d, "baseline": base_d,
        "note": "closed loop (each client sends its next request when the previous one answered), so latency "
                "~= clients / throughput; coordinator in its own process, clients all in this one; a client never "
                f"runs more than {MAX_ITERATIONS_PER_S:g} iterations/s (paced_fraction: share of client time "
                "spent waiting for that); both processes run signaling.gc_tuning.tune_gc() unless "
                f"CALLRT_GC=default (this process's GC thresholds: {gc.get_threshold()})",
    }
    base_lat = f"GET /healthz round trip, same {who}, closed loop"
    records = [
        Record(name=f"soak: all ops latency {label}, {who}", value=soak.p(q), unit="ms", baseline=base_lat,
               baseline_value=base.p(q), extra=extra)
        for label, q in (("p50", 50), ("p95", 95), ("p99", 99))
    ]
    records.append(Record(name=f"soak: throughput, {who}", value=soak.ops_per_s, unit="ops/s",
                          baseline=f"GET /healthz throughput, same {who}",
                          baseline_value=base.ops_per_s, extra=extra))
    for phase in result.paced:
        ps = phase.sample
        if not ps.latencies:
            raise BenchmarkError(f"the paced phase at {phase.level:.0%} completed no operation")
        pextra = {"level": phase.level, "offered_ops_per_s": round(phase.offered_ops_per_s, 1),
                  "achieved_ops_per_s": round(ps.ops_per_s, 1), "seconds": plan.paced_seconds,
                  "errors": dict(phase.stats.errors), "errors_total": phase.stats.error_total,
                  "per_op_p99_ms": {op: _p_ms(phase.stats.latencies[op], 99) for op in OPS},
                  "note": "open loop: each client starts an iteration every clients*4/offered seconds whether or "
                          "not the last one finished; a late start counts in the first op's latency"}
        what = f"soak paced at {phase.level:.0%} of saturation ({phase.offered_ops_per_s:.0f} ops/s offered)"
        records += [
            Record(name=f"{what}: all ops latency {label}, {who}", value=ps.p(q), unit="ms", baseline=base_lat,
                   baseline_value=base.p(q), extra=pextra)
            for label, q in (("p50", 50), ("p95", 95), ("p99", 99))
        ]
    for op in OPS:
        lat = stats.latencies[op]
        if not lat:
            logger.warning("no acknowledged %s: no record for it", op)
            continue
        for label, q in (("p95", 95), ("p99", 99)):
            records.append(Record(name=f"soak: {op} latency {label}, {who}", value=_ms(percentile(lat, q)),
                                  unit="ms", baseline=base_lat, baseline_value=base.p(q), extra=extra))
    return records


# ---------------------------------------------------------------- part 2: audio calls


def _keep(check: StreamCheck, samples: np.ndarray, rate: int) -> None:
    check.frames += 1
    if check.first_frame_at is None:
        check.first_frame_at = time.perf_counter()
    check.audio_rate = rate
    check.audio.append(samples)
    if len(check.audio) > AUDIO_KEEP_FRAMES:
        del check.audio[:-AUDIO_KEEP_FRAMES]


def _heard_hz(check: StreamCheck) -> float | None:
    if not check.audio:
        return None
    return round(dominant_frequency(np.concatenate(check.audio), check.audio_rate), 1)


@dataclass
class StreamResult:
    """One direction of one call (or pair): what the receiver heard from the sender."""

    sender: str
    receiver: str
    sent_hz: float
    heard_hz: float | None
    frames_per_s: float
    frames: int
    verified: bool
    first_audio_ms: float | None
    """From the start of the later join of the call (callrt) or of the offer (aiortc) to the first frame."""
    video_frames: int = 0
    sink_dropped: int = 0

    @property
    def rate_held(self) -> bool:
        return self.frames_per_s >= RATE_HELD_FRACTION * AUDIO_FRAMES_PER_S


@dataclass
class AudioRun:
    """A window of M calls (or M bare pairs): every stream, and this process's CPU over the window."""

    streams: list[StreamResult]
    cpu_s: float
    window_s: float
    participants: int
    coordinator_cpu_s: float | None = None
    join_ms: list[float] = field(default_factory=list)
    machine: dict[str, object] = field(default_factory=dict)

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu_s / self.window_s

    @property
    def cpu_per_participant(self) -> float:
        return self.cpu_percent / self.participants

    @property
    def mean_fps(self) -> float:
        return statistics.fmean(s.frames_per_s for s in self.streams) if self.streams else 0.0

    @property
    def cpu_per_participant_at_nominal(self) -> float:
        """CPU per participant scaled to the nominal 50 frames/s each way: the cost of one participant even
        when the process could not keep up (then the raw figure is capped by what the process got)."""
        return self.cpu_per_participant * AUDIO_FRAMES_PER_S / self.mean_fps if self.mean_fps > 0 else math.inf

    @property
    def rate_held(self) -> bool:
        return all(s.rate_held for s in self.streams)

    def calls_one_core_holds(self) -> float:
        """Two-party calls one process at 100 % of a core would carry at the nominal rate, at this cost."""
        return 100.0 / (2 * self.cpu_per_participant_at_nominal)

    @property
    def verified(self) -> int:
        return sum(s.verified for s in self.streams)

    @staticmethod
    def pooled(runs: Sequence[AudioRun]) -> AudioRun:
        return AudioRun(streams=[s for r in runs for s in r.streams], cpu_s=sum(r.cpu_s for r in runs),
                        window_s=sum(r.window_s for r in runs), participants=runs[0].participants,
                        machine={f"half_{i}": r.machine for i, r in enumerate(runs)})


def _verify(check: StreamCheck, sent_hz: float, frames: int) -> tuple[float | None, bool]:
    heard = _heard_hz(check)
    ok = frames > 0 and heard is not None and abs(heard - sent_hz) <= FREQ_TOLERANCE_HZ
    return heard, ok


async def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _measure_window(checks: Sequence[StreamCheck], seconds: float, label: str, every: float,
                          coordinator_cpu: Callable[[], float] | None = None,
                          ) -> tuple[list[int], float, float, float | None, dict[str, object]]:
    """Sleep through the window, reporting progress.

    (frames per check, process CPU s, wall s, coordinator CPU s, machine load)."""
    before = [c.frames for c in checks]
    ccpu0 = coordinator_cpu() if coordinator_cpu else None
    cpu0 = process_cpu()
    psutil.cpu_percent(None)
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        await asyncio.sleep(min(every, seconds - elapsed))
        elapsed = time.perf_counter() - t0
        got = [c.frames - b for c, b in zip(checks, before, strict=True)]
        flowing = sum(1 for g in got if g > 0)
        fps = min(got) / max(elapsed, 1e-9) if got else 0.0
        _status(f"[{label} {elapsed:5.1f}/{seconds:g}s] {flowing}/{len(checks)} streams receiving, "
                f"slowest {fps:.1f} frames/s, process CPU {100 * (process_cpu() - cpu0) / max(elapsed, 1e-9):.0f}%")
    cpu_s = process_cpu() - cpu0
    window = time.perf_counter() - t0
    ccpu = (coordinator_cpu() - ccpu0) if coordinator_cpu and ccpu0 is not None else None
    machine = machine_load(psutil.cpu_percent(None), window, cpu_s + (ccpu or 0.0))
    _end_status()
    return [c.frames - b for c, b in zip(checks, before, strict=True)], cpu_s, window, ccpu, machine


# ---- baseline: plain aiortc pairs


class SineTrack(AudioStreamTrack):
    """aiortc's ``AudioStreamTrack`` pacing, producing a 48 kHz mono s16 sine in 20 ms frames."""

    def __init__(self, frequency: float, level: float = TONE_LEVEL, sample_rate: int = 48_000) -> None:
        super().__init__()
        self.frequency = frequency
        self.amplitude = level * 32767.0
        self.rate = sample_rate
        self.samples = sample_rate // 50
        self._t0: float | None = None
        self._timestamp = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = time.time()
        else:
            self._timestamp += self.samples
            wait = self._t0 + self._timestamp / self.rate - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        n = np.arange(self._timestamp, self._timestamp + self.samples, dtype=np.float64)
        data = (self.amplitude * np.sin(2 * np.pi * self.frequency * n / self.rate)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format="s16", layout="mono")
        frame.pts = self._timestamp
        frame.sample_rate = self.rate
        frame.time_base = fractions.Fraction(1, self.rate)
        return frame


async def _consume_bare(track: MediaStreamTrack, check: StreamCheck) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if not isinstance(frame, av.AudioFrame):
            continue
        arr = frame.to_ndarray()
        channels = frame.layout.nb_channels
        samples = arr.T if frame.format.is_planar else arr.reshape(-1, channels)
        _keep(check, samples.copy(), frame.sample_rate)


async def run_bare_pairs(n: int, seconds: float, settle: float, every: float, label: str) -> AudioRun:
    """N plain aiortc audio pairs in this process: negotiate, wait for every stream, settle, measure, verify."""
    pcs: list[RTCPeerConnection] = []
    tracks: list[SineTrack] = []
    tasks: list[asyncio.Task[None]] = []
    # (sender name, receiver name, sent Hz, check, t_offer) per direction
    directions: list[tuple[str, str, float, StreamCheck, float]] = []
    try:
        for p in range(n):
            fa, fb = AUDIO_BASE_HZ + AUDIO_STEP_HZ * 2 * p, AUDIO_BASE_HZ + AUDIO_STEP_HZ * (2 * p + 1)
            a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pcs.append(a)
            b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pcs.append(b)
            ta, tb = SineTrack(fa), SineTrack(fb)
            tracks += [ta, tb]
            heard_by_a, heard_by_b = StreamCheck(), StreamCheck()

            def on_track(check: StreamCheck) -> Callable[[MediaStreamTrack], None]:
                def handler(track: MediaStreamTrack) -> None:
                    if track.kind == "audio":
                        tasks.append(asyncio.ensure_future(_consume_bare(track, check)))
                return handler

            a.on("track", on_track(heard_by_a))
            b.on("track", on_track(heard_by_b))
            t_offer = time.perf_counter()
            a.addTransceiver(ta, direction="sendrecv")
            await a.setLocalDescription(await a.createOffer())
            await b.setRemoteDescription(a.localDescription)
            for transceiver in b.getTransceivers():
                transceiver.sender.replaceTrack(tb)
                transceiver.direction = "sendrecv"
            await b.setLocalDescription(await b.createAnswer())
            await a.setRemoteDescription(b.localDescription)
            directions += [(f"pair{p}a", f"pair{p}b", fa, heard_by_b, t_offer),
                           (f"pair{p}b", f"pair{p}a", fb, heard_by_a, t_offer)]
        checks = [d[3] for d in directions]
        if not await _wait_until(lambda: all(c.first_frame_at is not None for c in checks), FIRST_AUDIO_TIMEOUT_S):
            logger.warning("%s: some aiortc stream delivered nothing within %.0fs", label, FIRST_AUDIO_TIMEOUT_S)
        await asyncio.sleep(settle)
        frames, cpu_s, window, _, machine = await _measure_window(checks, seconds, label, every)
        streams = []
        for (sender, receiver, hz, check, t_offer), got in zip(directions, frames, strict=True):
            heard, ok = _verify(check, hz, got)
            first = (check.first_frame_at - t_offer) * 1000 if check.first_frame_at is not None else None
            streams.append(StreamResult(sender=sender, receiver=receiver, sent_hz=hz, heard_hz=heard,
                                        frames_per_s=got / window, frames=got, verified=ok, first_audio_ms=first))
        return AudioRun(streams=streams, cpu_s=cpu_s, window_s=window, participants=2 * n, machine=machine)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for track in tracks:
            track.stop()
        for pc in pcs:
            try:
                await pc.close()
            except Exception:
                logger.exception("closing an aiortc peer connection failed")


# ---- callrt: two-party audio-only calls


class AudioParty:
    """One participant of an audio-only call: publishes its own tone, checks what it hears."""

    def __init__(self, client: Client, call_id: str, frequency: float) -> None:
        self.client = client
        self.user_id = client.user_id or "?"
        self.frequency = frequency
        self.call = client.call(AUDIO_CALL_TYPE, call_id)
        self.heard = StreamCheck()
        """The other party's audio, as received here."""
        self.video_frames = 0
        self.join_ms = 0.0
        self.t_join = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self.call.on("track.added", self._on_track)

    async def join(self, create: bool) -> None:
        await self.call.camera.disable()
        await self.call.microphone.select(Tone(self.frequency, level=TONE_LEVEL))
        await self.call.microphone.enable()
        self.t_join = time.perf_counter()
        await self.call.join(create=create)
        self.join_ms = (time.perf_counter() - self.t_join) * 1000

    def _on_track(self, track: RemoteTrack) -> None:
        consume = self._consume_audio if track.kind == "audio" else self._count_video
        self._tasks.append(asyncio.ensure_future(consume(track.sink)))

    async def _consume_audio(self, sink: Any) -> None:
        async for frame in sink:
            _keep(self.heard, frame.samples.copy(), frame.sample_rate)

    async def _count_video(self, sink: Any) -> None:
        async for _ in sink:
            self.video_frames += 1

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()


def _audio_sink_dropped(party: AudioParty) -> int:
    dropped = 0
    for remote in party.call.remote_participants.values():
        if remote.audio is not None:
            dropped += remote.audio.stats().dropped
    return dropped


async def run_callrt_calls(coord: SubprocessCoordinator, n: int, seconds: float, settle: float, every: float,
                           tag: str) -> AudioRun:
    """N two-party audio-only calls: join, wait for every stream, settle, measure, verify, leave."""
    issuer = TokenIssuer(coord.api_key, coord.api_secret)
    pairs: list[tuple[AudioParty, AudioParty]] = []
    try:
        for c in range(n):
            call_id = f"{tag}-audio-{c}"
            a = AudioParty(Client(coord.url, api_key=coord.api_key, token=issuer.create_user_token(f"{tag}-c{c}a")),
                           call_id, AUDIO_BASE_HZ + AUDIO_STEP_HZ * 2 * c)
            pairs.append((a, a))  # placeholder so that a is closed even if the next line fails
            b = AudioParty(Client(coord.url, api_key=coord.api_key, token=issuer.create_user_token(f"{tag}-c{c}b")),
                           call_id, AUDIO_BASE_HZ + AUDIO_STEP_HZ * (2 * c + 1))
            pairs[-1] = (a, b)

        async def join_pair(a: AudioParty, b: AudioParty) -> None:
            await a.join(create=True)
            await b.join(create=False)

        await asyncio.gather(*(join_pair(a, b) for a, b in pairs))
        parties = [p for pair in pairs for p in pair]
        if not await _wait_until(lambda: all(p.heard.first_frame_at is not None for p in parties),
                                 FIRST_AUDIO_TIMEOUT_S):
            logger.warning("some callrt stream delivered nothing within %.0fs", FIRST_AUDIO_TIMEOUT_S)
        await asyncio.sleep(settle)
        dropped0 = [_audio_sink_dropped(p) for p in parties]
        frames, cpu_s, window, ccpu, machine = await _measure_window(
            [p.heard for p in parties], seconds, "audio calls", every, coord.cpu_probe())
        streams = []
        for idx, (party, got) in enumerate(zip(parties, frames, strict=True)):
            a, b = pairs[idx // 2]
            sender = b if party is a else a
            heard, ok = _verify(party.heard, sender.frequency, got)
            first = ((party.heard.first_frame_at - max(a.t_join, b.t_join)) * 1000
                     if party.heard.first_frame_at is not None else None)
            ok = ok and party.video_frames == 0
            streams.append(StreamResult(sender=sender.user_id, receiver=party.user_id, sent_hz=sender.frequency,
                                        heard_hz=heard, frames_per_s=got / window, frames=got, verified=ok,
                                        first_audio_ms=first, video_frames=party.video_frames,
                                        sink_dropped=_audio_sink_dropped(party) - dropped0[idx]))
        return AudioRun(streams=streams, cpu_s=cpu_s, window_s=window, participants=2 * n, coordinator_cpu_s=ccpu,
                        join_ms=[p.join_ms for p in parties], machine=machine)
    finally:
        seen: set[int] = set()
        closing = []
        for pair in pairs:
            for p in pair:
                if id(p) not in seen:
                    seen.add(id(p))
                    closing.append(p.aclose())
        for r in await asyncio.gather(*closing, return_exceptions=True):
            if isinstance(r, BaseException):
                logger.warning("closing an audio party failed: %r", r)


@dataclass
class AudioResult:
    calls: int
    callrt: AudioRun
    baseline: AudioRun
    baseline_halves: list[AudioRun]


async def run_audio(plan: Plan, workdir: Path, progress: Progress) -> AudioResult:
    n, half = plan.audio_calls, plan.audio_seconds / 2
    every = plan.progress_every
    gc.collect()
    before = await run_bare_pairs(n, half, plan.audio_settle, every, "aiortc pairs (before)")
    progress.step(f"aiortc baseline (before): {before.verified}/{len(before.streams)} streams verified, "
                  f"CPU {before.cpu_percent:.0f}%")
    api_key, api_secret = "soak-" + secrets.token_hex(4), secrets.token_urlsafe(32)
    async with contextlib.AsyncExitStack() as stack:
        coord = SubprocessCoordinator(workdir, api_key, api_secret)
        stack.callback(coord.stop)
        await coord.start()
        gc.collect()
        await asyncio.sleep(0.2)  # let the closed peer connections wind down
        callrt = await run_callrt_calls(coord, n, plan.audio_seconds, plan.audio_settle, every,
                                        "a" + secrets.token_hex(3))
    progress.step(f"callrt audio calls: {callrt.verified}/{len(callrt.streams)} streams verified, "
                  f"CPU {callrt.cpu_percent:.0f}% ({callrt.cpu_per_participant:.1f}%/participant)")
    gc.collect()
    await asyncio.sleep(0.2)
    after = await run_bare_pairs(n, half, plan.audio_settle, every, "aiortc pairs (after)")
    progress.step(f"aiortc baseline (after): {after.verified}/{len(after.streams)} streams verified, "
                  f"CPU {after.cpu_percent:.0f}%")
    return AudioResult(calls=n, callrt=callrt, baseline=AudioRun.pooled([before, after]),
                       baseline_halves=[before, after])


def _stream_dict(s: StreamResult) -> dict[str, object]:
    d = asdict(s)
    d["frames_per_s"] = round(s.frames_per_s, 2)
    d["first_audio_ms"] = round(s.first_audio_ms, 1) if s.first_audio_ms is not None else None
    d["rate_held"] = s.rate_held
    return d


def audio_records(result: AudioResult, plan: Plan) -> list[Record]:
    cr, base, n = result.callrt, result.baseline, result.calls
    per_call = []
    for c in range(n):
        ab, ba = cr.streams[2 * c + 1], cr.streams[2 * c]  # b hears a, a hears b
        per_call.append({"call": c, "verified": ab.verified and ba.verified,
                         "a_to_b": _stream_dict(ab), "b_to_a": _stream_dict(ba)})
    fps, bfps = [s.frames_per_s for s in cr.streams], [s.frames_per_s for s in base.streams]
    firsts = [s.first_audio_ms for s in cr.streams if s.first_audio_ms is not None]
    bfirsts = [s.first_audio_ms for s in base.streams if s.first_audio_ms is not None]
    extra: dict[str, object] = {
        "calls": n, "participants": 2 * n, "window_s": round(cr.window_s, 2), "quick": plan.quick,
        "baseline_window_s": round(base.window_s, 2), "settle_s": plan.audio_settle,
        "calls_verified": sum(1 for c in per_call if c["verified"]), "per_call": per_call,
        "process_cpu_percent": round(cr.cpu_percent, 1), "baseline_process_cpu_percent": round(base.cpu_percent, 1),
        "baseline_halves_cpu_percent": [round(h.cpu_percent, 1) for h in result.baseline_halves],
        "coordinator_cpu_percent": (round(100 * cr.coordinator_cpu_s / cr.window_s, 2)
                                    if cr.coordinator_cpu_s is not None else None),
        "streams_rate_held": sum(s.rate_held for s in cr.streams), "rate_held": cr.rate_held,
        "baseline_rate_held": base.rate_held,
        "calls_one_core_holds_at_50fps": round(cr.calls_one_core_holds(), 1),
        "baseline_pairs_one_core_holds_at_50fps": round(base.calls_one_core_holds(), 1),
        "baseline_streams_rate_held": sum(s.rate_held for s in base.streams),
        "join_ms_p50": _p(cr.join_ms, 50), "join_ms_p95": _p(cr.join_ms, 95),
        "first_audio_ms_p50": _p(firsts, 50), "baseline_first_audio_ms_p50": _p(bfirsts, 50),
        "baseline_streams": [_stream_dict(s) for s in base.streams],
        "machine_during_calls": cr.machine, "machine_during_baseline": base.machine,
        "cpu_note": "value = this process's CPU over the window / participants (the coordinator is a separate "
                    "process, measured apart); baseline = the same for plain aiortc pairs, half of its window "
                    "before the calls and half after",
    }
    who = f"{n} two-party audio calls"
    base_who = f"{n} plain aiortc audio pairs (AudioStreamTrack sine)"
    records = [
        Record(name=f"audio: CPU per participant, {who}", value=cr.cpu_per_participant, unit="%cpu",
               baseline=f"{base_who}, process CPU / participants", baseline_value=base.cpu_per_participant,
               extra=extra),
        Record(name=f"audio: CPU per participant at 50 frames/s (scaled by received rate), {who}",
               value=cr.cpu_per_participant_at_nominal, unit="%cpu",
               baseline=f"{base_who}, scaled the same way", baseline_value=base.cpu_per_participant_at_nominal,
               extra=extra),
        Record(name=f"audio: received frames/s per stream, mean, {who}", value=statistics.fmean(fps), unit="fps",
               baseline=f"{base_who}, mean", baseline_value=statistics.fmean(bfps), extra=extra),
        Record(name=f"audio: received frames/s per stream, min, {who}", value=min(fps), unit="fps",
               baseline=f"{base_who}, min", baseline_value=min(bfps), extra=extra),
        Record(name=f"audio: streams verified by FFT, {who}", value=100.0 * cr.verified / len(cr.streams),
               unit="%", baseline=f"{base_who}, streams verified the same way",
               baseline_value=100.0 * base.verified / len(base.streams), extra=extra),
    ]
    return records


def _p(values: Sequence[float], q: float) -> float | None:
    return round(percentile(values, q), 1) if values else None


# ---------------------------------------------------------------- output


def checks_markdown(checks: list[Check], counts: dict[str, int], soak: SoakResult) -> str:
    stats, baseline_errors, db_path = soak.stats, soak.baseline_errors, soak.db_path
    lines = ["", f"#### Store checks ({db_path.name}, opened read-only after the run)", ""]
    lines += [f"- {'PASS' if c.ok else 'FAIL'}: {c.name} ({c.detail})" for c in checks]
    lines.append("")
    lines.append("Counts: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()))
    lines.append("")
    if stats.errors:
        lines.append(f"Errors: {stats.error_total} of {stats.ops + stats.error_total} operations: "
                     + ", ".join(f"{k} x{v}" for k, v in sorted(stats.errors.items())))
    else:
        lines.append(f"Errors: none in {stats.ops} operations ({stats.iterations} iterations).")
    for phase in soak.paced:
        ps = phase.stats
        errs = ", ".join(f"{k} x{v}" for k, v in sorted(ps.errors.items())) or "none"
        lines.append(f"Paced at {phase.level:.0%} ({phase.offered_ops_per_s:.0f} ops/s offered, "
                     f"{phase.sample.ops_per_s:.0f} achieved): errors {errs} in {ps.ops} operations.")
    if baseline_errors:
        lines.append("Baseline errors: " + ", ".join(f"{k} x{v}" for k, v in sorted(baseline_errors.items())))
    for key, message in [*stats.error_samples.items(), *soak.baseline_error_samples.items()]:
        lines.append(f"- first {key}: {message}")
    return "\n".join(lines) + "\n"


def audio_markdown(result: AudioResult) -> str:
    rows = []
    cr = result.callrt
    for c in range(result.calls):
        ba, ab = cr.streams[2 * c], cr.streams[2 * c + 1]
        rows.append([c, f"{ab.sent_hz:g}", "-" if ab.heard_hz is None else f"{ab.heard_hz:g}",
                     f"{ab.frames_per_s:.1f}", f"{ba.sent_hz:g}", "-" if ba.heard_hz is None else f"{ba.heard_hz:g}",
                     f"{ba.frames_per_s:.1f}", "yes" if ab.verified and ba.verified else "NO"])
    head = ["call", "A sends Hz", "B hears Hz", "B frames/s", "B sends Hz", "A hears Hz", "A frames/s", "verified"]
    ok = sum(1 for r in rows if r[-1] == "yes")
    base = result.baseline
    return ("\n#### Audio calls: per-call verification (FFT of the last 2 s, tolerance "
            f"{FREQ_TOLERANCE_HZ:g} Hz)\n\n```\n{table(rows, head)}\n```\n\n"
            f"{ok}/{result.calls} calls verified; aiortc baseline: {base.verified}/{len(base.streams)} streams "
            f"verified.\n" + _rate_note(cr, base))


def _rate_note(cr: AudioRun, base: AudioRun) -> str:
    if cr.rate_held and base.rate_held:
        return ""
    held = sum(s.rate_held for s in cr.streams)
    bheld = sum(s.rate_held for s in base.streams)
    return (f"\nReceive rate NOT held: {held}/{len(cr.streams)} callrt streams and {bheld}/{len(base.streams)} "
            f"aiortc streams reached {RATE_HELD_FRACTION:.0%} of {AUDIO_FRAMES_PER_S:g} frames/s (callrt mean "
            f"{cr.mean_fps:.1f}, aiortc mean {base.mean_fps:.1f}); this process used {cr.cpu_percent:.0f}% of a core "
            f"(aiortc pairs: {base.cpu_percent:.0f}%), so the raw CPU per participant is capped by what the process "
            f"got; the scaled figure is the cost at the nominal rate. At that cost one core carries about "
            f"{cr.calls_one_core_holds():.1f} callrt calls ({base.calls_one_core_holds():.1f} aiortc pairs).\n")


def write_payload(path: str, records: Sequence[Record], sections: dict[str, object]) -> None:
    payload = {"machine": machine_description(), "records": [asdict(r) for r in records], **sections}
    Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- the run


@dataclass
class Outcome:
    records: list[Record] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    sections: dict[str, object] = field(default_factory=dict)


async def run_benchmark(plan: Plan) -> Outcome:
    out = Outcome()
    steps = (5 + len(plan.paced_levels) if plan.rest else 0) + (3 if plan.audio else 0)
    progress = Progress(steps, "soak")
    with tempfile.TemporaryDirectory(prefix="callrt-soak-") as tmp:
        if plan.rest:
            rest_dir = Path(tmp) / "rest"
            rest_dir.mkdir()
            soak = await run_soak(plan, rest_dir, progress)
            checks, counts = audit_store(soak.db_path, soak.ledger)
            out.records += soak_records(soak, checks, counts)
            out.text.append(checks_markdown(checks, counts, soak))
            out.failures += [f"store check failed: {c.name} ({c.detail})" for c in checks if not c.ok]
            out.sections["store_checks"] = [asdict(c) for c in checks]
            out.sections["store_counts"] = counts
            out.sections["errors"] = dict(soak.stats.errors)
            for phase in soak.paced:
                for k, v in phase.stats.errors.items():
                    out.sections["errors"][f"paced {phase.level:.0%} {k}"] = v  # type: ignore[index]
        if plan.audio:
            audio_dir = Path(tmp) / "audio"
            audio_dir.mkdir()
            audio = await run_audio(plan, audio_dir, progress)
            out.records += audio_records(audio, plan)
            out.text.append(audio_markdown(audio))
            bad = [f"{s.sender}->{s.receiver}" for s in audio.callrt.streams if not s.verified]
            if bad:
                out.failures.append(f"audio not verified on {len(bad)} stream(s): {', '.join(bad[:8])}")
            bad_base = [f"{s.sender}->{s.receiver}" for s in audio.baseline.streams if not s.verified]
            if bad_base:
                out.failures.append(f"aiortc baseline not verified on {len(bad_base)} stream(s): "
                                    f"{', '.join(bad_base[:8])}")
            out.sections["audio_calls_verified"] = sum(
                1 for c in range(audio.calls)
                if audio.callrt.streams[2 * c].verified and audio.callrt.streams[2 * c + 1].verified)
    return out


def _positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def parse(spec: str) -> Any:
        value = kind(spec)
        if not value > 0:
            raise argparse.ArgumentTypeError("must be > 0")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="20 clients x 3 s and 2 audio calls x 3 s (a smoke run); other flags still apply")
    p.add_argument("--clients", type=_positive(int), default=None, help="concurrent clients (default 200)")
    p.add_argument("--seconds", type=_positive(float), default=None, help="soak duration (default 30)")
    p.add_argument("--audio-calls", type=_positive(int), default=None, help="two-party audio calls (default 20)")
    p.add_argument("--audio-seconds", type=_positive(float), default=None,
                   help="audio measuring window (default 60); the aiortc baseline gets the same, split around it")
    p.add_argument("--skip-rest", action="store_true", help="skip part 1 (REST soak and store checks)")
    p.add_argument("--skip-audio", action="store_true", help="skip part 2 (audio calls)")
    p.add_argument("--json", metavar="PATH", help="write the records (and store checks) as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the markdown output to this file too")
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.skip_rest and args.skip_audio:
        print("benchmarks.soak: nothing to do (--skip-rest and --skip-audio)", file=sys.stderr)
        return 2
    configure_logging(args.verbose)
    plan = make_plan(args)
    t0 = time.perf_counter()
    try:
        outcome = asyncio.run(run_benchmark(plan))
    except BenchmarkError as exc:
        print(f"benchmarks.soak: {exc}", file=sys.stderr)
        return 1
    parts = []
    if plan.rest:
        parts.append(f"{plan.clients} clients x {plan.seconds:g} s")
    if plan.audio:
        parts.append(f"{plan.audio_calls} audio calls x {plan.audio_seconds:g} s")
    title = (f"Soak: {', '.join(parts)} (coordinator in a separate process"
             f"{', --quick' if plan.quick else ''}; machine shared with other work: figures are pessimistic)")
    text = markdown_table(outcome.records, title=title) + "".join(outcome.text)
    print(text)
    if args.json:
        write_payload(args.json, outcome.records, {**outcome.sections, "failures": outcome.failures})
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    for failure in outcome.failures:
        print(f"benchmarks.soak: FAILED: {failure}", file=sys.stderr)
    print(f"benchmarks.soak: done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
