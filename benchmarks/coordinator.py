"""Coordinator benchmark: ``get_or_create`` and ``join`` latency and throughput, and event fan-out.

``python -m benchmarks.coordinator [--quick] [--embedded] [--clients N] [--watchers N]
[--json PATH] [--markdown PATH]``

What is measured, each next to a baseline taken in the same run (interleaved with it, round
by round, so that load from elsewhere on the machine hits both alike):

* ``get_or_create`` latency p50/p95 and ops/s on distinct call ids, from 1 client issuing
  requests one after another and from N concurrent clients (each its own ``Client`` with its
  own event socket; closed loop: each client sends its next request when the previous one
  answered). Baseline: ``GET /healthz`` through the very same clients, the same way: the
  floor of FastAPI + uvicorn + httpx on this machine.
* ``join`` latency p50/p95 and ops/s, signaling-only (``media_factory=None``,
  ``auto_subscribe=False``), each join on a call of its own created beforehand; creation and
  the ``leave`` afterwards are outside the timed part. Same baseline.
* ``call.updated`` fan-out to W watchers: W clients ``get()`` one call, its creator calls
  ``update(custom={"seq": k})``; per watcher the delay from just before the update request
  to the watcher's ``call.on("call.updated")`` handler; p50/p95/max over all watchers of all
  updates. Baseline: a bare ``websockets`` server (in a process of its own, like the
  coordinator) that broadcasts a message of the same size, sent to it by a trigger socket, to
  W raw sockets read with ``json.loads``: the floor of a Python WebSocket fan-out.

By default the coordinator runs as a separate process (``callrt serve``, i.e.
``python -m signaling.cli serve``) so that the benchmark's clients do not share its GIL;
``--embedded`` runs it in a thread of this process instead (``EmbeddedCoordinator``), as
the tests do. Either way it uses a fresh SQLite file in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection, broadcast, serve

from benchmarks._report import Progress, Record, configure_logging, percentile, publish
from signaling.call import Call
from signaling.client import Client
from signaling.models import Event
from signaling.server.config import ServerConfig
from signaling.server.embedded import EmbeddedCoordinator
from signaling.tokens import TokenIssuer

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
CALL_TYPE = "default"
REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 30.0
EVENT_TIMEOUT_S = 10.0
"""How long one update may take to reach every watcher before the missing ones are counted."""

Op = Callable[[], Awaitable[object]]
CpuProbe = Callable[[], float]


class BenchmarkError(RuntimeError):
    """The benchmark could not run (coordinator did not start, events never arrived, ...)."""


# ---------------------------------------------------------------- plan


@dataclass(frozen=True)
class Plan:
    """How much of everything one run does."""

    clients: int
    """Concurrent clients of the ``N clients`` figures."""
    watchers: int
    """Watchers of the fan-out figures."""
    rounds: int
    """Baseline and measurement alternate this many times; samples are pooled."""
    seq_ops: int
    """Operations per round of the 1-client figures."""
    per_client_ops: int
    """Operations per client per round of the N-client figures."""
    updates: int
    """``update`` calls (and floor broadcasts) of the fan-out figures."""
    warmup: int
    """Untimed operations per client before timing starts."""
    quick: bool = False


def make_plan(quick: bool, clients: int | None, watchers: int | None) -> Plan:
    if quick:
        return Plan(clients=clients or 8, watchers=watchers or 16, rounds=1, seq_ops=15, per_client_ops=2,
                    updates=3, warmup=2, quick=True)
    return Plan(clients=clients or 50, watchers=watchers or 100, rounds=3, seq_ops=100, per_client_ops=4,
                updates=20, warmup=5)


# ---------------------------------------------------------------- statistics


@dataclass
class Sample:
    """Latencies (seconds) of a closed-loop run, its wall time and the server's CPU time meanwhile."""

    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    server_cpu_s: float | None = None
    """CPU time of the coordinator (its process, or its thread when embedded) during the run."""
    process_cpu_s: float = 0.0
    """CPU time of this process (the clients; plus the coordinator when embedded) during the run."""

    def add(self, other: Sample) -> None:
        self.latencies.extend(other.latencies)
        self.wall_s += other.wall_s
        self.process_cpu_s += other.process_cpu_s
        if other.server_cpu_s is not None:
            self.server_cpu_s = (self.server_cpu_s or 0.0) + other.server_cpu_s

    @property
    def ops(self) -> int:
        return len(self.latencies)

    def p(self, q: float) -> float:
        """Percentile in milliseconds."""
        return percentile(self.latencies, q) * 1000.0

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.wall_s

    def details(self) -> dict[str, object]:
        out: dict[str, object] = {"ops": self.ops, "wall_s": round(self.wall_s, 3),
                                  "p50_ms": round(self.p(50), 3), "p95_ms": round(self.p(95), 3),
                                  "max_ms": round(self.p(100), 3), "ops_per_s": round(self.ops_per_s, 1)}
        if self.server_cpu_s is not None:
            out["server_cpu_ms_per_op"] = round(self.server_cpu_s * 1000.0 / self.ops, 3)
            out["server_cpu_util"] = round(self.server_cpu_s / self.wall_s, 3)
        if self.process_cpu_s:
            out["bench_process_cpu_util"] = round(self.process_cpu_s / self.wall_s, 3)
        return out


