"""Translation of foreign errors at the pipeline's boundary, and the one helper that runs CPU work off the loop.

PyAV, OpenCV and aiortc errors never reach callers: ``translate(ErrorType, what)`` maps them
to a ``MediaError`` subclass with ``raise ... from exc``. ``Worker`` is a single-thread
executor: each encoder/decoder owns one, so codec calls never hop between threads and never
run on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import av
import cv2

from media.errors import MediaError

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


@contextmanager
def translate(error: type[MediaError], what: str) -> Iterator[None]:
    """Re-raise PyAV / OpenCV failures inside the block as ``error(what: detail)``."""
    try:
        yield
    except MediaError:
        raise
    except (av.FFmpegError, cv2.error) as exc:
        raise error(f"{what}: {exc}") from exc


class Worker:
    """One named thread that runs blocking calls for one owner (an encoder, a decoder)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on this worker's thread and await the result."""
        if self._pool is None:
            raise RuntimeError(f"worker {self.name} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self, final: Callable[[], object] | None = None) -> None:
        """Stop accepting work; calls already submitted finish, then ``final()`` runs on the same thread.

        So a codec is released only after its last call, never under it. Does not block.
        """
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if final is not None:
            pool.submit(final)
        pool.shutdown(wait=False)

    @property
    def closed(self) -> bool:
        return self._pool is None
