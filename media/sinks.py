"""The receive path: drain a remote aiortc track into callrt frames, bounded.

aiortc's ``RemoteStreamTrack`` queues every decoded frame in an unbounded ``asyncio.Queue``;
a sink drains it continuously in its own task so that queue stays empty, and keeps at most
``maxsize`` frames of its own, dropping the oldest (``stats().dropped`` counts them). Nothing
grows when nobody consumes. Where callrt's receive path decodes the track
(``media.inline_decode.hook_decoder``, as every call does), the sink takes each frame straight
from the decoder instead (``consume_directly``): no queue and no task wake-up per frame; its task
then only waits for the track to end.

Video frames arrive as ``PlanarVideoFrame`` views of the decoder's planes (no copy); BGR is
produced only by ``to_bgr()``, into a reused buffer. Audio frames are int16 views of the
decoder's s16 output.

Consume with ``async for frame in sink``, ``await sink.recv()``, ``sink.latest()`` or
``sink.on_frame(callback)``; callbacks run on the loop as each frame arrives (in the receive
path, or in the drain task), so keep them short (copy what you need, hand the rest to a queue).
``aclose()`` cancels and awaits the task.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from media._queue import DropOldestQueue
from media.avframes import audio_from_av, from_av
from media.convert import Converter, PixelFormat
from media.errors import MediaError, PipelineClosed
from media.frames import AudioFrame, PlanarVideoFrame, VideoFrame
from media.inline_decode import consume_directly, stop_consuming

logger = logging.getLogger(__name__)

RATE_WINDOW_FRAMES = 512
"""Arrival times kept for ``stats().fps`` (the last second's count): rates above this read as this."""

F = TypeVar("F", PlanarVideoFrame, AudioFrame)


@dataclass(frozen=True)
class SinkStats:
    """A snapshot of a sink's counters."""

    received: int
    """Frames taken from the remote track."""
    dropped: int
    """Frames evicted from the sink's queue before anyone consumed them."""
    queued: int
    """Frames waiting now (at most ``maxsize``)."""
    fps: float
    """Frames received in the last second: 0 about a second after they stop."""
    ended: bool


class _Sink(Generic[F]):
    def __init__(self, track: MediaStreamTrack, maxsize: int, *, autostart: bool = True) -> None:
        self.track = track
        self._queue: DropOldestQueue[F] = DropOldestQueue(maxsize)
        self._latest: F | None = None
        self._callbacks: list[Callable[[F], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()
        self._closed = False
        self.received = 0
        self._started = time.monotonic()
        self._arrivals: collections.deque[float] = collections.deque(maxlen=RATE_WINDOW_FRAMES)
        if autostart:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return
            self.start()

    def start(self) -> None:
        """Start draining (done by the constructor when a loop is running)."""
        if self._closed:
            raise PipelineClosed("sink is closed")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="callrt-sink")
            self._task.add_done_callback(self._task_done)

    def on_frame(self, callback: Callable[[F], None]) -> Callable[[], None]:
        """Call ``callback(frame)`` for every frame; returns a function that unregisters it."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    def latest(self) -> F | None:
        """The most recent frame, or ``None`` before the first one."""
        return self._latest

    async def recv(self) -> F:
        """The oldest queued frame, waiting for one; raises ``PipelineClosed`` after the track ended."""
        return await self._queue.get()

    def __aiter__(self) -> _Sink[F]:
        return self

    async def __anext__(self) -> F:
        try:
            return await self._queue.get()
        except PipelineClosed:
            raise StopAsyncIteration from None

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def wait_ended(self) -> None:
        await self._ended.wait()

    def stats(self) -> SinkStats:
        return SinkStats(self.received, self._queue.dropped, len(self._queue), self._current_fps(), self.ended)

    def _current_fps(self) -> float:
        """Frames received in the last second (over the time since the sink started, in its first
        second, once that is a quarter second): 0 soon after frames stop, never a stale rate."""
        now = time.monotonic()
        cutoff = now - 1.0
        n = 0
        for t in reversed(self._arrivals):
            if t <= cutoff:
                break
            n += 1
        span = min(1.0, now - self._started)
        return n / span if span >= 0.25 else 0.0

    async def aclose(self) -> None:
        """Cancel and await the drain task; queued frames are released. Idempotent."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._finish()
        self._queue.clear()
        self._latest = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _convert(self, frame: Any) -> F:
        raise NotImplementedError

    async def _drain(self) -> None:
        try:
            # From the task's first step, where frames already waiting were always taken (so a
            # callback registered just after the constructor still sees them). If another sink
            # already takes this track's frames, recv() brings them.
            consume_directly(self.track, self._take)
            while True:
                try:
                    raw = await self.track.recv()
                except MediaStreamError:
                    break
                self._take(raw)
        finally:
            self._finish()

    def _take(self, raw: Any) -> None:
        """One decoded frame, from the track (drain task) or straight from callrt's decoder."""
        try:
            frame = self._convert(raw)
        except MediaError:
            logger.exception("sink: dropping an unconvertible frame")
            return
        self.received += 1
        self._arrivals.append(time.monotonic())  # for stats().fps
        self._latest = frame
        self._queue.put(frame)
        for cb in tuple(self._callbacks):
            try:
                cb(frame)
            except Exception:
                logger.exception("sink callback %r failed", cb)

    def _finish(self) -> None:
        stop_consuming(self.track, self._take)
        self._queue.close()
        self._ended.set()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("sink drain task failed", exc_info=task.exception())


class VideoSink(_Sink[PlanarVideoFrame]):
    """Drains a remote video track into ``PlanarVideoFrame`` views (module doc). Default 4 frames queued."""

    def __init__(self, track: MediaStreamTrack, maxsize: int = 4, *, autostart: bool = True) -> None:
        self._converter = Converter(ring=2)
        super().__init__(track, maxsize, autostart=autostart)

    def _convert(self, frame: av.VideoFrame) -> PlanarVideoFrame:
        return from_av(frame, capture_time=time.time())

    def to_bgr(self, frame: VideoFrame | None = None, fmt: PixelFormat = "bgr24") -> np.ndarray | None:
        """``frame`` (default: the latest) as BGR (or ``fmt``), in a buffer reused every other call."""
        frame = frame if frame is not None else self._latest
        if frame is None:
            return None
        return self._converter.to_image(frame, fmt)


class AudioSink(_Sink[AudioFrame]):
    """Drains a remote audio track into int16 ``AudioFrame``s. Default 50 frames (1 s of 20 ms) queued."""

    def __init__(self, track: MediaStreamTrack, maxsize: int = 50, *, autostart: bool = True) -> None:
        super().__init__(track, maxsize, autostart=autostart)

    def _convert(self, frame: av.AudioFrame) -> AudioFrame:
        return audio_from_av(frame, capture_time=time.time())