def process_cpu() -> float:
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


async def run_closed_loop(sequences: Sequence[Sequence[Op]], cpu: CpuProbe | None = None) -> Sample:
    """Run each sequence of operations in order on a task of its own, all tasks at once; time every op."""
    sample = Sample()

    async def worker(ops: Sequence[Op]) -> None:
        for op in ops:
            t0 = time.perf_counter()
            await op()
            sample.latencies.append(time.perf_counter() - t0)

    cpu0 = cpu() if cpu else None
    own0 = process_cpu()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(ops) for ops in sequences))
    sample.wall_s = time.perf_counter() - t0
    sample.process_cpu_s = process_cpu() - own0
    if cpu is not None and cpu0 is not None:
        sample.server_cpu_s = cpu() - cpu0
    return sample


# ---------------------------------------------------------------- the coordinator under test


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-n:]
    except OSError:
        return ""


def spawn(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a helper process from the repository root, its output appended to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)


def _stop_process(proc: subprocess.Popen[bytes] | None, what: str) -> None:
    """Terminate (then kill) one process we started, by its PID."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        logger.warning("%s (pid %d) ignored SIGTERM; killing it", what, proc.pid)
        proc.kill()
        proc.wait(timeout=5)


class SubprocessCoordinator:
    """``callrt serve`` in a process of its own, on a free loopback port, with a fresh SQLite file."""

    mode = "separate process"

    def __init__(self, workdir: Path, api_key: str, api_secret: str, *, unlimited: bool = False) -> None:
        self.workdir = workdir
        self.api_key = api_key
        self.api_secret = api_secret
        self.extra_args = ["--rate-limit", "0"] if unlimited else []
        """``unlimited``: no per-user rate limit (a benchmark user may out-run the default 20 joins/s)."""
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = workdir / "coordinator.log"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def start(self) -> None:
        env = {**os.environ, "CALLRT_API_KEY": self.api_key, "CALLRT_API_SECRET": self.api_secret,
               "PYTHONUNBUFFERED": "1"}
        env.pop("CALLRT_URL", None)
        for attempt in range(3):  # the free port can be taken between picking and binding it
            self.port = free_port()
            cmd = [sys.executable, "-m", "signaling.cli", "serve", "--host", HOST, "--port", str(self.port),
                   "--db", str(self.workdir / f"coordinator-{attempt}.db"), "--log-level", "warning"]
            cmd += self.extra_args
            self.proc = spawn(cmd, self._log, env)
            logger.info("started coordinator pid %d: %s", self.proc.pid, " ".join(cmd))
            if await self._wait_healthy():
                printed = _tail(self._log, 400).strip().splitlines()
                logger.info("coordinator says: %s", printed[-1] if printed else "(nothing)")
                return
            _stop_process(self.proc, "coordinator")
        raise BenchmarkError(f"the coordinator did not start; its output:\n{_tail(self._log)}")

    async def _wait_healthy(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    logger.warning("coordinator exited with %s during start-up", self.proc.returncode)
                    return False
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/healthz")).status_code == 200:
                        return True
                await asyncio.sleep(0.05)
        logger.warning("coordinator did not answer /healthz within %.0fs", START_TIMEOUT_S)
        return False

    def cpu_probe(self) -> CpuProbe | None:
        if self.proc is None:
            return None
        proc = psutil.Process(self.proc.pid)

        def read() -> float:
            t = proc.cpu_times()
            return float(t.user + t.system)

        return read

    def stop(self) -> None:
        _stop_process(self.proc, "coordinator")
        self.proc = None


class ThreadCoordinator:
    """``EmbeddedCoordinator``: the coordinator in a thread of this process (shares the GIL with the clients)."""

    mode = "embedded thread"

    def __init__(self, workdir: Path, api_key: str, api_secret: str, *, unlimited: bool = False) -> None:
        self.api_key = api_key
        self._coord = EmbeddedCoordinator(ServerConfig(api_key=api_key, api_secret=api_secret,
                                                       db_path=str(workdir / "coordinator.db"),
                                                       rate_limit_per_s=0.0 if unlimited else 20.0), host=HOST)
        self._native_id: int | None = None
        self._started = False

    @property
    def url(self) -> str:
        return self._coord.url

    async def start(self) -> None:
        before = {t.native_id for t in threading.enumerate()}
        await asyncio.to_thread(self._coord.start)
        self._started = True
        new = [t.native_id for t in threading.enumerate()
               if t.name == "callrt-coordinator" and t.native_id not in before]
        self._native_id = new[0] if new else None

    def cpu_probe(self) -> CpuProbe | None:
        """CPU time of the coordinator's thread (it still competes with the clients for the GIL)."""
        native_id = self._native_id
        if native_id is None:
            return None
        me = psutil.Process()

        def read() -> float:
            for t in me.threads():
                if t.id == native_id:
                    return float(t.user_time + t.system_time)
            return 0.0

        return read

    def stop(self) -> None:
        if self._started:
            self._coord.stop()
            self._started = False


