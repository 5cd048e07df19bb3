"""Encode once per source, fan the result out to every peer.

``EncodedVideoFanout`` pulls one ``VideoSource``, runs ONE encoder on its own thread, and gives
each peer an ``EncodedTrack`` whose ``recv()`` returns the shared ``av.Packet``s; aiortc's
``RTCRtpSender`` packetizes them without re-encoding. Adding a peer costs packetization and
SRTP, not an encoder (aiortc's default path runs one encoder per peer).

Keyframes: a PLI/FIR from any peer reaches the shared encoder through the sender hook
(``EncodedTrack.bind_sender``, applied by ``add_to``); a new subscriber's first ``recv()`` forces
one too, so a late joiner decodes within a frame or two. Requests arriving before the next
frame collapse into one keyframe.

Bandwidth policy (lowest peer wins): the encoder's target is the minimum of the REMB
estimates of the peers that reported one, clamped to ``[min_bitrate, max_bitrate]``, or the
configured ``bitrate`` while none has. One encoder produces one rate, and a stream above a
peer's estimate congests that peer's path (loss, PLIs, keyframes for everyone), so the
slowest link sets the quality. Simulcast or an SFU is the way past that; the seam is here.

``pause()`` stops pulling and sending while every peer's transceiver and track stay open;
``resume()`` continues with a keyframe. ``replace_source()`` switches the camera mid-call
(a new size rebuilds the encoder, which starts with a keyframe). Video pts come from one
monotonic 90 kHz clock owned by the fan-out, so pauses and source switches keep RTP time moving
forward. The fan-out never starts or stops sources: their owner does. A source that ends
leaves the fan-out idle until ``resume()`` or ``replace_source()``.

``EncodedAudioFanout`` does the same for a microphone: one Opus encoder per source (mono when
the source is mono, no resampler when it already runs at 48 kHz), its packets shared by every
peer with the audio level measured once. aiortc's default path gives each peer a resampler, an
Opus encoder, an executor hop per 20 ms frame and a pure-Python audio-level loop (~80 us per
frame on the event loop); with 50 two-party calls on 2 cores that decided between every
participant real-time and none (``callrt swarm``, README). Opus encoding runs inline on the
loop: ~40-90 us per 20 ms packet costs less than the two thread switches a worker hop takes.
A source that already has the packet (an ``OpusAudioFrame``: pre-encoded bot media, a replay)
skips the encoder: its packet goes out as it is, on the same RTP clock.

Video has the same pass-through: an ``EncodedVideoFrame`` of the fan-out's codec is sent as it
is, on the fan-out's RTP clock. The replay decides where keyframes are (a peer waiting for one,
a late joiner or one that sent a PLI, gets the next keyframe the replay carries), and its bitrate
is the one it was encoded at: the bandwidth policy applies to encoded frames only. A source that
switches from replayed to raw frames gets a keyframe from the encoder first.

``FrameFanout`` is the same pump for raw frames: each peer's ``FrameTrack`` hands ``av`` frames
to aiortc, which encodes per peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, Self, TypeVar

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCRtpSender

from media._boundary import Worker, translate
from media.audio import Resampler
from media.codecs import (
    OPUS_TIME_BASE,
    AudioEncoder,
    AudioEncoderSettings,
    VideoCodecName,
    VideoEncoder,
    VideoEncoderSettings,
)
from media.errors import EncodeError, MediaError, PipelineClosed
from media.frames import AUDIO_SAMPLE_RATE, VIDEO_TIME_BASE, AudioFrame, EncodedVideoFrame, OpusAudioFrame, VideoFrame
from media.source import Source, SourceEnded, VideoSource
from media.tracks import EncodedTrack, FrameTrack, SharedPacketizer, prefer_codec

logger = logging.getLogger(__name__)

FanoutState = Literal["idle", "running", "paused", "closed"]

KEYFRAME_CATCHUP_S = 0.2
"""At most this often, a keyframe is forced for peers still waiting for their first one."""


@dataclass(frozen=True)
class PeerStats:
    """One subscriber's counters."""

    track_id: str
    mode: str
    started: bool
    sent: int
    dropped: int
    skipped: int
    bandwidth: int | None


