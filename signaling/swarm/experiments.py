"""Prototypes of changes to ``media/``, ``signaling/rtc/`` (and aiortc), switched on per worker to measure them.

The swarm owns none of those packages. To measure a proposed change with the swarm itself
(before and after, same run layout, same machine) a callrt worker applies prototypes to its own
process with ``--experiment NAME``. They are off by default, patch only that worker process, and
each stands for one change to make properly in its package:

* ``receiver-handoff``: aiortc's decoder thread hands each decoded frame to the loop with
  ``asyncio.run_coroutine_threadsafe(queue.put(frame))``, a coroutine, a task and a concurrent
  future per frame. ``loop.call_soon_threadsafe(queue.put_nowait, frame)`` does the same job.
  Change: upstream to aiortc, or patched by ``media`` at import.

Landed (no longer experiments): ``audio-encode-once`` and ``audio-level-numpy`` became
``media.fanout.EncodedAudioFanout`` (used by every publisher), ``audio-decode-inline`` became
``media.inline_decode`` (used by ``signaling.rtc.peer``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

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


# ---------------------------------------------------------------- receive hand-off


@_experiment("receiver-handoff", "aiortc's decoder thread hands frames over with call_soon_threadsafe(put_nowait)")
def _receiver_handoff() -> None:
    import aiortc.rtcrtpreceiver as receiver_module
    import av
    from aiortc.codecs import get_decoder

    def decoder_worker(loop: asyncio.AbstractEventLoop, input_q: Any, output_q: asyncio.Queue[Any],
                       decode_error: Any) -> None:
        codec_name = None
        decoder = None
        while True:
            task = input_q.get()
            if task is None:
                loop.call_soon_threadsafe(output_q.put_nowait, None)
                break
            codec, encoded_frame = task
            if codec.name != codec_name:
                decoder = get_decoder(codec)
                codec_name = codec.name
            assert decoder is not None
            try:
                frames = decoder.decode(encoded_frame)
            except av.FFmpegError as exc:
                receiver_module.logger.warning("failed to decode %s frame: %s", codec.name, exc)
                decode_error.set()
                continue
            for frame in frames:
                loop.call_soon_threadsafe(output_q.put_nowait, frame)

    receiver_module.decoder_worker = decoder_worker
