"""``callrt swarm``: start (or use) a coordinator, run the workers, show them live, merge their reports.

Each engine (callrt, then with ``--baseline`` plain aiortc) runs as one phase: one worker process
per participant range (``layout.split``), each pinned to its own core (``--no-pin`` to let the OS
place them), started as ``python -m signaling.swarm --worker --ipc ...`` (the same entry point a
worker on another machine uses). Workers print their per-second samples as JSON lines on stdout
(the live view) and write their report to a file; their stderr goes to a log file per worker. A
worker that exits without a report (killed, crashed) or overruns its deadline (then it is
terminated, then killed) turns into ``failed`` participants with the reason, never a hang.

``interrupt()`` (the CLI calls it on SIGINT/SIGTERM) asks every worker to stop: they leave their
calls and write partial reports; a second interrupt kills them. No worker outlives the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from signaling.swarm.errors import InvalidSwarmSpec, ReportError, WorkerFailed
from signaling.swarm.layout import Layout, MediaSpec, SplitMode, check_loop, format_range, new_run_id, split
from signaling.swarm.live import LiveView
from signaling.swarm.participant import Thresholds
from signaling.swarm.report import load, merge

logger = logging.getLogger(__name__)

STARTUP_ALLOWANCE_S = 60.0
"""Deadline slack per worker: interpreter start, imports, leaving."""
JOIN_ALLOWANCE_S = 1.0
"""Deadline slack per participant of a worker (joining)."""
TERM_GRACE_S = 10.0


@dataclass
class SwarmOptions:
    """One ``callrt swarm`` run."""

    calls: int = 2
    per_call: int = 2
    media: MediaSpec = field(default_factory=MediaSpec)
    seconds: float = 20.0
    processes: int | None = None
    """Workers (None: one per core this process may run on)."""
    url: str | None = None
    """Coordinator URL (None: start one inside this process)."""
    api_key: str | None = None
    api_secret: str | None = None
    run_id: str | None = None
    split: SplitMode = "auto"
    """How participants are spread over workers (``layout.split``); the plain-aiortc baseline always
    gets whole calls (both ends of each call in one process is how a plain script runs)."""
    baseline: bool = False
    """Also run the same load with plain aiortc, after callrt."""
    pin: bool = True
    loop: Literal["asyncio", "uvloop"] = "asyncio"
    executor_threads: int | None = None
    join_concurrency: int = 8
    thresholds: Thresholds = field(default_factory=Thresholds)
    experiments: list[str] = field(default_factory=list)
    """callrt workers only: prototypes of media/rtc changes (``signaling.swarm.experiments``)."""
    live: bool = True
    keep_logs: bool = False


def worker_command(opts: SwarmOptions, layout: Layout, engine: str, index: int, participants: range,
                   cpu: int | None, json_path: str, url: str | None) -> list[str]:
    """The command line of one local worker (``python -m signaling.swarm --worker ...``)."""
    m = opts.media
    th = opts.thresholds
    cmd = [sys.executable, "-m", "signaling.swarm", "--worker", "--ipc", "--engine", engine,
           "--run-id", layout.run_id, "--calls", str(layout.calls), "--per-call", str(layout.per_call),
           "--participants", format_range(participants), "--worker-index", str(index),
           "--seconds", str(opts.seconds), "--audio" if m.audio else "--no-audio",
           "--video", str(m.video) if m.video else "none", "--codec", m.codec, "--bitrate", str(m.bitrate),
           "--audio-encoding", m.audio_encoding, "--video-encoding", m.video_encoding,
           "--loop", opts.loop, "--join-concurrency", str(opts.join_concurrency), "--json", json_path,
           "--min-rate", str(th.min_rate), "--max-loss", str(th.max_loss), "--late-ms", str(th.late_ms),
           "--trend-ms", str(th.trend_ms)]
    if url:
        cmd += ["--url", url]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    if opts.executor_threads:
        cmd += ["--executor-threads", str(opts.executor_threads)]
    if engine == "callrt":
        for e in opts.experiments:
            cmd += ["--experiment", e]
    return cmd


class _WorkerProc:
    def __init__(self, index: int, participants: range, cpu: int | None, json_path: Path, log_path: Path) -> None:
        self.index = index
        self.participants = participants
        self.cpu = cpu
        self.json_path = json_path
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None
        self.returncode: int | None = None
        self.timed_out = False


class SwarmRunner:
    """Runs a swarm (module doc). ``on_sample(engine, sample)`` sees every worker's per-second sample."""

    def __init__(self, opts: SwarmOptions, on_sample: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.opts = opts
        self.layout = Layout(opts.run_id or new_run_id(), opts.calls, opts.per_call)
        self.on_sample = on_sample
        self.interrupted = False
        self._workers: list[_WorkerProc] = []
        self._kill = False
        self.log_dir: Path | None = None

    @property
    def worker_pids(self) -> list[int]:
        """Pids of the workers running now."""
        return [w.proc.pid for w in self._workers if w.proc is not None and w.proc.returncode is None]

    def interrupt(self) -> None:
        """First call: workers leave and report. Second call: workers are killed."""
        if self.interrupted:
            self._kill = True
            logger.warning("interrupted again: killing the workers")
        self.interrupted = True
        for w in self._workers:
            if w.proc is not None and w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGKILL if self._kill else signal.SIGINT)

    async def run(self) -> dict[str, Any]:
        from benchmarks._report import machine_description

        opts = self.opts
        check_loop(opts.loop)
        coordinator = None
        url, key, secret = opts.url, opts.api_key, opts.api_secret
        if url is None:
            from signaling.server.config import ServerConfig, generate_dev_keys
            from signaling.server.embedded import EmbeddedCoordinator

            if not (key and secret):
                key, secret = generate_dev_keys()
            coordinator = EmbeddedCoordinator(ServerConfig(api_key=key, api_secret=secret))
            await asyncio.to_thread(coordinator.start)
            url = coordinator.url
        elif not (key and secret):
            raise InvalidSwarmSpec("--url needs --api-key and --api-secret (or CALLRT_API_KEY/CALLRT_API_SECRET)")
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"callrt-swarm-{self.layout.run_id}-"))
        reports: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        try:
            engines = ["callrt"] + (["aiortc"] if opts.baseline else [])
            for engine in engines:
                if self.interrupted:
                    break
                r, f = await self._phase(engine, url, key, secret)
                reports += r
                failures += f
        finally:
            if coordinator is not None:
                await asyncio.to_thread(coordinator.stop)
        report = merge(reports, failures, machine=machine_description())
        report["interrupted"] = self.interrupted
        if failures or opts.keep_logs:
            report["logs"] = str(self.log_dir)
        else:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        return report

    async def _phase(self, engine: str, url: str, key: str, secret: str) -> tuple[list[dict[str, Any]],
                                                                                  list[dict[str, Any]]]:
        opts = self.opts
        assert self.log_dir is not None
        cores = sorted(os.sched_getaffinity(0))
        n = opts.processes or len(cores)
        ranges = split(self.layout, n, opts.split if engine == "callrt" else "calls")
        view = LiveView(engine if engine == "callrt" else "plain aiortc", self.layout.total, opts.seconds,
                        len(ranges), enabled=opts.live)
        env = {**os.environ, "CALLRT_API_KEY": key, "CALLRT_API_SECRET": secret,
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        self._workers = [
            _WorkerProc(i, r, cores[i % len(cores)] if opts.pin else None,
                        self.log_dir / f"{engine}-worker{i}.json", self.log_dir / f"{engine}-worker{i}.log")
            for i, r in enumerate(ranges)]
        try:
            for w in self._workers:
                cmd = worker_command(opts, self.layout, engine, w.index, w.participants, w.cpu, str(w.json_path),
                                     url if engine == "callrt" else None)
                log = w.log_path.open("wb")  # a local file, opened once per worker
                try:
                    w.proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL,
                                                                  stdout=asyncio.subprocess.PIPE, stderr=log, env=env)
                except OSError as exc:
                    raise WorkerFailed(f"cannot start worker {w.index}: {exc}") from exc
                finally:
                    log.close()
                if w.cpu is not None:
                    with contextlib.suppress(OSError):
                        os.sched_setaffinity(w.proc.pid, {w.cpu})
                w.reader = asyncio.ensure_future(self._read(engine, w, view))
                if self.interrupted:  # interrupted while starting workers: this one stops at once too
                    with contextlib.suppress(ProcessLookupError):
                        w.proc.send_signal(signal.SIGINT)
            await asyncio.gather(*(self._wait(w) for w in self._workers))
        finally:
            for w in self._workers:  # never leave a worker behind, whatever happened above
                if w.proc is not None and w.proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        w.proc.kill()
                    await w.proc.wait()
                if w.reader is not None:
                    w.reader.cancel()
                    await asyncio.gather(w.reader, return_exceptions=True)
            view.close()
        reports, failures = [], []
        for w in self._workers:
            try:
                reports.append(load(w.json_path))
            except ReportError:
                failures.append({"engine": engine, "worker": w.index,
                                 "range": [w.participants.start, w.participants.stop],
                                 "reason": self._why(w)})
        return reports, failures

    async def _read(self, engine: str, w: _WorkerProc, view: LiveView) -> None:
        assert w.proc is not None and w.proc.stdout is not None
        async for raw in w.proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if msg.get("type") == "stats":
                view.update(msg)
                if self.on_sample is not None:
                    self.on_sample(engine, msg)

    async def _wait(self, w: _WorkerProc) -> None:
        assert w.proc is not None
        deadline = (self.opts.seconds + STARTUP_ALLOWANCE_S + JOIN_ALLOWANCE_S * len(w.participants))
        try:
            w.returncode = await asyncio.wait_for(w.proc.wait(), deadline)
        except TimeoutError:
            w.timed_out = True
            logger.warning("worker %d overran its deadline (%.0f s): terminating", w.index, deadline)
            with contextlib.suppress(ProcessLookupError):
                w.proc.terminate()
            try:
                w.returncode = await asyncio.wait_for(w.proc.wait(), TERM_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                w.returncode = await w.proc.wait()
        if w.reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(w.reader), 5)

    def _why(self, w: _WorkerProc) -> str:
        rc = w.returncode
        how = (f"was killed by signal {-rc}" if rc is not None and rc < 0 else f"exited with status {rc}")
        if w.timed_out:
            how = "overran its deadline and was stopped"
        last = ""
        with contextlib.suppress(OSError):
            lines = [x for x in w.log_path.read_text(errors="replace").splitlines() if x.strip()]
            if lines:
                last = f" (last log line: {lines[-1][:200]})"
        return f"worker {w.index} (pid {w.proc.pid if w.proc else '-'}) {how} before reporting{last}"


async def run_swarm(opts: SwarmOptions) -> dict[str, Any]:
    """Run a swarm with SIGINT/SIGTERM wired to ``interrupt`` (for the CLI)."""
    runner = SwarmRunner(opts)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, runner.interrupt)
    try:
        return await runner.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