@dataclass(frozen=True)
class FanoutStats:
    """A snapshot of a fan-out's counters."""

    frames_in: int
    """Frames pulled from the source."""
    encodes: int
    """Frames the shared encoder encoded (once each, whatever the number of peers)."""
    keyframes: int
    keyframe_requests: int
    """Requests received (PLI/FIR, first recv, overflow); several may collapse into one keyframe."""
    bitrate: int
    """The encoder's current target (bps)."""
    rebuilds: int
    peers: list[PeerStats] = field(default_factory=list)
    passed_through: int = 0
    """Frames sent as the source brought them encoded (``EncodedVideoFrame``), not encoded here."""


PeerTrack = TypeVar("PeerTrack", EncodedTrack, FrameTrack)


class _SourcePump(Generic[PeerTrack]):
    """Pulls one source in a task; pause/resume/replace; hands frames to ``_handle``; keeps the
    subscribed peers' tracks."""

    def __init__(self, source: Source[Any] | None, name: str) -> None:
        self._tracks: list[PeerTrack] = []
        self._source = source
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._in_recv = False
        """The pump's task is suspended in ``source.recv()`` (``_interrupt`` may cancel it)."""
        self._interrupting = False
        """``_interrupt`` cancelled the pump's task; ``_absorb_interrupt`` takes that cancellation back."""
        self._wake = asyncio.Event()
        self._paused = False
        self._closed = False
        self._source_ended = False
        self._t0: float | None = None
        self._last_pts = -1
        self.frames_in = 0

    @property
    def source(self) -> Source[Any] | None:
        return self._source

    @property
    def tracks(self) -> tuple[PeerTrack, ...]:
        """Current subscribers."""
        return tuple(self._tracks)

    def subscribe(self) -> PeerTrack:
        """A new peer track (starts the pump if needed)."""
        self._check_open()
        track = self._new_track()
        self._tracks.append(track)
        self.start()
        return track

    def unsubscribe(self, track: Any) -> None:
        """Forget ``track`` (also happens when aiortc stops it)."""
        if track in self._tracks:
            self._tracks.remove(track)
            if track.readyState == "live":
                track.stop()
            self._on_unsubscribe()

    def _new_track(self) -> PeerTrack:
        raise NotImplementedError

    def _on_unsubscribe(self) -> None:
        pass

    @property
    def state(self) -> FanoutState:
        if self._closed:
            return "closed"
        if self._paused:
            return "paused"
        return "running" if self._task is not None else "idle"

    def start(self) -> None:
        """Start pulling (``subscribe`` does it too). Needs a running event loop."""
        self._check_open()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"callrt-{self._name}")
            self._task.add_done_callback(self._task_done)

    def pause(self) -> None:
        """Stop pulling and sending; peers keep their tracks and transceivers (mute)."""
        self._check_open()
        self._paused = True
        self._interrupt()

    def resume(self) -> None:
        """Pull and send again (after ``pause()`` or after the source ended); starts with a keyframe."""
        self._check_open()
        self._paused = False
        self._source_ended = False
        self._on_resume()
        self._wake.set()

    @property
    def paused(self) -> bool:
        return self._paused

    def replace_source(self, source: Source[Any] | None) -> Source[Any] | None:
        """Pull from ``source`` from now on (e.g. another camera); returns the previous one, not stopped."""
        self._check_open()
        old, self._source = self._source, source
        self._source_ended = False
        self._interrupt()
        self._on_resume()
        self._wake.set()
        return old

    async def aclose(self) -> None:
        """Stop the pump and end every peer's track. Idempotent."""
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for t in list(self._tracks):
            t.stop()
        self._tracks.clear()
        self._on_close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- internals ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise PipelineClosed(f"{self._name} is closed")

    def _interrupt(self) -> None:
        """Stop waiting for the source's frame (pause, another source): cancel the pump's task there."""
        task = self._task
        if self._in_recv and not self._interrupting and task is not None and not task.done():
            self._interrupting = True
            task.cancel()
        self._wake.set()

    def _absorb_interrupt(self, me: asyncio.Task[Any] | None) -> bool:
        """Withdraw ``_interrupt``'s cancellation once ``recv()`` is left (however it ended). True if there was one."""
        if not self._interrupting:
            return False
        self._interrupting = False
        if me is not None:
            me.uncancel()
        return True

    def _clock_pts(self, loop: asyncio.AbstractEventLoop) -> int:
        now = loop.time()
        if self._t0 is None:
            self._t0 = now
        pts = int((now - self._t0) * 90_000)
        if pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        while True:
            source = self._source
            if self._paused or source is None or self._source_ended:
                await self._wake.wait()
                self._wake.clear()
                continue
            # awaited directly (a task per frame costs a loop turn); _interrupt() cancels this task
            self._in_recv = True
            error: BaseException | None = None
            try:
                frame = await source.recv()
            except BaseException as exc:  # every outcome is handled below, once the wait is over
                error = exc
            self._in_recv = False
            interrupted = self._absorb_interrupt(me)
            if me is not None and me.cancelling():
                # aclose(); also when the source's recv() ended instead of re-raising the
                # cancellation: honour it here or aclose() would wait forever
                raise asyncio.CancelledError from None
            if isinstance(error, asyncio.CancelledError):
                continue  # paused or replaced while waiting for a frame
            if isinstance(error, SourceEnded):
                if source is self._source:
                    logger.info("%s: source %s ended; idle until resume() or replace_source()",
                                self._name, source.name)
                    self._source_ended = True
                continue
            if isinstance(error, Exception):
                # A device error (e.g. a camera unplugged) must not kill the peers' tracks.
                if source is self._source:
                    logger.error("%s: source %s failed; idle until resume() or replace_source()",
                                 self._name, source.name, exc_info=error)
                    self._source_ended = True
                continue
            if error is not None:
                raise error  # KeyboardInterrupt, SystemExit
            if interrupted or self._paused or source is not self._source:
                continue
            self.frames_in += 1
            try:
                await self._handle(frame, self._clock_pts(loop))
            except MediaError:
                logger.exception("%s: dropping a frame", self._name)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s stopped", self._name, exc_info=task.exception())

    async def _handle(self, frame: Any, pts: int) -> None:
        raise NotImplementedError

    def _on_resume(self) -> None:
        pass

    def _on_close(self) -> None:
        """Release what a subclass holds (the peers' tracks are already stopped)."""


