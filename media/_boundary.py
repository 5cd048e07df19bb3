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
import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import av

from media._opencv import cv2
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


CODEC_THREADS_ENV = "CALLRT_CODEC_THREADS"
"""``1``: codec work on threads; ``0``: on the event loop; unset: decided by ``codecs_on_loop()``."""


def codecs_on_loop() -> bool:
    """Whether video codec work should run on the event loop instead of worker threads.

    Threads pay off only when they can run beside the loop. A process allowed a single CPU
    (``taskset``, a pinned ``callrt swarm`` worker, a one-CPU container) gains nothing from them
    and pays for every frame twice: a GIL hand-off to the codec thread and one back, and at
    saturation the threads convoy on the GIL while the loop starves (measured with ``callrt swarm``:
    12 VP8 640x480@30 participants on 2 pinned workers: 0/12 real-time with decoder threads,
    12/12 with decoding on the loop, at the same CPU). ``CALLRT_CODEC_THREADS`` overrides.
    """
    forced = os.environ.get(CODEC_THREADS_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "0"
    try:
        return len(os.sched_getaffinity(0)) == 1
    except (AttributeError, OSError):  # not Linux
        return (os.cpu_count() or 1) == 1


class Worker:
    """One named thread that runs blocking calls for one owner (an encoder, a decoder).

    ``inline=True`` (the default where ``codecs_on_loop()``) runs each call on the caller's
    thread instead: same interface, no thread.

    Not a ``ThreadPoolExecutor``: a call is one ``SimpleQueue.put`` and one loop future, resolved
    with one ``call_soon_threadsafe``. ``run_in_executor`` adds a work item, a concurrent future,
    their locks and two chained callbacks on the loop per call (~0.05 ms of CPU per video frame
    measured end to end at 640x480).
    """

    def __init__(self, name: str, *, inline: bool | None = None) -> None:
        self.name = name
        self.inline = codecs_on_loop() if inline is None else inline
        self._open = True
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on this worker's thread (or inline) and await the result."""
        if not self._open:
            raise RuntimeError(f"worker {self.name} is closed")
        if self.inline:
            return fn(*args, **kwargs)
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=f"{self.name}_0", daemon=True)
            self._thread.start()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls.put((functools.partial(fn, *args, **kwargs), future))
        return await future

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            fn, future = call
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting task, as an executor would
                if future is not None:
                    _resolve(future, None, exc)
                else:
                    logger.exception("%s: final call failed", self.name)
            else:
                if future is not None:
                    _resolve(future, result, None)

    def close(self, final: Callable[[], object] | None = None) -> None:
        """Stop accepting work; calls already submitted finish, then ``final()`` runs on the same thread.

        So a codec is released only after its last call, never under it. Does not block.
        """
        if not self._open:
            return
        self._open = False
        if self._thread is None:
            if final is not None:
                final()  # inline or never used: no call can be running under us
            return
        if final is not None:
            self._calls.put((final, None))
        self._calls.put(None)

    @property
    def closed(self) -> bool:
        return not self._open


_Call = tuple[Callable[[], Any], "asyncio.Future[Any] | None"]
"""A call and the future awaiting it (None for the final call of ``close``)."""


def _resolve(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    """From the worker's thread: settle ``future`` on its loop (unless it was cancelled meanwhile)."""

    def settle() -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    try:
        future.get_loop().call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: nobody is left to await it
        pass
