"""aiortc ``MediaStreamTrack``s that feed a peer connection from callrt sources and fan-outs.

* ``EncodedTrack``: one peer's view of an ``EncodedVideoFanout`` or ``EncodedAudioFanout``;
  ``recv()`` returns the shared encoder's ``av.Packet``s, which aiortc's ``RTCRtpSender``
  packetizes without re-encoding (its ``_next_encoded_frame`` calls ``encoder.pack(packet)`` for
  anything that is not a Frame).
* ``FrameTrack``: one peer's view of a ``FrameFanout``; ``recv()`` returns ``av`` frames that
  aiortc encodes for that peer (fine for Opus: 0.1 ms per 20 ms packet).
* ``SourceTrack``: a single peer pulling straight from one source.

The sender hook (``EncodedTrack.bind_sender``) is the deliberate path from a peer's RTCP to the
shared encoder. aiortc turns a PLI/FIR into a private flag read only by the sender's own
encoder, and applies REMB to that (unused) encoder, so the hook wraps methods on the one
``RTCRtpSender`` instance (never the class):

* ``_send_keyframe``: still sets aiortc's flag, and also asks the fan-out for a keyframe;
* ``_handle_rtcp_packet``: reports REMB estimates for this sender's SSRC to the fan-out;
* ``send``: checks the negotiated codec; if the remote picked another codec than the fan-out's
  (an answer to an offer that preferred it), the track falls back to raw frames that aiortc
  encodes for that peer alone, and logs a warning. ``prefer_codec`` avoids this on offers;
* ``_next_encoded_frame`` (video): payloads from the fan-out's ``SharedPacketizer``, split once
  for all peers instead of once per peer (VP8 by ``media.vp8_packetize``: aiortc's bytes, less Python).
  While the sender's loop waits for the next packet, ``offer`` sends it at once through that loop's
  ``media.rtp_send`` state instead of queueing it (no wake-up of the sender's loop); if that fails,
  the peer logs it, goes back to its queue and waits for a keyframe (part of the frame may be out);
* ``_run_rtp``: ``media.rtp_send.lean_rtp`` (the same packets with less Python per packet);
* ``_next_encoded_frame`` (audio): aiortc computes the RFC 6465 audio level only for frames it
  encodes itself, so the level the fan-out measured once per packet is put on the RTP frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any, Literal, Protocol

import av
from aiortc import MediaStreamTrack, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs import get_encoder
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpSendParameters
from aiortc.rtcrtpsender import RTCEncodedFrame
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, unpack_remb_fci

from media._queue import DropOldestQueue
from media.avframes import audio_to_av, to_av
from media.codecs import MIME_TYPES
from media.errors import PipelineClosed, UnsupportedFormat
from media.frames import VIDEO_TIME_BASE, AudioFrame, PlanarVideoFrame, VideoFrame
from media.rtp_send import lean_rtp
from media.source import Source, SourceEnded
from media.vp8_packetize import Vp8Packetizer

logger = logging.getLogger(__name__)

TrackMode = Literal["encoded", "raw"]


class TrackOwner(Protocol):
    """What a fan-out offers its tracks (kept as a protocol so this module does not import fanout)."""

    def unsubscribe(self, track: Any) -> None: ...
    def request_keyframe(self, track: Any = None) -> None: ...
    def report_bandwidth(self, track: Any, bps: int) -> None: ...
    def _on_first_recv(self, track: Any) -> None: ...


class SharedPacketizer:
    """Splits each encoded packet into RTP payloads once for all the peers of one fan-out.

    aiortc's sender asks its own payloader (``encoder.pack``) for every packet it sends: with N
    peers, N identical VP8 payload splits per frame (a descriptor object and a bytes join per
    RTP packet). The peers of a fan-out send the very same ``av.Packet`` objects, so the first
    peer to send one packs it and the others reuse the payloads, picture ID included (a peer that
    skipped frames while waiting for a keyframe sees the picture ID jump, as it would after loss).
    The last ``keep`` packets are remembered; every peer's queue is shorter than that.
    """

    def __init__(self, keep: int = 32) -> None:
        self.keep = keep
        self._packers: dict[str, Any] = {}
        self._recent: OrderedDict[int, tuple[av.Packet, list[bytes], int]] = OrderedDict()
        self.packed = 0
        """Packets split (once each, however many peers sent them)."""

    def pack(self, packet: av.Packet, codec: RTCRtpCodecParameters) -> tuple[list[bytes], int]:
        """RTP payloads and timestamp of ``packet`` (``codec``: the negotiated one)."""
        hit = self._recent.get(id(packet))  # each entry keeps its packet alive: the id is not reused
        if hit is not None:
            return hit[1], hit[2]
        packer = self._packers.get(codec.mimeType)
        if packer is None:
            # VP8: callrt's payloader (the same bytes, a third of the Python); others: aiortc's
            vp8 = codec.mimeType.lower() == "video/vp8"
            packer = self._packers[codec.mimeType] = Vp8Packetizer() if vp8 else get_encoder(codec)
        payloads, timestamp = packer.pack(packet)
        self.packed += 1
        self._recent[id(packet)] = (packet, payloads, timestamp)
        if len(self._recent) > self.keep:
            self._recent.popitem(last=False)
        return payloads, timestamp


def frame_to_av(frame: VideoFrame | AudioFrame, pts: int | None = None) -> av.VideoFrame | av.AudioFrame:
    """A fresh PyAV frame for one consumer (never an object another consumer also holds)."""
    if isinstance(frame, AudioFrame):
        return audio_to_av(frame)
    if isinstance(frame, PlanarVideoFrame) and not frame.is_packed:
        frame = VideoFrame(frame.data, pts=frame.pts, time_base=frame.time_base, capture_time=frame.capture_time)
    out = to_av(frame)
    if pts is not None:
        out.pts = pts
        out.time_base = VIDEO_TIME_BASE
    return out


class EncodedTrack(MediaStreamTrack):
    """One peer's subscription to an encoded fan-out (create it with ``fanout.subscribe()``).

    Video queue policy: at most ``maxsize`` packets wait; an encoded video stream cannot lose a
    frame in the middle, so on overflow the queue is flushed, a keyframe is requested, and packets
    are skipped until it arrives. The first ``recv()`` likewise waits for a keyframe (and requests
    one). Audio packets decode on their own (Opus), so an audio track just drops the oldest.
    """

    def __init__(self, owner: TrackOwner, codec: str, maxsize: int = 8,
                 kind: Literal["audio", "video"] = "video") -> None:
        super().__init__()
        self.kind = kind
        self._keyframed = kind == "video"
        self._owner = owner
        self.codec = codec
        self._queue: DropOldestQueue[Any] = DropOldestQueue(maxsize)
        self._raw_queue_size = 2 if kind == "video" else 4
        self.mode: TrackMode = "encoded"
        self.started = False
        """True once the peer's sender called ``recv()`` (the fan-out encodes only for started tracks)."""
        self.bandwidth: int | None = None
        """The peer's latest REMB estimate (bps), if it sent one."""
        self.sender: RTCRtpSender | None = None
        self.sent = 0
        self.skipped = 0
        """Packets not sent because this peer was waiting for a keyframe."""
        self._need_keyframe = self._keyframed
        self._last_level: int | None = None
        self._push: Any = None
        """Set by ``bind_sender`` (video, shared packetizer): sends a packet at once, or returns False."""

    @property
    def dropped(self) -> int:
        """Packets flushed from this peer's queue because it fell behind."""
        return self._queue.dropped

    @property
    def waiting_for_keyframe(self) -> bool:
        """True while this peer skips packets until a keyframe arrives."""
        return self.mode == "encoded" and self._need_keyframe and self.readyState == "live"

    def offer(self, packet: av.Packet, audio_level: int | None = None) -> None:
        """Queue one encoded packet for this peer (called by the fan-out on the loop).

        ``audio_level``: the packet's level in dBov (-127..0, RFC 6465), sent in its RTP header.
        """
        if self.mode != "encoded" or self.readyState != "live":
            return
        if not self._keyframed:
            self._queue.put((packet, audio_level))
            return
        if self._need_keyframe:
            if not packet.is_keyframe:
                self.skipped += 1
                return
            self._need_keyframe = False
        if self._push is not None and self._queue.consumer_waiting:
            try:
                if self._push(packet):
                    self.sent += 1
                    return
            except Exception:  # a bug here must not stop the fan-out: this peer goes back to its queue
                # part of the frame may be out: resending it would break the frame, so start again
                # from a keyframe, as after an overflow
                logger.exception("peer track %s: sending at once failed; back to the sender's loop", self.id)
                self._push = None
                self._need_keyframe = True
                self.skipped += 1
                self._owner.request_keyframe(self)
                return
        if len(self._queue) >= self._queue.maxsize:
            self._queue.clear()
            if not packet.is_keyframe:
                logger.info("peer track %s fell behind: flushed, waiting for a keyframe", self.id)
                self._need_keyframe = True
                self.skipped += 1
                self._owner.request_keyframe(self)
                return
        self._queue.put(packet)

    def offer_frame(self, frame: VideoFrame | AudioFrame, pts: int | None) -> None:
        """Queue one raw frame (raw mode only: aiortc encodes it for this peer)."""
        if self.mode == "raw" and self.readyState == "live":
            self._queue.put((frame, pts))

    def use_raw_frames(self, reason: str) -> None:
        """Switch this peer to raw frames (aiortc encodes them); used when the codec negotiation differs."""
        if self.mode == "raw":
            return
        logger.warning("peer track %s: %s; this peer gets its own encoder (no fan-out)", self.id, reason)
        self.mode = "raw"
        self._queue.clear()
        self._queue.maxsize = self._raw_queue_size

    async def recv(self) -> av.Packet | av.VideoFrame | av.AudioFrame:
        """The next packet (or frame, in raw mode) for aiortc's sender."""
        if self.readyState != "live":
            raise MediaStreamError
        if not self.started:
            self.started = True
            self._need_keyframe = self._keyframed and self.mode == "encoded"
            self._owner._on_first_recv(self)
        try:
            item = await self._queue.get()
        except PipelineClosed:
            self.stop()
            raise MediaStreamError from None
        if isinstance(item, tuple):
            first, second = item
            if isinstance(first, av.Packet):  # audio: (packet, level)
                self._last_level = second
                self.sent += 1
                return first
            return frame_to_av(first, second)
        self.sent += 1
        return item

    def bind_sender(self, sender: RTCRtpSender) -> None:
        """Route ``sender``'s PLI/FIR and REMB to the fan-out (see the module doc). Call before negotiation."""
        if self.sender is sender:
            return
        self.sender = sender
        owner = self._owner
        own_keyframe = sender._send_keyframe
        own_rtcp = sender._handle_rtcp_packet
        own_send = sender.send
        mime = MIME_TYPES[self.codec].lower()

        def send_keyframe() -> None:
            own_keyframe()
            owner.request_keyframe(self)

        async def handle_rtcp_packet(packet: Any) -> None:
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
                try:
                    bitrate, ssrcs = unpack_remb_fci(packet.fci)
                except ValueError:
                    pass
                else:
                    if sender._ssrc in ssrcs:
                        owner.report_bandwidth(self, bitrate)
            await own_rtcp(packet)

        async def send(parameters: RTCRtpSendParameters) -> None:
            codecs = parameters.codecs
            if codecs and codecs[0].mimeType.lower() != mime:
                self.use_raw_frames(f"negotiated {codecs[0].mimeType}, fan-out encodes {mime}")
            await own_send(parameters)

        lean_rtp(sender)
        sender._send_keyframe = send_keyframe  # type: ignore[method-assign]
        sender._handle_rtcp_packet = handle_rtcp_packet  # type: ignore[method-assign]
        sender.send = send  # type: ignore[method-assign]
        shared: SharedPacketizer | None = getattr(owner, "packetizer", None)
        if self.kind == "video" and shared is not None:
            own_next_video = sender._next_encoded_frame

            def shared_frame(packet: av.Packet, codec: Any) -> RTCEncodedFrame | None:
                payloads, timestamp = shared.pack(packet, codec)
                return RTCEncodedFrame(payloads, timestamp, None) if payloads else None  # type: ignore[arg-type]

            async def next_shared_frame(codec: Any) -> Any:
                if self.mode != "encoded":
                    return await own_next_video(codec)  # raw frames: aiortc encodes them for this peer
                packet = await self.recv()
                if not sender._enabled or not isinstance(packet, av.Packet):
                    return None
                return shared_frame(packet, codec)

            sender._next_encoded_frame = next_shared_frame  # type: ignore[method-assign]

            def push(packet: av.Packet) -> bool:
                # the sender's loop waits for this track's next packet: send it now, in the fan-out's
                # turn of the loop, instead of waking that loop for it (one loop turn and one task
                # step less per frame and peer)
                direct = getattr(sender, "_callrt_direct", None)
                if direct is None or not sender._enabled or self.mode != "encoded":
                    return False
                frame = shared_frame(packet, direct.codec)
                return frame is None or bool(direct.send_now(frame))  # no payloads: nothing to send

            self._push = push
        if self.kind == "audio":
            own_next = sender._next_encoded_frame

            async def next_encoded_frame(codec: Any) -> Any:
                frame = await own_next(codec)
                if frame is not None and frame.audio_level is None and self.mode == "encoded":
                    frame.audio_level = self._last_level
                return frame

            sender._next_encoded_frame = next_encoded_frame  # type: ignore[method-assign]

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            self._queue.close()
            self._owner.unsubscribe(self)