class _EncodedPump(_SourcePump[EncodedTrack]):
    """What the two encode-once fan-outs share: adding a peer, and telling raw-mode peers apart."""

    codec: str

    def add_to(self, pc: RTCPeerConnection) -> RTCRtpSender:
        """Subscribe, add the track to ``pc``, hook its sender and prefer our codec. Returns the sender."""
        track = self.subscribe()
        sender = pc.addTrack(track)
        track.bind_sender(sender)
        for transceiver in pc.getTransceivers():
            if transceiver.sender is sender:
                prefer_codec(transceiver, self.codec)
        return sender

    def _encoded_peers(self, frame: VideoFrame | AudioFrame, raw_pts: int | None) -> list[EncodedTrack]:
        """Started peers that take the shared packets; raw-mode peers get ``frame`` here instead."""
        encoded = []
        for t in self._tracks:
            if not t.started:
                continue
            if t.mode == "raw":
                t.offer_frame(frame, raw_pts)
            else:
                encoded.append(t)
        return encoded


class EncodedVideoFanout(_EncodedPump):
    """One encoder per video source; every subscribed peer gets its packets (module doc).

    ``subscribe()`` returns an ``EncodedTrack`` for one peer; ``add_to(pc)`` also adds it to the
    peer connection, binds the keyframe/REMB hook and prefers the fan-out's codec.
    """

    def __init__(
        self,
        source: VideoSource | None,
        codec: VideoCodecName = "vp8",
        *,
        bitrate: int | None = None,
        fps: float | None = None,
        settings: VideoEncoderSettings | None = None,
        queue_size: int = 8,
    ) -> None:
        s = settings or VideoEncoderSettings(codec=codec)
        overrides: dict[str, Any] = {}
        if bitrate is not None:
            overrides["bitrate"] = bitrate
            if bitrate > s.max_bitrate:
                overrides["max_bitrate"] = bitrate
        if fps is not None:
            overrides["fps"] = fps
        if overrides:
            s = replace(s, **overrides)
        super().__init__(source, f"fanout-{s.codec}")
        self.encoder = VideoEncoder(s)
        self.codec: VideoCodecName = s.codec
        self.queue_size = queue_size
        self._worker = Worker(f"callrt-enc-{s.codec}")
        self.packetizer = SharedPacketizer()
        """Splits each packet into RTP payloads once for every peer (``media.tracks``)."""
        self._last_catchup = float("-inf")
        self.frames_handled = 0
        """Source frames this fan-out finished with (encoded, or skipped with no started peer)."""
        self.encodes_done = 0
        """Encoder calls made for them: one per handled frame at most, however many peers."""
        self.passed_through = 0
        """Handled frames whose packet an ``EncodedVideoFrame`` brought ready-made (not encoded here)."""
        self._replaying = False
        self.keyframe_requests = 0

    def _new_track(self) -> EncodedTrack:
        # bind it with ``track.bind_sender(sender)`` (``add_to`` does)
        return EncodedTrack(self, self.codec, self.queue_size)

    def _on_unsubscribe(self) -> None:
        self._apply_bandwidth_policy()  # its bandwidth estimate leaves the policy

    def request_keyframe(self, track: Any = None) -> None:
        """Make the shared encoder's next frame a keyframe (from any peer, or the application)."""
        self.keyframe_requests += 1
        self.encoder.force_keyframe()

    def report_bandwidth(self, track: Any, bps: int) -> None:
        """A peer's bandwidth estimate (REMB); re-applies the lowest-peer-wins policy."""
        track.bandwidth = int(bps)
        self._apply_bandwidth_policy()

    def set_bitrate(self, bps: int) -> None:
        """The target used while no peer has reported an estimate (also the new default)."""
        self.encoder.settings = replace(self.encoder.settings, bitrate=int(bps))
        self._apply_bandwidth_policy()

    def stats(self) -> FanoutStats:
        e = self.encoder
        return FanoutStats(
            frames_in=self.frames_in,
            encodes=e.encodes,
            keyframes=e.keyframes,
            keyframe_requests=self.keyframe_requests,
            bitrate=e.bitrate,
            rebuilds=e.rebuilds,
            peers=[
                PeerStats(t.id, t.mode, t.started, t.sent, t.dropped, t.skipped, t.bandwidth)
                for t in self._tracks
            ],
            passed_through=self.passed_through,
        )

    def _apply_bandwidth_policy(self) -> None:
        estimates = [t.bandwidth for t in self._tracks if t.bandwidth is not None and t.mode == "encoded"]
        target = min(estimates) if estimates else self.encoder.settings.bitrate
        if target != self.encoder.bitrate:
            logger.debug("%s: target bitrate %d bps (%d estimates)", self._name, target, len(estimates))
        self.encoder.set_bitrate(target)

    def _on_first_recv(self, track: Any) -> None:
        self.request_keyframe(track)

    def _on_resume(self) -> None:
        self.request_keyframe()

    async def _handle(self, frame: VideoFrame, pts: int) -> None:
        encoded = self._encoded_peers(frame, pts)
        if not encoded:
            self.frames_handled += 1
            return  # nobody needs packets yet: do not spend an encode
        replayed = False
        if isinstance(frame, EncodedVideoFrame) and frame.codec == self.codec and frame.packet:
            packets = [self._as_is(frame, pts)]
            self.passed_through += 1
            replayed = True
        else:
            if self._replaying:
                self.encoder.force_keyframe()  # the peers' decoders hold the replay's reference, not ours
            # Wrapped for PyAV in the encoder's thread, not on the event loop.
            packets = await self._worker.run(self.encoder.encode, frame, pts=pts)
            self.encodes_done += 1
        self._replaying = replayed
        self.frames_handled += 1  # counted together on the loop: encodes_done / frames_handled is exact
        for packet in packets:
            for t in encoded:
                t.offer(packet)
        # A peer whose first recv() (and keyframe request) landed while this frame was being encoded
        # missed that keyframe; without another request it would wait for the next periodic one.
        if any(t.started and t.waiting_for_keyframe for t in self._tracks):
            now = asyncio.get_running_loop().time()
            if now - self._last_catchup >= KEYFRAME_CATCHUP_S:
                self._last_catchup = now
                self.request_keyframe()

    def _as_is(self, frame: EncodedVideoFrame, pts: int) -> av.Packet:
        packet = av.Packet(frame.packet)
        packet.pts = pts
        packet.time_base = VIDEO_TIME_BASE
        packet.is_keyframe = frame.keyframe
        return packet

    def _on_close(self) -> None:
        self._worker.close(final=self.encoder.close)  # after an encode still running, if any


