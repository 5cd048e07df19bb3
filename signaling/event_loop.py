"""The event loop callrt's own programs run on: uvloop where it is installed, asyncio's otherwise.

A callrt participant's event loop carries every RTP packet (SRTP, sockets, timers) and every
hand-off to and from the codec threads. On uvloop (libuv, Cython) that costs about a tenth less
loop CPU per video frame than on asyncio's selector loop: 1.51 against 1.67 ms per 640x480 frame
in the pipeline benchmark's call, means of 8 alternating runs each on the 2-core VM of the README.
The swarm measured 5-10 % less CPU per participant.

``run(main)`` is what the ``callrt`` command, its bots and demo, and the benchmarks use.
``CALLRT_LOOP=asyncio`` keeps asyncio's loop (to compare, or where uvloop misbehaves);
``CALLRT_LOOP=uvloop`` insists on uvloop. The SDK itself never picks a loop: an application that
embeds callrt runs it on whatever loop it runs, and gets the same saving with
``asyncio.Runner(loop_factory=uvloop.new_event_loop)`` or this ``run``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from signaling.errors import InvalidRequest

T = TypeVar("T")
LoopName = Literal["uvloop", "asyncio"]
ENV = "CALLRT_LOOP"
"""``uvloop``, ``asyncio``, or unset/``auto``: uvloop when installed."""


def chosen_loop(name: str | None = None) -> LoopName:
    """The loop ``run`` would use: ``name``, else ``CALLRT_LOOP``, else uvloop when installed.

    Raises ``InvalidRequest`` for an unknown name, or uvloop asked for where it is not installed.
    """
    wanted = (name if name is not None else os.environ.get(ENV, "")).strip().lower() or "auto"
    if wanted not in ("auto", "uvloop", "asyncio"):
        raise InvalidRequest(f"{ENV}={wanted!r}: expected uvloop, asyncio or auto")
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    if wanted == "uvloop" and not has_uvloop:
        raise InvalidRequest(f"{ENV}=uvloop, but uvloop is not installed (pip install uvloop)")
    if wanted == "asyncio" or not has_uvloop:
        return "asyncio"
    return "uvloop"


def loop_factory(name: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """A factory for ``asyncio.Runner`` (None: asyncio's default loop); see ``chosen_loop``."""
    if chosen_loop(name) == "asyncio":
        return None
    import uvloop

    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], *, loop: str | None = None) -> T:
    """``asyncio.run(main)`` on the chosen loop (module doc)."""
    try:
        factory = loop_factory(loop)
    except BaseException:
        main.close()  # never awaited: say so quietly instead of a "was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_loop_name() -> LoopName:
    """Which kind of loop runs the calling coroutine (for reports)."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
