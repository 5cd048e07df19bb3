"""Where received media is decoded, and how decoded frames reach the loop (bounded, one hand-off).

aiortc's ``RTCRtpReceiver`` hands every reassembled frame to a decoder thread and every decoded
frame back to the loop (``run_coroutine_threadsafe``: a coroutine, a task, a future and a
self-pipe wake-up per frame). For Opus that round trip costs more than the decode itself
(~25-70 us per 20 ms packet), and a process with 100 participants runs 100 decoder threads
fighting for the GIL. ``hook_decoder(receiver)`` replaces the receiver's decoder queue (one
instance, never the class) with a stand-in whose ``put()`` decodes at once and feeds the track;
the receiver's thread still starts, idles on ``get()`` and ends the track at ``stop()`` exactly
as before.

Audio is always decoded on the loop. Video (0.4-2 ms a frame) stays on aiortc's thread unless
``media._boundary.codecs_on_loop()`` says the process has one CPU, where the thread buys no
parallelism and only adds GIL hand-offs (see there for the measurement). On the thread the
stand-in keeps aiortc's thread but takes over its loop: one ``call_soon_threadsafe`` per
decoded frame instead of aiortc's coroutine + task + future (``_ThreadDecoder``).

A consumer on the loop (a ``media.sinks`` sink) can take a track's decoded frames straight from
the decoder (``consume_directly``): each frame is handed to it in the turn of the loop that
decoded it (audio) or received it from the decoder thread (video), instead of being queued on
the track for a task that another turn of the loop wakes. That saves a task wake-up per frame
per remote track (0.02-0.04 ms of loop CPU per 640x480 frame in an A/B within one call here;
audio has 50 frames a second per remote participant). The end of the track still comes through
the track (``recv()`` raises), so a sink keeps its draining task for that and for tracks this
hook does not serve.

Otherwise decoded frames wait in the track's queue until the application takes them.
aiortc's queue is unbounded, so a consumer that fell behind once (a burst of loop lag)
kept that backlog as latency for the rest of the call; here at most ``MAX_QUEUED`` frames wait
(200 ms of audio, 4 video frames) and the oldest is dropped (``dropped`` counts them): a few
frames lost once instead of a standing delay. ``hook_decoder(receiver)`` installs either;
``decode_on_loop`` is the same, answering whether it decodes on the loop.

Opus is decoded by ``media.codecs.AudioDecoder`` (libopus, opened as aiortc opens it), which
conceals a lost packet with libopus' packet-loss concealment instead of leaving a hole
(``media.loss_concealment``; ``concealment_stats(receiver)`` counts it).

VP8 is decoded by FFmpeg's own decoder (``_FFmpegVp8``) instead of aiortc's libvpx binding:
~9 % less CPU per 640x480 frame here (0.28 against 0.31 ms), and the decoded planes are handed
on as FFmpeg made them instead of being copied into a new frame. H.264 already is FFmpeg's.

The hook relies on private attributes of aiortc's receiver; when they are missing (another
aiortc version) it logs once and leaves the receiver alone.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Literal

import av
from aiortc import MediaStreamTrack, RTCRtpReceiver
from aiortc.codecs import get_decoder

from media._boundary import codecs_on_loop
from media.codecs import OPUS_TIME_BASE, AudioDecoder
from media.errors import CodecUnavailable, DecodeError
from media.frames import VIDEO_TIME_BASE
from media.loss_concealment import ConcealmentStats

logger = logging.getLogger(__name__)

_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"
_ERROR_ATTR = "_RTCRtpReceiver__decoder_error"
_THREAD_ATTR = "_RTCRtpReceiver__decoder_thread"
_KIND_ATTR = "_RTCRtpReceiver__kind"
_CONSUMER_ATTR = "_callrt_consumer"
"""Set on a remote track by ``consume_directly``: where its decoder hands decoded frames."""
_warned = False

Placement = Literal["loop", "thread"]

MAX_QUEUED = {"audio": 10, "video": 4}
"""Decoded frames allowed to wait for the application per track before the oldest is dropped."""


class _FFmpegVp8:
    """aiortc's decoder interface (``decode(JitterFrame) -> [av.VideoFrame]``) on FFmpeg's VP8 decoder."""

    def __init__(self) -> None:
        self._ctx: Any = av.CodecContext.create("vp8", "r")

    def decode(self, encoded_frame: Any) -> list[av.VideoFrame]:
        frames = self._ctx.decode(av.Packet(encoded_frame.data))
        for f in frames:
            f.pts = encoded_frame.timestamp
            f.time_base = VIDEO_TIME_BASE
        return frames


class _ConcealingOpus:
    """aiortc's Opus decoder interface (libopus, s16 stereo 48 kHz, as aiortc opens it) on
    ``media.codecs.AudioDecoder``, which conceals lost packets (``media.loss_concealment``)."""

    def __init__(self) -> None:
        self.decoder = AudioDecoder(channels=2)

    def decode(self, encoded_frame: Any) -> list[av.AudioFrame]:
        packet = av.Packet(encoded_frame.data)
        packet.pts = encoded_frame.timestamp
        packet.time_base = OPUS_TIME_BASE
        return self.decoder.decode_av(packet)


def _decoder_for(codec: Any) -> Any:
    mime = codec.mimeType.lower()
    try:
        if mime == "video/vp8":
            return _FFmpegVp8()
        if mime == "audio/opus":
            return _ConcealingOpus()
    except (av.FFmpegError, ValueError, CodecUnavailable):  # an FFmpeg built without it
        pass
    return get_decoder(codec)


class _InlineDecoder:
    """Stands in for the receiver's ``queue.Queue``: ``put`` decodes, ``get`` parks the idle thread."""

    def __init__(self, receiver: RTCRtpReceiver, decode_error: threading.Event, max_queued: int) -> None:
        self._thread_queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._receiver = receiver
        self._track: MediaStreamTrack | None = None
        self._track_queue: asyncio.Queue[Any] | None = None
        self._decode_error = decode_error
        self._decoder: Any = None
        self._codec_name: str | None = None
        self.max_queued = max_queued
        self.decoded = 0
        self.dropped = 0
        """Decoded frames dropped (oldest first) because the application fell ``max_queued`` behind."""
        self.handed = 0
        """Decoded frames handed to a direct consumer (``consume_directly``) instead of the track's queue."""

    def put(self, item: Any) -> None:
        if item is None:  # the receiver stops: wake its thread, which ends the track
            self._thread_queue.put(None)
            return
        frames = self._decode(item)
        if frames:
            self._deliver(frames)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self._thread_queue.get(*args, **kwargs)

    def _decode(self, item: tuple[Any, Any]) -> list[Any]:
        codec, encoded_frame = item
        if codec.name != self._codec_name:
            self._decoder, self._codec_name = _decoder_for(codec), codec.name
        try:
            return self._decoder.decode(encoded_frame)
        except (av.FFmpegError, DecodeError) as exc:
            logger.warning("failed to decode %s frame: %s", codec.name, exc)
            self._decode_error.set()
            return []

    def _deliver(self, frames: list[Any]) -> None:
        """On the loop: to the track's direct consumer, else into its queue, dropping the oldest
        beyond ``max_queued``."""
        track = self._track
        if track is None:
            # the receiver's track exists once a remote description was applied (on an offerer,
            # after this hook): look it up at the first frame, as aiortc's thread does at start
            track = self._track = self._receiver.track
            self._track_queue = track._queue  # type: ignore[attr-defined]
        self.decoded += len(frames)
        consumer = getattr(track, _CONSUMER_ATTR, None)
        if consumer is not None:
            self.handed += len(frames)
            for frame in frames:
                try:
                    consumer(frame)
                except Exception:  # the receive path goes on whatever the consumer does
                    logger.exception("direct consumer %r failed", consumer)
            return
        q = self._track_queue
        assert q is not None
        for frame in frames:
            while q.qsize() >= self.max_queued:
                q.get_nowait()
                self.dropped += 1
            q.put_nowait(frame)


