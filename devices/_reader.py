"""A source whose device lives in one reader thread: open, read and close all happen there.

Subclasses implement ``_open(stop)`` (blocking; returns a ``Capture`` or raises a
``DeviceError``). The thread hands frames to the event loop with
``loop.call_soon_threadsafe`` into a small bounded queue that drops the oldest frame
(``dropped_frames`` counts them), so a slow consumer sees fresh frames and nothing grows.
``recv()`` raises ``DeviceGone`` when no frame arrives within ``read_timeout``; ``stop()``
tells the thread to close the device and waits for it (bounded by ``close_timeout``).
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import logging
import threading
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from devices.errors import DeviceError, DeviceGone, DeviceUnavailable
from media.frames import AudioFrame, VideoFrame
from media.source import Source, SourceEnded

F = TypeVar("F", VideoFrame, AudioFrame)
F_co = TypeVar("F_co", VideoFrame, AudioFrame, covariant=True)

logger = logging.getLogger("devices")

_STOPPED = object()


class Capture(Protocol[F_co]):
    """An open device, used only from its reader thread."""

    def read(self) -> F_co | None:
        """Block for the next frame; ``None`` when there is none to hand over (skipped, or stopping).

        Raises ``SourceEnded`` at the end of a finite input, a ``DeviceError`` on failure.
        """

    def close(self) -> None:
        """Release the device. Called once, from the reader thread."""


@dataclass
class _Session:
    """One start()..stop() run: the reader thread's stop flag, its exit signal and its queue."""

    stop: threading.Event
    exited: concurrent.futures.Future[None]
    queue: asyncio.Queue[object]