def audio_level_dbov(samples: np.ndarray) -> int:
    """RFC 6465 level of int16 samples in dBov, -127 (silence) .. 0 (full scale), as aiortc sends it."""
    if samples.size == 0:
        return -127
    x = samples.reshape(-1).astype(np.float32)
    mean_square = float(np.dot(x, x)) / (x.size * 32767.0 * 32767.0)
    if mean_square <= 0:
        return -127
    return round(max(-127.0, min(0.0, 10 * math.log10(mean_square))))


class EncodedAudioFanout(_EncodedPump):
    """One Opus encoder per audio source; every subscribed peer gets its packets (module doc).

    Input of any rate and channel count: 48 kHz passes straight through (mono stays mono, half
    the encoding work of stereo), anything else goes through one stateful resampler. RTP time is
    continuous: a pause or a source switch does not move it backwards, a source's own gap (an
    overrun) stays a gap. A peer that negotiated another codec than Opus falls back to raw frames
    that aiortc encodes for it alone.
    """

    codec = "opus"

    def __init__(self, source: Source[Any] | None = None, *, bitrate: int | None = None,
                 queue_size: int = 4) -> None:
        super().__init__(source, "fanout-opus")
        self.queue_size = queue_size
        self.settings = AudioEncoderSettings(bitrate=bitrate) if bitrate is not None else AudioEncoderSettings()
        self._encoders: dict[int, AudioEncoder] = {}
        self._resampler: Resampler | None = None
        self._rtp_pts = 0
        self._src_next: int | None = None
        self.frames_handled = 0
        self.packets = 0
        """Opus packets sent (encoded once each, or passed through, whatever the number of peers)."""
        self.passed_through = 0
        """Of those, packets an ``OpusAudioFrame`` brought ready-made (not encoded here)."""

    def _new_track(self) -> EncodedTrack:
        return EncodedTrack(self, "opus", self.queue_size, kind="audio")

    def request_keyframe(self, track: Any = None) -> None:
        """Nothing to do: every Opus packet decodes on its own."""

    def report_bandwidth(self, track: Any, bps: int) -> None:
        """Kept for the track protocol: the Opus rate is the configured one (REMB is for video)."""
        track.bandwidth = int(bps)

    def _on_first_recv(self, track: Any) -> None:
        pass

    def _on_resume(self) -> None:
        self._src_next = None  # a new stretch of source time; RTP time continues from where it was

    def _encoder(self, channels: int) -> AudioEncoder:
        enc = self._encoders.get(channels)
        if enc is None:
            enc = self._encoders[channels] = AudioEncoder(replace(self.settings, channels=channels))
        return enc

    def _encode(self, frame: AudioFrame) -> tuple[list[av.Packet], int]:
        if frame.sample_rate == AUDIO_SAMPLE_RATE and frame.channels in (1, 2):
            if self._src_next is not None and frame.pts > self._src_next:
                self._rtp_pts += frame.pts - self._src_next  # the source skipped samples: keep the gap
            self._src_next = frame.pts + frame.num_samples
            if self._takes_as_is(frame):
                return self._as_is(frame)  # type: ignore[arg-type]
            frames = [frame]
        else:
            channels = min(frame.channels, 2)
            if self._resampler is None or self._resampler.channels != channels:
                self._resampler = Resampler(AUDIO_SAMPLE_RATE, channels)
            frames = self._resampler.resample(frame)
        packets: list[av.Packet] = []
        for f in frames:
            rtp_frame = AudioFrame(f.samples, f.sample_rate, self._rtp_pts, f.capture_time)
            packets += self._encoder(f.channels).encode(rtp_frame)
            self._rtp_pts += f.num_samples
        return packets, audio_level_dbov(frame.samples)

    def _takes_as_is(self, frame: AudioFrame) -> bool:
        """A pre-encoded 48 kHz frame of exactly one packet, at a packet boundary of our encoder."""
        if not isinstance(frame, OpusAudioFrame) or not frame.opus:
            return False
        if frame.num_samples != AUDIO_SAMPLE_RATE * self.settings.frame_ms // 1000:
            return False
        enc = self._encoders.get(frame.channels)
        return enc is None or enc.pending_samples == 0

    def _as_is(self, frame: OpusAudioFrame) -> tuple[list[av.Packet], int]:
        packet = av.Packet(frame.opus)
        packet.pts = self._rtp_pts
        packet.time_base = OPUS_TIME_BASE
        self._rtp_pts += frame.num_samples
        self.passed_through += 1
        level = frame.level if frame.level is not None else audio_level_dbov(frame.samples)
        return [packet], level

    async def _handle(self, frame: AudioFrame, pts: int) -> None:
        encoded = self._encoded_peers(frame, None)
        self.frames_handled += 1
        if not encoded:
            return
        with translate(EncodeError, "opus fan-out"):
            packets, level = self._encode(frame)
        self.packets += len(packets)
        for packet in packets:
            for t in encoded:
                t.offer(packet, level)

    def _on_close(self) -> None:
        self._encoders.clear()


