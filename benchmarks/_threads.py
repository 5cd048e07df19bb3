"""CPU time of this process thread by thread, grouped by role: where an end-to-end frame's CPU goes.

On Linux each thread's time on a CPU comes in nanoseconds from ``/proc/self/task/<tid>/schedstat``
(the kernel's per-thread runtime, the same counter ``time.process_time()`` sums); elsewhere from
psutil's per-thread user+system times (clock ticks). The process total is ``time.process_time()``,
which also holds threads that ended in between.

Roles come from the names Python gave its threads: the main thread is the event loop; a thread
named like a decoder (aiortc's ``video-decoder``) decodes; callrt's ``callrt-enc-*`` worker and
the loop's default executor (``asyncio_N``, ``uvloop_N``: where aiortc runs its encoder) encode.
Threads Python did not start (OpenCV's pool splitting a ``cvtColor``, a codec library's own) are
helper threads. What remains (other Python threads, and threads that ended in between, such as
the thread pool PyAV 18's ``reformat`` starts and ends for every new frame) is "other".
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import psutil

ROLES = ("event loop", "encoder", "decoder", "helper threads", "other")
_TASKS = "/proc/self/task"


@dataclass(frozen=True)
class CpuSnapshot:
    """This process's CPU seconds at one moment: in total, and per live thread with its role."""

    total: float
    threads: dict[int, float]
    roles: dict[int, str]


def role(name: str | None, *, main: bool = False) -> str:
    """The role of a thread from its Python name (None: a thread Python did not start)."""
    if main:
        return "event loop"
    if name is None:
        return "helper threads"
    n = name.lower()
    if "decoder" in n:
        return "decoder"
    if "enc" in n or n.startswith(("threadpoolexecutor", "asyncio", "uvloop")):
        return "encoder"
    return "other"


def thread_cpu() -> dict[int, float]:
    """CPU seconds of every live thread of this process, by native thread id."""
    out: dict[int, float] = {}
    try:
        tids = os.listdir(_TASKS)
    except OSError:
        return {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}
    for tid in tids:
        try:
            with open(f"{_TASKS}/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):  # the thread ended meanwhile
            continue
    return out


def snapshot() -> CpuSnapshot:
    """The process's CPU now: its total, each live thread's, and each thread's role by its name."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    main = threading.main_thread().native_id
    threads = thread_cpu()
    total = time.process_time()
    return CpuSnapshot(total, threads, {tid: role(names.get(tid), main=tid == main) for tid in threads})


def by_role(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds per role between two snapshots (every role in ``ROLES``, "other" as the remainder)."""
    out = dict.fromkeys(ROLES, 0.0)
    for tid, seconds in after.threads.items():
        out[after.roles[tid]] += max(0.0, seconds - before.threads.get(tid, 0.0))  # new threads: from 0
    out["other"] += max(0.0, (after.total - before.total) - sum(out.values()))
    return out