class ThreadedSource(Source[F], Generic[F]):
    """Base of the sources whose device is read by a dedicated thread."""

    queue_size: int = 2
    """Frames buffered between the thread and ``recv()``; older ones are dropped."""

    def __init__(
        self, name: str, *, open_timeout: float = 5.0, read_timeout: float = 5.0, close_timeout: float = 3.0
    ) -> None:
        self._name = name
        self.open_timeout = open_timeout
        """Seconds ``start()`` waits for the device to open and deliver before ``DeviceUnavailable``."""
        self.read_timeout = read_timeout
        """Seconds ``recv()`` waits for a frame before ``DeviceGone``."""
        self.close_timeout = close_timeout
        """Seconds ``stop()`` waits for the reader thread to release the device."""
        self._session: _Session | None = None
        self._dropped = 0

    # -- subclass API --------------------------------------------------------------------

    @abc.abstractmethod
    def _open(self, stop: threading.Event) -> Capture[F]:
        """Open the device (blocking, in the reader thread). Raise a ``DeviceError`` on failure."""

    def _gone_fix(self) -> str:
        """What to do when the device stops delivering (used in ``DeviceGone``)."""
        return "check the device is still connected and not used by another program"

    def _map_unexpected(self, exc: BaseException, opening: bool) -> DeviceError:
        """Map an unexpected exception from the thread to a typed error."""
        if opening:
            return DeviceUnavailable(self._name, f"cannot be opened ({exc!r})", self._gone_fix())
        return DeviceGone(self._name, f"capture failed ({exc!r})", self._gone_fix())

    # -- Source --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def running(self) -> bool:
        return self._session is not None

    @property
    def dropped_frames(self) -> int:
        """Frames dropped because the consumer did not keep up (since construction)."""
        return self._dropped

    async def start(self) -> None:
        """Open the device in its reader thread; raise a ``DeviceError`` if it cannot open."""
        if self._session is not None:
            logger.debug("%s: start() while running; ignored", self._name)
            return
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        opened: concurrent.futures.Future[None] = concurrent.futures.Future()
        exited: concurrent.futures.Future[None] = concurrent.futures.Future()
        queue: asyncio.Queue[object] = asyncio.Queue()
        session = _Session(stop, exited, queue)
        threading.Thread(
            target=self._run, args=(session, opened, loop), name=f"callrt-device:{self._name}", daemon=True
        ).start()
        try:
            await asyncio.wait_for(asyncio.wrap_future(opened), self.open_timeout)
        except TimeoutError:
            stop.set()
            raise DeviceUnavailable(
                self._name, f"did not open within {self.open_timeout:g} s", self._gone_fix()
            ) from None
        except BaseException:
            stop.set()
            raise
        self._session = session
        logger.info("%s: started", self._name)

    async def stop(self) -> None:
        """Tell the reader thread to release the device and wait for it. Idempotent."""
        session = self._session
        if session is None:
            return
        self._session = None
        session.stop.set()
        session.queue.put_nowait(_STOPPED)  # wakes a pending recv()
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(session.exited)), self.close_timeout)
        except TimeoutError:
            logger.warning(
                "%s: reader thread still blocked after %.1f s; it releases the device when its read returns",
                self._name,
                self.close_timeout,
            )
        else:
            logger.info("%s: stopped", self._name)

    async def recv(self) -> F:
        """The next frame. ``SourceEnded`` once stopped or ended; ``DeviceGone`` if frames stop coming."""
        session = self._session
        if session is None:
            raise SourceEnded(f"{self._name} is not running")
        try:
            async with asyncio.timeout(self.read_timeout):  # not wait_for: it can swallow a cancel (3.11)
                item = await session.queue.get()
        except TimeoutError:
            if self._session is session:
                await self.stop()
            raise DeviceGone(
                self._name, f"no frame for {self.read_timeout:g} s (device stalled or disappeared)", self._gone_fix()
            ) from None
        if item is _STOPPED:
            session.queue.put_nowait(_STOPPED)  # for any other waiter
            raise SourceEnded(f"{self._name} stopped")
        if isinstance(item, BaseException):
            if self._session is session:
                await self.stop()
            raise item
        return item  # type: ignore[return-value]

    # -- the reader thread ---------------------------------------------------------------

    def _run(self, session: _Session, opened: concurrent.futures.Future[None], loop: asyncio.AbstractEventLoop) -> None:
        capture: Capture[F] | None = None
        try:
            try:
                capture = self._open(session.stop)
            except BaseException as exc:
                err = exc if isinstance(exc, DeviceError | SourceEnded) else self._map_unexpected(exc, True)
                if err is not exc:
                    err.__cause__ = exc
                _resolve(opened, err)
                return
            if not _resolve(opened, None) or session.stop.is_set():
                return
            while not session.stop.is_set():
                frame = capture.read()
                if frame is None or session.stop.is_set():
                    continue
                loop.call_soon_threadsafe(self._deliver, session, frame)
        except RuntimeError as exc:
            if loop.is_closed():
                logger.debug("%s: event loop closed; reader exits", self._name)
            else:
                self._post(loop, session, exc)
        except BaseException as exc:
            self._post(loop, session, exc)
        finally:
            if capture is not None:
                try:
                    capture.close()
                except Exception:
                    logger.exception("%s: closing the device failed", self._name)
            exited = session.exited
            if not exited.done():
                exited.set_result(None)

    def _post(self, loop: asyncio.AbstractEventLoop, session: _Session, exc: BaseException) -> None:
        """Hand a failure from the thread to ``recv()``."""
        if not isinstance(exc, DeviceError | SourceEnded):
            logger.error("%s: reader failed: %r", self._name, exc)
            mapped = self._map_unexpected(exc, False)
            mapped.__cause__ = exc
            exc = mapped
        if session.stop.is_set():
            return
        try:
            loop.call_soon_threadsafe(self._deliver, session, exc)
        except RuntimeError:
            logger.debug("%s: event loop closed before the error %r could be reported", self._name, exc)

    def _deliver(self, session: _Session, item: object) -> None:
        """Runs on the loop: enqueue, dropping the oldest frame when the queue is full."""
        if session.stop.is_set():
            return
        q = session.queue
        while q.qsize() >= self.queue_size:
            q.get_nowait()
            self._dropped += 1
        q.put_nowait(item)


def _resolve(fut: concurrent.futures.Future[None], exc: BaseException | None) -> bool:
    """Complete ``fut`` unless the waiter gave up (cancelled it); True when the waiter will see it."""
    if not fut.set_running_or_notify_cancel():
        return False
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)
    return True
