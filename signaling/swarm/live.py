"""The live view: one summary line and one line per worker, redrawn in place every second on a TTY.

When stderr is not a terminal (CI, a pipe, a log file) it writes one plain summary line per update
instead. Fed with the workers' per-second samples (``update``); ``close`` leaves the last frame on
screen.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class LiveView:
    def __init__(self, engine: str, participants: int, seconds: float, workers: int,
                 stream: TextIO | None = None, enabled: bool = True) -> None:
        self.engine = engine
        self.participants = participants
        self.seconds = seconds
        self.workers: dict[int, dict[str, Any]] = {}
        self.expected_workers = workers
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.enabled = enabled
        self._drawn = 0
        self._t0 = time.monotonic()
        self._last_plain = 0.0
        self._running_since: float | None = None

    def update(self, sample: dict[str, Any]) -> None:
        self.workers[sample["worker"]] = sample
        if sample.get("phase") == "running" and self._running_since is None:
            self._running_since = time.monotonic()
        self.render()

    def worker_gone(self, worker: int, reason: str) -> None:
        self.workers[worker] = {**self.workers.get(worker, {"worker": worker}), "phase": f"gone ({reason})"}
        self.render()

    def summary(self) -> str:
        ws = list(self.workers.values())
        joined = sum(w.get("joined", 0) for w in ws)
        rx = sum((w.get("rx_audio") or 0) + (w.get("rx_video") or 0) for w in ws)
        p95 = max((w["latency_ms_p95"] for w in ws if w.get("latency_ms_p95") is not None), default=None)
        lag = max((w["loop_lag_ms_p95"] for w in ws if w.get("loop_lag_ms_p95") is not None), default=None)
        if self._running_since is not None:
            clock = f"{min(self.seconds, time.monotonic() - self._running_since):4.0f}/{self.seconds:g}s"
        else:
            clock = f"joining {time.monotonic() - self._t0:3.0f}s"
        return (f"[{self.engine} {clock}] {joined}/{self.participants} joined, rx {rx:.0f} frames/s, "
                f"latency p95 {'-' if p95 is None else f'{p95:.0f} ms'}, "
                f"loop lag p95 {'-' if lag is None else f'{lag:.1f} ms'}")

    def _worker_line(self, w: dict[str, Any]) -> str:
        rx = (w.get("rx_audio") or 0) + (w.get("rx_video") or 0)
        p95, lag, cpu = w.get("latency_ms_p95"), w.get("loop_lag_ms_p95"), w.get("cpu_percent")
        return (f"  worker {w['worker']}: {w.get('phase', '?'):8} {w.get('joined', 0)}/{w.get('participants', '?')} "
                f"joined, rx {rx:.0f}/s, p95 {'-' if p95 is None else f'{p95:.0f} ms'}, "
                f"lag {'-' if lag is None else f'{lag:.1f} ms'}, CPU {'-' if cpu is None else f'{cpu:.0f}%'}")

    def render(self) -> None:
        if not self.enabled:
            return
        if not self.tty:
            now = time.monotonic()
            if now - self._last_plain >= 1.0:
                self._last_plain = now
                self.stream.write(self.summary() + "\n")
                self.stream.flush()
            return
        lines = [self.summary(), *(self._worker_line(self.workers[k]) for k in sorted(self.workers))]
        out = []
        if self._drawn:
            out.append(f"\x1b[{self._drawn}F")  # back to the first line drawn
        out += [line[:200] + "\x1b[K\n" for line in lines]
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn = len(lines)

    def close(self) -> None:
        self._drawn = 0
