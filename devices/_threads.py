"""The one helper that moves blocking device calls off the event loop."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

logger = logging.getLogger("devices")


async def run_in_thread(
    fn: Callable[..., T],
    *args: object,
    timeout: float | None = None,
    on_late: Callable[[T], None] | None = None,
) -> T:
    """Run blocking ``fn(*args)`` in the default executor and await it.

    If the caller stops waiting (``timeout`` passed, or cancellation) while the call still
    runs, the call finishes in the background and its result goes to ``on_late``, so a
    device opened too late is released instead of leaking. Raises ``TimeoutError``.
    """
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(None, functools.partial(fn, *args))
    try:
        return await asyncio.wait_for(asyncio.shield(fut), timeout)
    except BaseException:
        fut.add_done_callback(functools.partial(_late_result, on_late=on_late, name=getattr(fn, "__name__", "")))
        raise


def _late_result(fut: asyncio.Future[T], *, on_late: Callable[[T], None] | None, name: str) -> None:
    if fut.cancelled():
        return
    exc = fut.exception()
    if exc is not None:
        logger.debug("abandoned call %s failed late: %r", name, exc)
        return
    if on_late is not None:
        try:
            on_late(fut.result())
        except Exception:
            logger.exception("releasing the late result of %s failed", name)


async def sleep_unless(stopped: asyncio.Event, delay: float) -> bool:
    """Sleep ``delay`` seconds; return True early (at once) if ``stopped`` is set meanwhile."""
    if stopped.is_set():
        return True
    try:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
        # arrives as the event is set, and the caller's task then never ends
        async with asyncio.timeout(delay):
            await stopped.wait()
    except TimeoutError:
        return False
    return True
