"""A bounded asyncio queue that drops the oldest item instead of blocking or growing.

Used by every per-peer track and every sink: a slow or absent consumer costs at most
``maxsize`` items of memory, and ``dropped`` says how many it missed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

from media.errors import PipelineClosed

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """Single-consumer, loop-bound queue of at most ``maxsize`` items; full ``put`` evicts the oldest."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.put_count = 0
        """Items offered."""
        self.dropped = 0
        """Items evicted (or cleared) before anyone took them."""

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T) -> T | None:
        """Append ``item``; returns the evicted oldest item when the queue was full."""
        if self._closed:
            return None
        self.put_count += 1
        evicted = None
        if len(self._items) >= self.maxsize:
            evicted = self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._wake()
        return evicted

    def clear(self) -> int:
        """Drop everything queued (counted in ``dropped``); returns how many."""
        n = len(self._items)
        self._items.clear()
        self.dropped += n
        return n

    @property
    def consumer_waiting(self) -> bool:
        """True while the consumer waits in ``get()`` on an empty queue (nothing taken and unhandled)."""
        return self._waiter is not None and not self._items and not self._waiter.done()

    def get_nowait(self) -> T | None:
        return self._items.popleft() if self._items else None

    def peek_last(self) -> T | None:
        return self._items[-1] if self._items else None

    async def get(self) -> T:
        """The oldest item, waiting for one; raises ``PipelineClosed`` once closed and drained."""
        while not self._items:
            if self._closed:
                raise PipelineClosed("queue closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def close(self) -> None:
        """Refuse new items and wake the consumer (which drains what is left, then gets ``PipelineClosed``)."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
