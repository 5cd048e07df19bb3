"""A small typed event emitter: ``on(type, handler)`` plus async iteration over events.

Handlers may be plain functions or coroutines; coroutine handlers run as tasks owned by
the emitter (failures are logged, never swallowed silently). ``"*"`` subscribes to all.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

logger = logging.getLogger(__name__)

Handler = Callable[[Any], Any]


class EventEmitter:
    """Dispatch by table: event type → handlers."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}
        self._queues: list[tuple[asyncio.Queue[Any], frozenset[str] | None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    def on(self, event_type: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(event)`` for each event of ``event_type`` (``"*"``: every event).

        Returns a function that unsubscribes.
        """
        self._handlers.setdefault(event_type, []).append(handler)

        def off() -> None:
            handlers = self._handlers.get(event_type, [])
            if handler in handlers:
                handlers.remove(handler)

        return off

    def emit(self, event_type: str, event: Any) -> None:
        for handler in [*self._handlers.get(event_type, ()), *self._handlers.get("*", ())]:
            try:
                result = handler(event)
            except Exception:
                logger.exception("handler %r for %s failed", handler, event_type)
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._task_done)
        for queue, types in self._queues:
            if types is None or event_type in types:
                if queue.full():  # bounded: drop the oldest rather than grow
                    queue.get_nowait()
                queue.put_nowait(event)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("async event handler failed", exc_info=task.exception())

    async def events(self, *types: str, maxsize: int = 256) -> AsyncIterator[Any]:
        """Iterate over events as they come (optionally only ``types``); bounded, drops the oldest."""
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        entry = (queue, frozenset(types) if types else None)
        self._queues.append(entry)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.remove(entry)

    async def aclose(self) -> None:
        """Cancel handler tasks still running."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
