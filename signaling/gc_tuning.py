"""Garbage-collector settings for processes that host many clients, bots or a coordinator.

CPython starts a young-generation collection every 700 net container allocations. A process
serving hundreds of requests or events per second allocates that many in well under a
millisecond, so the collector runs thousands of times a second and keeps promoting live request
state into the older generations, whose full collections then scan the whole heap: in
``benchmarks/soak.py`` (200 clients in one process) the client process spent about 8 % of its CPU
in the collector and full collections paused it for up to 90 ms, which went straight into the
latency tail. Raising the thresholds lets short-lived objects die by reference counting before a
collection sees them; ``gc.freeze()`` after start-up moves the modules, models and app objects
out of every later scan. Cycles are still collected, only less often.

This changes process-wide state, so the SDK never calls it on import: ``callrt serve`` and the
soak benchmark's client process call :func:`tune_gc` at start-up, and an application hosting many
clients may do the same (swarm workers do not: measured there earlier, GC settings moved their
CPU by ~2 %, within noise). ``CALLRT_GC=default`` leaves the interpreter's settings alone;
``CALLRT_GC=A,B,C`` picks other thresholds.
"""

from __future__ import annotations

import gc
import logging
import os

logger = logging.getLogger(__name__)

THRESHOLDS = (5_000, 20, 20)
"""Young generation after 5,000 net allocations (CPython: 700); the older ones every 20 of the
previous (CPython: 10, 10). Chosen with the soak benchmark (README, "The coordinator")."""


def tune_gc(thresholds: tuple[int, int, int] = THRESHOLDS, *, freeze: bool = True) -> bool:
    """Apply ``thresholds`` (and freeze what is allocated so far); False when ``CALLRT_GC=default``."""
    setting = os.environ.get("CALLRT_GC", "").strip().lower()
    if setting == "default":
        logger.info("CALLRT_GC=default: garbage collector left at %s", gc.get_threshold())
        return False
    if setting:
        try:
            a, b, c = (int(v) for v in setting.split(","))
        except ValueError:
            logger.warning("ignoring CALLRT_GC=%r: expected 'default' or three integers 'A,B,C'", setting)
        else:
            thresholds = (a, b, c)
    if freeze:
        gc.collect()
        gc.freeze()
    gc.set_threshold(*thresholds)
    logger.debug("garbage collector thresholds %s, %d objects frozen", thresholds, gc.get_freeze_count())
    return True