class _ThreadDecoder(_InlineDecoder):
    """Video on aiortc's decoder thread, with a cheaper hand-off and the same bounded queue.

    aiortc's thread calls ``get()`` once; it returns only when the receiver stops, and until then
    decodes each frame ``put()`` gives it and hands the result to the loop with one
    ``call_soon_threadsafe`` (aiortc: ``run_coroutine_threadsafe``, a coroutine, a task and a
    concurrent future per frame; ~0.1 ms of CPU per frame measured end to end at 640x480).
    """

    def __init__(self, receiver: RTCRtpReceiver, decode_error: threading.Event, max_queued: int,
                 loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(receiver, decode_error, max_queued)
        self._loop = loop

    def put(self, item: Any) -> None:
        self._thread_queue.put(item)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        while True:
            item = self._thread_queue.get(*args, **kwargs)
            if item is None:
                return None  # aiortc's thread ends the track and exits
            frames = self._decode(item)
            if frames:
                try:
                    self._loop.call_soon_threadsafe(self._deliver, frames)
                except RuntimeError:  # the loop is closed: nobody is left to receive
                    return None


def consume_directly(track: MediaStreamTrack, consumer: Callable[[Any], None]) -> bool:
    """Hand ``track``'s decoded frames to ``consumer(frame)`` on the loop from now on (module doc).

    Frames already waiting in the track's queue are handed over first, in order, so the consumer
    sees every frame once and in order; the end-of-track marker stays queued for ``recv()``.
    Only a track whose receiver ``hook_decoder`` serves is fed this way; on any other track the
    mark is never read and frames keep coming through ``recv()``. One consumer per track:
    returns False, changing nothing, when another one is set. ``consumer`` runs inside the
    receive path: keep it short; what it raises there is logged and the receive path goes on.
    Undo with ``stop_consuming``.
    """
    if getattr(track, _CONSUMER_ATTR, None) is not None:
        return False
    waiting: list[Any] = []
    q = getattr(track, "_queue", None)
    if isinstance(q, asyncio.Queue):
        ended = False
        while not q.empty():
            item = q.get_nowait()
            if item is None:
                ended = True
            elif not ended:
                waiting.append(item)
        if ended:
            q.put_nowait(None)
    setattr(track, _CONSUMER_ATTR, consumer)
    for frame in waiting:
        consumer(frame)
    return True


def stop_consuming(track: MediaStreamTrack, consumer: Callable[[Any], None]) -> None:
    """Undo ``consume_directly(track, consumer)``: frames queue on the track again. Idempotent."""
    if getattr(track, _CONSUMER_ATTR, None) == consumer:
        delattr(track, _CONSUMER_ATTR)


def concealment_stats(receiver: RTCRtpReceiver) -> ConcealmentStats | None:
    """How much of ``receiver``'s audio was lost and concealed by libopus (None: not hooked, or not Opus)."""
    stand_in = getattr(receiver, _QUEUE_ATTR, None)
    decoder = getattr(stand_in, "_decoder", None) if isinstance(stand_in, _InlineDecoder) else None
    concealment = decoder.decoder.concealment if isinstance(decoder, _ConcealingOpus) else None
    return concealment.stats() if concealment is not None else None


def receiver_kind(receiver: RTCRtpReceiver) -> str | None:
    """``"audio"`` or ``"video"``: aiortc's private kind, else its track's (None when neither is there)."""
    return getattr(receiver, _KIND_ATTR, None) or getattr(receiver.track, "kind", None)


def hook_decoder(receiver: RTCRtpReceiver, *, video_on_loop: bool | None = None) -> Placement | None:
    """Give ``receiver`` (not yet receiving) callrt's decode hand-off and bounded queue.

    Returns where it decodes: ``"loop"`` (audio always; video when ``video_on_loop``, default
    ``codecs_on_loop()``), ``"thread"`` (video otherwise, on aiortc's thread), or None when the
    receiver is left as aiortc made it (already receiving, or other aiortc internals).
    Idempotent.
    """
    global _warned
    kind = receiver_kind(receiver)
    if kind not in MAX_QUEUED:
        return None
    on_loop = kind == "audio" or (codecs_on_loop() if video_on_loop is None else video_on_loop)
    current = getattr(receiver, _QUEUE_ATTR, None)
    if isinstance(current, _InlineDecoder):
        return "thread" if isinstance(current, _ThreadDecoder) else "loop"
    error = getattr(receiver, _ERROR_ATTR, None)
    if (getattr(receiver, _THREAD_ATTR, "missing") is not None  # missing, or already receiving
            or not isinstance(current, queue.Queue) or not isinstance(error, threading.Event)):
        if not _warned:
            _warned = True
            logger.info("aiortc receiver internals differ or it already receives; left as aiortc made it")
        return None
    stand_in = (_InlineDecoder(receiver, error, MAX_QUEUED[kind]) if on_loop
                else _ThreadDecoder(receiver, error, MAX_QUEUED[kind], asyncio.get_running_loop()))
    setattr(receiver, _QUEUE_ATTR, stand_in)
    return "loop" if on_loop else "thread"


def decode_on_loop(receiver: RTCRtpReceiver, *, video: bool | None = None) -> bool:
    """``hook_decoder`` that answers whether ``receiver`` decodes on the loop."""
    return hook_decoder(receiver, video_on_loop=video) == "loop"
