"""Prototypes of changes to ``media/``, ``signaling/rtc/`` (and aiortc), switched on per worker to measure them.

The swarm owns none of those packages. To measure a proposed change with the swarm itself
(before and after, same run layout, same machine) a callrt worker applies prototypes to its own
process with ``--experiment NAME``. They are off by default, patch only that worker process, and
each stands for one change to make properly in its package:

* ``no-remb``: video is negotiated without the abs-send-time header extension, so receivers
  run no REMB estimator and senders no bandwidth policy (the encoder stays at the call's
  bitrate). Measures what congestion control costs per participant on loopback, where it has
  nothing to find. Change: none planned (a real network needs it); it sizes the estimator's
  share before anyone rewrites it.

Landed (no longer experiments): ``audio-encode-once`` and ``audio-level-numpy`` became
``media.fanout.EncodedAudioFanout`` (used by every publisher), ``audio-decode-inline`` became
``media.inline_decode`` (used by ``signaling.rtc.peer``), ``receiver-handoff`` became its
``_ThreadDecoder`` (video decoded on aiortc's thread hands frames over with one
``call_soon_threadsafe``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from signaling.swarm.errors import InvalidSwarmSpec

logger = logging.getLogger(__name__)

EXPERIMENTS: dict[str, tuple[str, Callable[[], None]]] = {}
"""name -> (the change it prototypes, the function that applies it to this process)."""
_applied: set[str] = set()


def apply(names: list[str]) -> None:
    for name in names:
        if name not in EXPERIMENTS:
            raise InvalidSwarmSpec(f"--experiment {name!r}: known ones are {', '.join(sorted(EXPERIMENTS))}")
        if name in _applied:
            continue
        what, fn = EXPERIMENTS[name]
        fn()
        _applied.add(name)
        logger.info("experiment %s applied: %s", name, what)


def _experiment(name: str, what: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def register(fn: Callable[[], None]) -> Callable[[], None]:
        EXPERIMENTS[name] = (what, fn)
        return fn
    return register


# ---------------------------------------------------------------- congestion control


@_experiment("no-remb", "video negotiated without abs-send-time: no REMB estimation, fixed encoder bitrate")
def _no_remb() -> None:
    from aiortc.codecs import HEADER_EXTENSIONS

    video = HEADER_EXTENSIONS["video"]
    video[:] = [e for e in video if "abs-send-time" not in e.uri]
