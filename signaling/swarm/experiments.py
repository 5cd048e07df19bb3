"""Prototypes of changes to ``media/``, ``signaling/rtc/`` (and aiortc), switched on per worker to measure them.

The swarm owns none of those packages. To measure a proposed change with the swarm itself
(before and after, same run layout, same machine) a callrt worker applies prototypes to its own
process with ``--experiment NAME``. They are off by default, patch only that worker process, and
each stands for one change to make properly in its package:

* ``audio-level-numpy``: aiortc computes the RFC 6465 audio level of every outgoing audio frame
  in a pure-Python loop over the samples (``aiortc.rtp.compute_audio_level_dbov``, ~80 us per
  20 ms mono frame, on the event loop). Same result with NumPy in a few microseconds. Change:
  install it from ``media`` (callrt already patches aiortc's sender per instance in ``tracks``).
* ``audio-encode-once``: the microphone path as ``EncodedVideoFanout`` does video: one Opus
  encoder per source (``media.codecs.AudioEncoder``, mono when the source is mono, no resampler
  at 48 kHz), run inline on the loop (~40 us per 20 ms packet), its packets shared by every peer.
  aiortc then only packetizes (no per-peer resampler and encoder, no executor hop per frame, no
  Python audio-level loop). Change: an ``EncodedAudioFanout`` in ``media.fanout`` used by
  ``signaling.rtc.publisher.Publisher`` for audio.
* ``audio-encode-once-thread``: the same, encoding on one ``media._boundary.Worker`` thread per
  source (callrt's rule for codec work) instead of inline.
* ``receiver-handoff``: aiortc's decoder thread hands each decoded frame to the loop with
  ``asyncio.run_coroutine_threadsafe(queue.put(frame))``, a coroutine, a task and a concurrent
  future per frame. ``loop.call_soon_threadsafe(queue.put_nowait, frame)`` does the same job.
  Change: upstream to aiortc, or patched by ``media`` at import.
* ``audio-decode-inline``: decode received Opus on the loop (~25 us per 20 ms packet) where the
  packet arrives, instead of handing every packet to a decoder thread and every frame back (two
  thread switches and a self-pipe wake-up per frame, plus GIL traffic). Change: callrt's receive
  path (``media.sinks``/``signaling.rtc``) decoding audio itself, or upstream to aiortc.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

from signaling.swarm.errors import InvalidSwarmSpec

logger = logging.getLogger(__name__)

EXPERIMENTS: dict[str, tuple[str, Callable[[], None]]] = {}
"""name -> (the change it prototypes, the function that applies it to this process)."""
_applied: set[str] = set()


RECOMMENDED = ("audio-encode-once", "audio-decode-inline")
"""``--experiment recommended``: the set that took 100 audio-only participants to real time on 2 cores."""


def apply(names: list[str]) -> None:
    expanded = [n for name in names for n in (RECOMMENDED if name == "recommended" else (name,))]
    for name in expanded:
        if name not in EXPERIMENTS:
            raise InvalidSwarmSpec(f"--experiment {name!r}: known ones are recommended, "
                                   f"{', '.join(sorted(EXPERIMENTS))}")
        if name in _applied:
            continue
        what, fn = EXPERIMENTS[name]
        fn()
        _applied.add(name)
        logger.info("experiment %s applied: %s", name, what)


def _experiment(name: str, what: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def register(fn: Callable[[], None]) -> Callable[[], None]:
        EXPERIMENTS[name] = (what, fn)
        return fn
    return register


# ---------------------------------------------------------------- audio level


@_experiment("audio-level-numpy", "aiortc's per-frame RFC 6465 audio level with NumPy instead of a Python loop")
def _audio_level_numpy() -> None:
    import aiortc.rtcrtpsender as sender_module
    import numpy as np

    def compute_audio_level_dbov(frame: Any) -> int:
        # aiortc's definition: every int16 of plane 0 squared, over frame.samples * 32767**2
        n = frame.samples * frame.layout.nb_channels
        x = np.frombuffer(frame.planes[0], dtype=np.int16, count=n).astype(np.float64)
        rms = math.sqrt(float(np.dot(x, x)) / (frame.samples * 32767.0 * 32767.0))
        if rms <= 0:
            return -127
        return round(max(-127.0, min(0.0, 20 * math.log10(rms))))

    sender_module.compute_audio_level_dbov = compute_audio_level_dbov  # type: ignore[attr-defined]


# ---------------------------------------------------------------- encode audio once


def _encoded_audio_fanout(inline: bool) -> None:
    from aiortc import MediaStreamTrack
    from aiortc.mediastreams import MediaStreamError

    import signaling.rtc.publisher as publisher_module
    from media._boundary import Worker
    from media._queue import DropOldestQueue
    from media.audio import Resampler
    from media.codecs import AudioEncoder
    from media.errors import PipelineClosed
    from media.fanout import _SourcePump
    from media.frames import AUDIO_SAMPLE_RATE, AudioFrame

    class EncodedAudioTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self, owner: Any, maxsize: int) -> None:
            super().__init__()
            self._owner = owner
            self._queue: DropOldestQueue[Any] = DropOldestQueue(maxsize)
            self.started = False

        def offer(self, packet: Any) -> None:
            if self.readyState == "live":
                self._queue.put(packet)

        async def recv(self) -> Any:
            if self.readyState != "live":
                raise MediaStreamError
            self.started = True
            try:
                return await self._queue.get()
            except PipelineClosed:
                self.stop()
                raise MediaStreamError from None

        def stop(self) -> None:
            if self.readyState == "live":
                super().stop()
                self._queue.close()
                self._owner.unsubscribe(self)

    class EncodedAudioFanout(_SourcePump):
        """One Opus encoder per audio source; every peer gets its packets."""

        def __init__(self, queue_size: int = 4) -> None:
            super().__init__(None, "fanout-opus")
            self.queue_size = queue_size
            self._tracks: list[EncodedAudioTrack] = []
            self._encoders: dict[int, AudioEncoder] = {}
            self._resampler: Resampler | None = None
            self._worker = None if inline else Worker("callrt-enc-opus")
            self._pts: int | None = None
            self._src_next: int | None = None

        def subscribe(self) -> EncodedAudioTrack:
            self._check_open()
            track = EncodedAudioTrack(self, self.queue_size)
            self._tracks.append(track)
            self.start()
            return track

        def unsubscribe(self, track: Any) -> None:
            if track in self._tracks:
                self._tracks.remove(track)
                if track.readyState == "live":
                    track.stop()

        def request_keyframe(self, track: Any = None) -> None:
            pass

        def report_bandwidth(self, track: Any, bps: int) -> None:
            pass

        def _on_first_recv(self, track: Any) -> None:
            pass

        def _encode(self, frame: AudioFrame) -> list[Any]:
            if frame.sample_rate != AUDIO_SAMPLE_RATE:
                if self._resampler is None or self._resampler.channels != frame.channels:
                    self._resampler = Resampler(AUDIO_SAMPLE_RATE, frame.channels)
                frames = self._resampler.resample(frame)
            else:
                frames = [frame]
            packets: list[Any] = []
            for f in frames:
                enc = self._encoders.get(f.channels)
                if enc is None:
                    enc = self._encoders[f.channels] = AudioEncoder(channels=f.channels)
                n = f.num_samples
                # a continuous RTP clock: forward jumps of the source (an overrun) stay jumps
                if self._pts is None or self._src_next is None or f.pts < self._src_next:
                    self._pts = 0 if self._pts is None else self._pts
                else:
                    self._pts += f.pts - self._src_next
                self._src_next = f.pts + n
                packets += enc.encode(AudioFrame(f.samples, f.sample_rate, self._pts, f.capture_time))
                self._pts += n
            return packets

        async def _handle(self, frame: AudioFrame, pts: int) -> None:
            started = [t for t in self._tracks if t.started]
            if not started:
                return
            if self._worker is None:
                packets = self._encode(frame)
            else:
                packets = await self._worker.run(self._encode, frame)
            for packet in packets:
                for t in started:
                    t.offer(packet)

        def _on_close(self) -> None:
            for t in list(self._tracks):
                t.stop()
            self._tracks.clear()
            if self._worker is not None:
                self._worker.close()

    original_init = publisher_module.Publisher.__init__

    def init(self: Any, kind: Any, settings: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, kind, settings, *args, **kwargs)
        if kind == "audio":
            self.fanout = EncodedAudioFanout()
            self.fanout.pause()

    publisher_module.Publisher.__init__ = init  # type: ignore[method-assign]


@_experiment("audio-encode-once", "one Opus encoder per microphone (mono, no resampler), inline, packets to every peer")
def _audio_encode_once() -> None:
    _encoded_audio_fanout(inline=True)


@_experiment("audio-encode-once-thread", "audio-encode-once with the encoder on one worker thread per source")
def _audio_encode_once_thread() -> None:
    _encoded_audio_fanout(inline=False)


# ---------------------------------------------------------------- receive hand-off


@_experiment("receiver-handoff", "aiortc's decoder thread hands frames over with call_soon_threadsafe(put_nowait)")
def _receiver_handoff() -> None:
    import aiortc.rtcrtpreceiver as receiver_module
    import av
    from aiortc.codecs import get_decoder

    def decoder_worker(loop: asyncio.AbstractEventLoop, input_q: Any, output_q: asyncio.Queue[Any],
                       decode_error: Any) -> None:
        codec_name = None
        decoder = None
        while True:
            task = input_q.get()
            if task is None:
                loop.call_soon_threadsafe(output_q.put_nowait, None)
                break
            codec, encoded_frame = task
            if codec.name != codec_name:
                decoder = get_decoder(codec)
                codec_name = codec.name
            assert decoder is not None
            try:
                frames = decoder.decode(encoded_frame)
            except av.FFmpegError as exc:
                receiver_module.logger.warning("failed to decode %s frame: %s", codec.name, exc)
                decode_error.set()
                continue
            for frame in frames:
                loop.call_soon_threadsafe(output_q.put_nowait, frame)

    receiver_module.decoder_worker = decoder_worker


# ---------------------------------------------------------------- decode audio inline


@_experiment("audio-decode-inline", "received Opus decoded on the loop, not on a decoder thread per receiver")
def _audio_decode_inline() -> None:
    import aiortc.rtcrtpreceiver as receiver_module
    import av
    from aiortc.codecs import get_decoder

    class InlineDecode:
        """Stands in for the receiver's decoder queue: decodes at ``put`` and feeds the track directly."""

        def __init__(self, receiver: Any, thread_queue: Any) -> None:
            self.thread_queue = thread_queue
            self.track_queue = receiver._track._queue
            self.decode_error = receiver._RTCRtpReceiver__decoder_error
            self.decoder: Any = None
            self.codec_name: str | None = None

        def put(self, item: Any) -> None:
            if item is None:  # stop: the idle decoder thread ends and ends the track
                self.thread_queue.put(None)
                return
            codec, encoded_frame = item
            if codec.name != self.codec_name:
                self.decoder, self.codec_name = get_decoder(codec), codec.name
            try:
                frames = self.decoder.decode(encoded_frame)
            except av.FFmpegError as exc:
                receiver_module.logger.warning("failed to decode %s frame: %s", codec.name, exc)
                self.decode_error.set()
                return
            for frame in frames:
                self.track_queue.put_nowait(frame)

    original_receive = receiver_module.RTCRtpReceiver.receive

    async def receive(self: Any, parameters: Any) -> None:
        await original_receive(self, parameters)
        if self.track.kind == "audio" and not isinstance(self._RTCRtpReceiver__decoder_queue, InlineDecode):
            self._RTCRtpReceiver__decoder_queue = InlineDecode(self, self._RTCRtpReceiver__decoder_queue)

    receiver_module.RTCRtpReceiver.receive = receive  # type: ignore[method-assign]