class FrameTrack(MediaStreamTrack):
    """One peer's subscription to a ``FrameFanout``: raw frames that aiortc encodes for this peer.

    Bounded to ``maxsize`` frames, dropping the oldest (raw frames are independent, so dropping
    is harmless).
    """

    def __init__(self, owner: TrackOwner, kind: Literal["audio", "video"], maxsize: int = 4) -> None:
        super().__init__()
        self.kind = kind
        self._owner = owner
        self._queue: DropOldestQueue[tuple[VideoFrame | AudioFrame, int | None]] = DropOldestQueue(maxsize)
        self.started = False
        self.sent = 0

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    def offer(self, frame: VideoFrame | AudioFrame, pts: int | None = None) -> None:
        if self.readyState == "live":
            self._queue.put((frame, pts))

    async def recv(self) -> av.VideoFrame | av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if not self.started:
            self.started = True
            self._owner._on_first_recv(self)
        try:
            frame, pts = await self._queue.get()
        except PipelineClosed:
            self.stop()
            raise MediaStreamError from None
        self.sent += 1
        return frame_to_av(frame, pts)

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            self._queue.close()
            self._owner.unsubscribe(self)


class SourceTrack(MediaStreamTrack):
    """A track pulling straight from one source for one peer (aiortc encodes).

    Video frames get pts from a monotonic 90 kHz clock started at the first frame, so a
    replaced or restarted source never makes RTP time go backwards. Ends (``MediaStreamError``)
    when the source ends. For several peers use ``FrameFanout`` or ``EncodedVideoFanout``.
    """

    def __init__(self, source: Source[Any]) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source
        self._t0: float | None = None
        self.sent = 0

    async def recv(self) -> av.VideoFrame | av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            frame = await self.source.recv()
        except SourceEnded:
            self.stop()
            raise MediaStreamError from None
        self.sent += 1
        if isinstance(frame, AudioFrame):
            return audio_to_av(frame)
        loop_time = asyncio.get_running_loop().time()
        if self._t0 is None:
            self._t0 = loop_time
        return frame_to_av(frame, int((loop_time - self._t0) * 90_000))


def prefer_codec(transceiver: RTCRtpTransceiver, codec: str) -> None:
    """Put ``codec`` (``vp8``/``h264``/``opus``) first in ``transceiver``'s preferences, keeping the rest.

    Call before ``createOffer``; on the answering side the remote offer's order decides.
    """
    mime = MIME_TYPES.get(codec)
    if mime is None:
        raise UnsupportedFormat(f"unknown codec {codec!r}")
    caps = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    first = [c for c in caps if c.mimeType.lower() == mime.lower()]
    if not first:
        raise UnsupportedFormat(f"aiortc cannot negotiate {mime}")
    transceiver.setCodecPreferences(first + [c for c in caps if c not in first])