class FrameFanout(_SourcePump[FrameTrack]):
    """One source, raw frames to every subscribed peer; aiortc encodes per peer."""

    def __init__(self, source: Source[Any] | None, *, kind: Literal["audio", "video"] | None = None,
                 queue_size: int = 4) -> None:
        if kind is None:
            if source is None:
                raise ValueError("pass kind= when starting without a source")
            kind = source.kind
        super().__init__(source, f"frame-fanout-{kind}")
        self.kind: Literal["audio", "video"] = kind
        self.queue_size = queue_size

    def _new_track(self) -> FrameTrack:
        return FrameTrack(self, self.kind, self.queue_size)

    def add_to(self, pc: RTCPeerConnection) -> RTCRtpSender:
        """Subscribe and add the track to ``pc``; returns the sender."""
        return pc.addTrack(self.subscribe())

    def request_keyframe(self, track: Any = None) -> None:
        """Nothing to do: aiortc's per-peer encoder handles its own keyframe requests."""

    def report_bandwidth(self, track: Any, bps: int) -> None:
        """Nothing to do: aiortc's per-peer encoder takes REMB itself."""

    def _on_first_recv(self, track: Any) -> None:
        pass

    async def _handle(self, frame: VideoFrame | AudioFrame, pts: int) -> None:
        video_pts = None if isinstance(frame, AudioFrame) else pts
        for t in self._tracks:
            if t.started:
                t.offer(frame, video_pts)