Coordinator = SubprocessCoordinator | ThreadCoordinator


# ---------------------------------------------------------------- the fan-out floor: a bare websockets broadcaster


async def serve_broadcast_floor(host: str, port: int, stop: asyncio.Event | None = None,
                                ready: threading.Event | None = None) -> None:
    """Every text message a socket sends is broadcast, unchanged, to every other connected socket."""
    conns: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        conns.add(ws)
        try:
            async for message in ws:
                broadcast([c for c in conns if c is not ws], message)
        finally:
            conns.discard(ws)

    async with serve(handler, host, port, ping_interval=None, max_size=2**20):
        if ready is not None:
            ready.set()
        await (stop.wait() if stop is not None else asyncio.Future())


class SubprocessFloor:
    """The broadcaster in a process of its own (``python -m benchmarks.coordinator --broadcast-floor-server``)."""

    def __init__(self, workdir: Path) -> None:
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = workdir / "floor.log"

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/"

    async def start(self) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "benchmarks.coordinator", "--broadcast-floor-server", str(self.port)]
        self.proc = spawn(cmd, self._log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                _, writer = await asyncio.open_connection(HOST, self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        raise BenchmarkError(f"the broadcast floor server did not start; its output:\n{_tail(self._log)}")

    def stop(self) -> None:
        _stop_process(self.proc, "broadcast floor server")
        self.proc = None


class ThreadFloor:
    """The broadcaster in a thread with its own event loop (the ``--embedded`` counterpart)."""

    def __init__(self) -> None:
        self.port = free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/"

    async def start(self) -> None:
        ready = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await serve_broadcast_floor(HOST, self.port, self._stop, ready)

        def run() -> None:
            try:
                asyncio.run(main())
            except Exception:
                logger.exception("the broadcast floor thread failed")
                ready.set()

        self._thread = threading.Thread(target=run, name="bench-broadcast-floor", daemon=True)
        self._thread.start()
        await asyncio.to_thread(ready.wait, START_TIMEOUT_S)
        if self._stop is None or not self._thread.is_alive():
            raise BenchmarkError("the broadcast floor thread did not start")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(5)
        self._thread = None


# ---------------------------------------------------------------- clients


class ClientPool:
    """Every client the run opens, so that all of them are closed whatever happens."""

    def __init__(self, url: str, api_key: str, issuer: TokenIssuer) -> None:
        self.url = url
        self.api_key = api_key
        self.issuer = issuer
        self.opened: list[Client] = []
        self.raw_sockets: list[ClientConnection] = []
        self._connect_limit = asyncio.Semaphore(16)

    async def user(self, user_id: str) -> Client:
        client = Client(self.url, api_key=self.api_key, token=self.issuer.create_user_token(user_id))
        client.media_factory = None  # joins are signaling-only
        self.opened.append(client)
        async with self._connect_limit:
            await client.connect()
        return client

    async def users(self, user_ids: Sequence[str]) -> list[Client]:
        return list(await asyncio.gather(*(self.user(u) for u in user_ids)))

    async def raw(self, url: str) -> ClientConnection:
        async with self._connect_limit:
            ws = await websockets.connect(url, ping_interval=None, max_size=2**20)
        self.raw_sockets.append(ws)
        return ws

    async def aclose(self) -> None:
        results = await asyncio.gather(*(c.aclose() for c in self.opened),
                                       *(ws.close() for ws in self.raw_sockets), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                logger.warning("closing a client failed: %r", r)
        self.opened.clear()
        self.raw_sockets.clear()


def healthz(client: Client) -> Op:
    """The baseline round trip: the trivial route, through the same client (same httpx pool, headers, JSON)."""
    return functools.partial(client._request, "GET", "/healthz")


def get_or_create(client: Client, call_id: str) -> Op:
    return lambda: client.call(CALL_TYPE, call_id).get_or_create()


async def warm_up(clients: Sequence[Client], n: int, tag: str) -> None:
    """Open each client's HTTP connection and warm both code paths, untimed."""
    async def one(i: int, c: Client) -> None:
        for j in range(n):
            await healthz(c)()
            await get_or_create(c, f"{tag}-warm-{i}-{j}")()

    await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))


# ---------------------------------------------------------------- REST measurements


async def measure_get_or_create(clients: Sequence[Client], plan: Plan, per_client: int, tag: str,
                                cpu: CpuProbe | None) -> tuple[Sample, Sample]:
    """(get_or_create, /healthz baseline), interleaved round by round."""
    measured, baseline = Sample(), Sample()
    for r in range(plan.rounds):
        baseline.add(await run_closed_loop([[healthz(c)] * per_client for c in clients], cpu))
        measured.add(await run_closed_loop(
            [[get_or_create(c, f"{tag}-r{r}-c{i}-{j}") for j in range(per_client)] for i, c in enumerate(clients)],
            cpu))
    return measured, baseline


async def measure_join(clients: Sequence[Client], plan: Plan, per_client: int, tag: str,
                       cpu: CpuProbe | None) -> tuple[Sample, Sample]:
    """(join, /healthz baseline). Each join is on a call of its own, created before and left after, untimed."""
    measured, baseline = Sample(), Sample()
    for r in range(plan.rounds):
        calls = [[c.call(CALL_TYPE, f"{tag}-r{r}-c{i}-{j}") for j in range(per_client)]
                 for i, c in enumerate(clients)]

        async def create_all(row: list[Call]) -> None:
            for call in row:
                await call.get_or_create()

        await asyncio.gather(*(create_all(row) for row in calls))
        baseline.add(await run_closed_loop([[healthz(c)] * per_client for c in clients], cpu))
        measured.add(await run_closed_loop(
            [[functools.partial(call.join, auto_subscribe=False) for call in row] for row in calls], cpu))

        async def leave_all(row: list[Call]) -> None:
            for call in row:
                await call.leave()

        await asyncio.gather(*(leave_all(row) for row in calls))
    return measured, baseline


# ---------------------------------------------------------------- fan-out measurement


class Arrivals:
    """When each recipient saw message ``seq``."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.times: dict[int, list[float]] = {}
        self._complete: dict[int, asyncio.Event] = {}

    def expect(self, seq: int) -> asyncio.Event:
        self.times[seq] = []
        self._complete[seq] = asyncio.Event()
        return self._complete[seq]

    def record(self, seq: Any, now: float) -> None:
        got = self.times.get(seq) if isinstance(seq, int) else None
        if got is None:
            return
        got.append(now)
        if len(got) >= self.expected:
            self._complete[seq].set()


@dataclass
class FanoutResult:
    coordinator: Sample
    floor: Sample
    missing: int
    """Watcher deliveries that never came within ``EVENT_TIMEOUT_S``."""
    floor_missing: int
    update_rtt: list[float]
    """Round trip of each ``update`` request (seconds)."""
    last_watcher: list[float]
    """Per update, the delay to the last watcher (seconds)."""
    event_bytes: int
    client_validate_ms: float
    """What the client SDK spends validating one such event (``Event.model_validate``), in this process."""


async def _deliver_once(arrivals: Arrivals, seq: int, send: Op) -> tuple[list[float], float, int, float]:
    """Send one message, wait for every recipient; (delays, send round trip, missing, delay to the last)."""
    complete = arrivals.expect(seq)
    t0 = time.perf_counter()
    await send()
    rtt = time.perf_counter() - t0
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(complete.wait(), EVENT_TIMEOUT_S)
    delays = [t - t0 for t in arrivals.times[seq]]
    missing = arrivals.expected - len(delays)
    if missing:
        logger.warning("message %d reached %d of %d recipients within %.0fs", seq, len(delays), arrivals.expected,
                       EVENT_TIMEOUT_S)
    return delays, rtt, missing, max(delays, default=0.0)


async def measure_fanout(pool: ClientPool, floor_url: str, plan: Plan, tag: str,
                         cpu: CpuProbe | None) -> FanoutResult:
    n = plan.watchers
    owner = await pool.user(f"{tag}-owner")
    owner_call = owner.call(CALL_TYPE, f"{tag}-fanout")
    await owner_call.get_or_create()

    watchers = await pool.users([f"{tag}-w{i}" for i in range(n)])
    arrivals = Arrivals(n)
    captured: list[dict[str, Any]] = []

    def on_updated(event: Event) -> None:
        now = time.perf_counter()
        custom = event.call.custom if event.call is not None else {}
        arrivals.record(custom.get("seq"), now)
        if not captured:
            captured.append(event.model_dump(mode="json"))

    watcher_calls: list[Call] = []  # strong references: the client only tracks calls weakly
    for client in watchers:
        call = client.call(CALL_TYPE, owner_call.id)
        call.on("call.updated", on_updated)
        watcher_calls.append(call)
    await asyncio.gather(*(call.get() for call in watcher_calls))

    floor_arrivals = Arrivals(n)

    async def read_floor(ws: ClientConnection) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                now = time.perf_counter()
                floor_arrivals.record(json.loads(raw).get("seq"), now)

    floor_sockets = [await pool.raw(floor_url) for _ in range(n)]
    trigger = await pool.raw(floor_url)
    readers = [asyncio.create_task(read_floor(ws)) for ws in floor_sockets]
    try:
        # warm-up update: also tells the size of the event each watcher receives
        _, _, missing0, _ = await _deliver_once(arrivals, 0, lambda: owner_call.update(custom={"seq": 0}))
        if missing0 == n or not captured:
            raise BenchmarkError("no watcher received call.updated: fan-out is broken")
        event_bytes = len(json.dumps(captured[0], separators=(",", ":")))
        t0 = time.perf_counter()
        for _ in range(100):
            Event.model_validate(captured[0])
        validate_ms = (time.perf_counter() - t0) * 1000.0 / 100

        def floor_send(seq: int) -> Op:
            head = json.dumps({"seq": seq, "pad": ""})
            message = json.dumps({"seq": seq, "pad": "x" * max(0, event_bytes - len(head))})
            return functools.partial(trigger.send, message)

        await _deliver_once(floor_arrivals, 0, floor_send(0))

        coord, floor = Sample(), Sample()
        missing = floor_missing = 0
        rtts: list[float] = []
        last: list[float] = []
        cpu_total = 0.0
        for seq in range(1, plan.updates + 1):
            t0 = time.perf_counter()
            delays, _, miss, _ = await _deliver_once(floor_arrivals, seq, floor_send(seq))
            floor.latencies.extend(delays)
            floor.wall_s += time.perf_counter() - t0
            floor_missing += miss
            await asyncio.sleep(0.02)

            cpu0 = cpu() if cpu else 0.0
            t0 = time.perf_counter()
            delays, rtt, miss, slowest = await _deliver_once(
                arrivals, seq, functools.partial(owner_call.update, custom={"seq": seq}))
            coord.wall_s += time.perf_counter() - t0
            cpu_total += (cpu() - cpu0) if cpu else 0.0
            coord.latencies.extend(delays)
            missing += miss
            rtts.append(rtt)
            last.append(slowest)
            await asyncio.sleep(0.02)
        if cpu is not None:
            coord.server_cpu_s = cpu_total
        if not coord.latencies or not floor.latencies:
            raise BenchmarkError("no fan-out delivery was observed")
        return FanoutResult(coordinator=coord, floor=floor, missing=missing, floor_missing=floor_missing,
                            update_rtt=rtts, last_watcher=last, event_bytes=event_bytes,
                            client_validate_ms=validate_ms)
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


# ---------------------------------------------------------------- records


def rest_records(op: str, who: str, measured: Sample, baseline: Sample, common: dict[str, object]) -> list[Record]:
    extra = {**common, "measured": measured.details(), "baseline": baseline.details()}
    base = "GET /healthz round trip, same clients"
    return [
        Record(name=f"{op} latency p50, {who}", value=measured.p(50), unit="ms", baseline=base,
               baseline_value=baseline.p(50), extra=extra),
        Record(name=f"{op} latency p95, {who}", value=measured.p(95), unit="ms", baseline=base,
               baseline_value=baseline.p(95), extra=extra),
        Record(name=f"{op} throughput, {who}", value=measured.ops_per_s, unit="ops/s",
               baseline="GET /healthz throughput, same clients", baseline_value=baseline.ops_per_s, extra=extra),
    ]


def fanout_records(result: FanoutResult, plan: Plan, floor_where: str, common: dict[str, object]) -> list[Record]:
    n = plan.watchers
    extra: dict[str, object] = {
        **common, "watchers": n, "updates": plan.updates, "event_bytes": result.event_bytes,
        "missing_deliveries": result.missing, "floor_missing_deliveries": result.floor_missing,
        "update_rtt_p50_ms": round(percentile(result.update_rtt, 50) * 1000, 3),
        "update_rtt_p95_ms": round(percentile(result.update_rtt, 95) * 1000, 3),
        "last_watcher_p50_ms": round(percentile(result.last_watcher, 50) * 1000, 3),
        "client_validate_ms_per_event": round(result.client_validate_ms, 4),
        "note": "ops in measured/baseline count deliveries (watchers x updates)",
        "measured": result.coordinator.details(), "baseline": result.floor.details(),
    }
    base = f"raw websockets broadcast, same-size JSON, {n} sockets ({floor_where})"
    coord, floor = result.coordinator, result.floor
    return [
        Record(name=f"call.updated fan-out latency {label}, {n} watchers", value=coord.p(q), unit="ms",
               baseline=base, baseline_value=floor.p(q), extra=extra)
        for label, q in (("p50", 50), ("p95", 95), ("max", 100))
    ]


# ---------------------------------------------------------------- the run


async def run_benchmark(plan: Plan, embedded: bool) -> list[Record]:
    progress = Progress(7, "coordinator")
    api_key = "bench-" + secrets.token_hex(4)
    api_secret = secrets.token_urlsafe(32)
    tag = "b" + secrets.token_hex(3)
    records: list[Record] = []
    async with contextlib.AsyncExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="callrt-bench-")))
        # one user makes hundreds of creations and joins back to back here: this measures their cost,
        # not the per-user limiter (tests/signaling/test_limits_and_faults.py covers that)
        coord: Coordinator = (ThreadCoordinator if embedded else SubprocessCoordinator)(
            workdir, api_key, api_secret, unlimited=True)
        stack.callback(coord.stop)
        await coord.start()
        floor = ThreadFloor() if embedded else SubprocessFloor(workdir)
        stack.callback(floor.stop)
        await floor.start()
        pool = ClientPool(coord.url, api_key, TokenIssuer(api_key, api_secret))
        stack.push_async_callback(pool.aclose)
        cpu = coord.cpu_probe()
        common: dict[str, object] = {"coordinator": coord.mode, "rounds": plan.rounds, "quick": plan.quick}

        solo = await pool.user(f"{tag}-solo")
        crowd = await pool.users([f"{tag}-u{i}" for i in range(plan.clients)])
        await warm_up([solo], plan.warmup * 4, f"{tag}-s")
        await warm_up(crowd, plan.warmup, f"{tag}-c")
        progress.step(f"{coord.mode} at {coord.url}, {plan.clients + 1} clients connected")

        many = f"{plan.clients} concurrent clients"
        measured, baseline = await measure_get_or_create([solo], plan, plan.seq_ops, f"{tag}-g1", cpu)
        records += rest_records("get_or_create", "1 client", measured, baseline, common)
        progress.step("get_or_create, 1 client")
        measured, baseline = await measure_get_or_create(crowd, plan, plan.per_client_ops, f"{tag}-gn", cpu)
        records += rest_records("get_or_create", many, measured, baseline, common)
        progress.step(f"get_or_create, {many}")
        measured, baseline = await measure_join([solo], plan, plan.seq_ops, f"{tag}-j1", cpu)
        records += rest_records("join", "1 client", measured, baseline, common)
        progress.step("join, 1 client")
        measured, baseline = await measure_join(crowd, plan, plan.per_client_ops, f"{tag}-jn", cpu)
        records += rest_records("join", many, measured, baseline, common)
        progress.step(f"join, {many}")

        fanout = await measure_fanout(pool, floor.url, plan, tag, cpu)
        floor_where = "in-process thread" if embedded else "separate process"
        records += fanout_records(fanout, plan, floor_where, common)
        progress.step(f"fan-out to {plan.watchers} watchers")
    progress.step("released clients and servers")
    return records


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.coordinator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny counts (a smoke run of a few seconds)")
    p.add_argument("--embedded", action="store_true",
                   help="run the coordinator in a thread of this process instead of a separate process")
    p.add_argument("--clients", type=int, default=None, help="concurrent clients (default 50; --quick: 8)")
    p.add_argument("--watchers", type=int, default=None, help="fan-out watchers (default 100; --quick: 16)")
    p.add_argument("--json", metavar="PATH", help="write the records as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the markdown table to this file too")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("--broadcast-floor-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.broadcast_floor_server is not None:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_broadcast_floor(HOST, args.broadcast_floor_server))
        return 0
    for name in ("clients", "watchers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"--{name} must be at least 1", file=sys.stderr)
            return 2
    configure_logging(args.verbose)
    plan = make_plan(args.quick, args.clients, args.watchers)
    t0 = time.perf_counter()
    try:
        records = asyncio.run(run_benchmark(plan, args.embedded))
    except BenchmarkError as exc:
        print(f"benchmarks.coordinator: {exc}", file=sys.stderr)
        return 1
    where = "embedded in this process (shares the GIL)" if args.embedded else "in a separate process"
    publish(records, f"Coordinator: REST latency/throughput and event fan-out "
                     f"(coordinator {where}{', --quick' if plan.quick else ''})", args.json, args.markdown)
    print(f"benchmarks.coordinator: done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
