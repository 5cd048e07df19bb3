"""Decode received media on the event loop, where each frame is reassembled, instead of on a thread.

aiortc's ``RTCRtpReceiver`` hands every reassembled frame to a decoder thread and every decoded
frame back to the loop (``run_coroutine_threadsafe``: a coroutine, a task, a future and a
self-pipe wake-up per frame). For Opus that round trip costs more than the decode itself
(~25-70 us per 20 ms packet), and a process with 100 participants runs 100 decoder threads
fighting for the GIL. ``decode_on_loop(receiver)`` replaces the receiver's decoder queue (one
instance, never the class) with a stand-in whose ``put()`` decodes at once and feeds the track;
the receiver's thread still starts, idles on ``get()`` and ends the track at ``stop()`` exactly
as before.

Audio is always decoded on the loop. Video (0.4-2 ms a frame) stays on aiortc's thread unless
``media._boundary.codecs_on_loop()`` says the process has one CPU, where the thread buys no
parallelism and only adds GIL hand-offs (see there for the measurement).

Decoded frames wait in the track's queue until the application (a ``media.sinks`` sink) takes
them. aiortc's queue is unbounded, so a consumer that fell behind once (a burst of loop lag)
kept that backlog as latency for the rest of the call; here at most ``MAX_QUEUED`` frames wait
(200 ms of audio, 4 video frames) and the oldest is dropped (``dropped`` counts them): a few
frames lost once instead of a standing delay.

The hook relies on private attributes of aiortc's receiver; when they are missing (another
aiortc version) it logs once and leaves the receiver alone.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any

import av
from aiortc import RTCRtpReceiver
from aiortc.codecs import get_decoder

from media._boundary import codecs_on_loop

logger = logging.getLogger(__name__)

_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"
_ERROR_ATTR = "_RTCRtpReceiver__decoder_error"
_THREAD_ATTR = "_RTCRtpReceiver__decoder_thread"
_KIND_ATTR = "_RTCRtpReceiver__kind"
_warned = False

MAX_QUEUED = {"audio": 10, "video": 4}
"""Decoded frames allowed to wait for the application per track before the oldest is dropped."""


class _InlineDecoder:
    """Stands in for the receiver's ``queue.Queue``: ``put`` decodes, ``get`` parks the idle thread."""

    def __init__(self, receiver: RTCRtpReceiver, decode_error: threading.Event, max_queued: int) -> None:
        self._thread_queue: queue.Queue[Any] = queue.Queue()
        self._receiver = receiver
        self._track_queue: asyncio.Queue[Any] | None = None
        self._decode_error = decode_error
        self._decoder: Any = None
        self._codec_name: str | None = None
        self.max_queued = max_queued
        self.decoded = 0
        self.dropped = 0
        """Decoded frames dropped (oldest first) because the application fell ``max_queued`` behind."""

    def put(self, item: Any) -> None:
        if item is None:  # the receiver stops: wake its thread, which ends the track
            self._thread_queue.put(None)
            return
        codec, encoded_frame = item
        if self._track_queue is None:
            # the receiver's track exists once a remote description was applied (on an offerer,
            # after this hook): look it up at the first packet, as aiortc's thread does at start
            self._track_queue = self._receiver.track._queue  # type: ignore[attr-defined]
        if codec.name != self._codec_name:
            self._decoder, self._codec_name = get_decoder(codec), codec.name
        try:
            frames = self._decoder.decode(encoded_frame)
        except av.FFmpegError as exc:
            logger.warning("failed to decode %s frame: %s", codec.name, exc)
            self._decode_error.set()
            return
        q = self._track_queue
        for frame in frames:
            while q.qsize() >= self.max_queued:
                q.get_nowait()
                self.dropped += 1
            q.put_nowait(frame)
        self.decoded += len(frames)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self._thread_queue.get(*args, **kwargs)


def decode_on_loop(receiver: RTCRtpReceiver, *, video: bool | None = None) -> bool:
    """Make ``receiver`` (not yet receiving) decode on the loop; returns whether it does.

    Audio receivers always; video ones when ``video`` (default: ``codecs_on_loop()``).
    """
    global _warned
    kind = getattr(receiver, _KIND_ATTR, None) or getattr(receiver.track, "kind", None)
    if kind != "audio" and not (kind == "video" and (codecs_on_loop() if video is None else video)):
        return False
    current = getattr(receiver, _QUEUE_ATTR, None)
    if isinstance(current, _InlineDecoder):
        return True
    error = getattr(receiver, _ERROR_ATTR, None)
    if (getattr(receiver, _THREAD_ATTR, "missing") is not None  # missing, or already receiving
            or not isinstance(current, queue.Queue) or not isinstance(error, threading.Event)):
        if not _warned:
            _warned = True
            logger.info("aiortc receiver internals differ or it already receives; it decodes on aiortc's thread")
        return False
    setattr(receiver, _QUEUE_ATTR, _InlineDecoder(receiver, error, MAX_QUEUED[kind]))
    return True
