"""A shorter receive path for aiortc's ``RTCRtpReceiver``: the same processing, less Python per packet.

In aiortc every received RTP packet is parsed by ``stun.parse_message`` (to see it is not STUN),
queued by aioice, taken by the DTLS transport's reader task (an ``asyncio.Queue`` hop and a task
wake-up), SRTP-unprotected, parsed into an ``RtpPacket`` with a ``HeaderExtensions`` object,
routed, and handed to ``RTCRtpReceiver._handle_rtp_packet`` (a coroutine), which feeds the
bandwidth estimator, reads the clock through ``datetime`` and parses the VP8 descriptor into an
object. At 640x480 and 30 fps (about 5 packets a frame) that was most of what the event loop
spent per received frame besides the codecs.

``lean_receive(receiver)`` marks one receiver (the instance, never the class) for the short way.
Once packets of one of its SSRCs have been routed to it by aiortc (the first ones always take
aiortc's path, so routing stays aiortc's), the ICE sockets of its transport hand that SSRC's
datagrams straight to ``LeanReceive.datagram``: unprotect with the transport's SRTP session,
unpack the 12-byte header and the one-byte header extensions with ``struct``, strip the VP8
descriptor by offset, and feed the receiver's own statistics, NACK generator, jitter buffer,
decoder hand-off and stall watch (``media.stall_recovery``), exactly as ``_handle_rtp_packet``
does, except that every frame the jitter buffer has ready goes to the decoder, not only the first
(``pop_ready`` of ``media.frame_assembly``'s buffers: after a filled hole). RTCP, DTLS, STUN,
retransmissions (RTX), packets with CSRCs, padding or two-byte header extensions, and unknown
payload types take aiortc's path (the last three parsed by aiortc and handed to its handler).

One difference, deliberate: the bandwidth estimator (REMB) gets one entry per run of packets
that share an abs-send-time (a frame, from our sender) with their summed size and the last
arrival time, instead of one entry per packet. Its inter-arrival filter groups packets sent
within 5 ms anyway, so it sees the same groups, sizes and arrival times; its rate counter sees
the same bytes. That is ~70 us of Python per packet less at 640x480.

A receiver whose packet handler was replaced by something other than aiortc's own or a stall
watch (a test's loss injector) keeps aiortc's path. The hook relies on private attributes of
aiortc 1.x and aioice; when they are missing it leaves the receiver alone (and says so once in
the log). ``CALLRT_RTP_RECEIVE=aiortc`` keeps aiortc's path everywhere.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Coroutine
from struct import Struct
from typing import Any

import pylibsrtp
from aiortc import RTCRtpReceiver
from aiortc.clock import current_datetime
from aiortc.codecs import depayload, is_rtx
from aiortc.rtcdtlstransport import State
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, RtpPacket, pack_remb_fci

from media.stall_recovery import StallWatch

logger = logging.getLogger(__name__)

ENV = "CALLRT_RTP_RECEIVE"
"""``aiortc``: leave every receiver on aiortc's receive path."""

_R = "_RTCRtpReceiver__"
_REQUIRED = ("codecs", "jitter_buffer", "nack_generator", "remote_bitrate_estimator", "remote_streams",
             "active_ssrc", "decoder_error", "decoder_thread", "decoder_queue", "timestamp_mapper", "kind")
"""The receiver's private attributes the short path reads."""
_HEADER = Struct("!BBHLL")
_EXTENSION = Struct("!HH")
READ_SIZE = 65536
"""Bytes asked of the socket per datagram on hooked ICE sockets: any UDP payload fits (IPv4's
largest is 65507 bytes). asyncio asks 256 KiB, above glibc's initial mmap threshold: until the
process has freed a block that large (which raises the threshold), every read maps, shrinks and
unmaps a fresh buffer, 16-20 us per datagram here against 1.5-2 us for 64 KiB."""
DRAIN_MAX = 32
"""Datagrams read from the socket in one go after one that took the short path."""
_NTP_OFFSET_S = 2208988800  # 1900 -> 1970: aiortc's clock.current_ms() counts from the NTP epoch
_warned = False


class _Packet:
    """What aiortc's statistics, NACK generator, jitter buffer and the stall watch read of a packet."""

    __slots__ = ("_data", "marker", "payload", "payload_type", "sequence_number", "ssrc", "timestamp")

    def __init__(self, sequence_number: int, timestamp: int, ssrc: int, payload_type: int, marker: int,
                 payload: bytes) -> None:
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.marker = marker
        self.payload = payload
        self._data = b""


def vp8_payload(payload: bytes) -> bytes:
    """The VP8 bitstream in an RTP payload: its descriptor (RFC 7741 section 4.2) skipped by offset.

    Raises ValueError on a truncated descriptor, as aiortc's ``vp8_depayload`` does.
    """
    n = len(payload)
    if n < 1:
        raise ValueError("VPX descriptor is too short")
    pos = 1
    if payload[0] & 0x80:  # X: extended control bits follow
        if n < 2:
            raise ValueError("VPX descriptor has truncated extended bits")
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: picture id, 7 or 15 bits
            if n < 3:
                raise ValueError("VPX descriptor has truncated PictureID")
            pos += 2 if payload[2] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID/Y/KEYIDX
            pos += 1
        if n < pos:
            raise ValueError("VPX descriptor is truncated")
    return payload[pos:]


def one_byte_extension(data: bytes, start: int, end: int, wanted: int) -> int | None:
    """The 3-byte value of one-byte header extension ``wanted`` in ``data[start:end]`` (RFC 8285 4.2).

    None when it is absent, has another length, or the block is malformed (an element running past
    ``end``): the packet is still used, as aiortc would use it without the value.
    """
    pos = start
    while pos < end:
        b = data[pos]
        if b == 0:  # padding between elements
            pos += 1
            continue
        x_id, size = b >> 4, (b & 0x0F) + 1
        if x_id == 15 or pos + size >= end:
            return None
        if x_id == wanted:
            if size != 3:
                return None
            return (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]
        pos += 1 + size
    return None


class LeanReceive:
    """One receiver's media packets the short way (module doc).

    ``handled`` counts packets that took it, ``deferred`` those it handed to aiortc's handler.
    """

    def __init__(self, receiver: RTCRtpReceiver) -> None:
        r: Any = receiver
        self.receiver = receiver
        self.handled = 0
        self.deferred = 0
        self._codecs: dict[int, Any] = getattr(r, _R + "codecs")
        self._jitter = getattr(r, _R + "jitter_buffer")
        self._nack = getattr(r, _R + "nack_generator")
        self._estimator = getattr(r, _R + "remote_bitrate_estimator")
        self._streams: dict[int, StreamStatistics] = getattr(r, _R + "remote_streams")
        self._active: dict[int, Any] = getattr(r, _R + "active_ssrc")
        self._decoder_error = getattr(r, _R + "decoder_error")
        self._mapper = getattr(r, _R + "timestamp_mapper")
        self._video = getattr(r, _R + "kind") == "video"
        self._tasks: set[asyncio.Future[Any]] = set()
        self._last_timestamp: int | None = None
        # the run of packets with one abs-send-time not yet given to the estimator
        self._group_send_time: int | None = None
        self._group_bytes = 0
        self._group_arrival = 0
        self._group_ssrc = 0
        self._abs_send_time_id: int | None = None

    # -- eligibility ---------------------------------------------------------------------------

    def route(self) -> tuple[LeanReceive, StallWatch | None] | None:
        """(self, the stall watch to call after each packet), or None when the handler is foreign."""
        handler = self.receiver._handle_rtp_packet
        if getattr(handler, "__func__", None) is RTCRtpReceiver._handle_rtp_packet:
            return self, None
        watch = getattr(handler, "__self__", None)
        if (isinstance(watch, StallWatch)
                and getattr(watch._own, "__func__", None) is RTCRtpReceiver._handle_rtp_packet):
            return self, watch
        return None

    # -- per packet ----------------------------------------------------------------------------

    def datagram(self, data: bytes, hook: _TransportHook, stall: StallWatch | None) -> None:
        """An SRTP datagram of one of this receiver's SSRCs, straight from the socket."""
        dtls = hook.dtls
        arrival_ms = int((time.time() + _NTP_OFFSET_S) * 1000)
        try:
            data = dtls._rx_srtp.unprotect(data)
        except pylibsrtp.Error as exc:
            logger.debug("x SRTP unprotect failed: %s", exc)
            return
        r: Any = self.receiver
        if not r._enabled:
            return
        first, marker_pt, seq, timestamp, ssrc = _HEADER.unpack_from(data)
        if dtls._rtp_router.ssrc_table.get(ssrc) is not r:  # stopped, or the SSRC moved: aiortc routes it
            hook.routes.pop(data[8:12], None)
            return
        pt = marker_pt & 0x7F
        codec = self._codecs.get(pt)
        if first & 0x2F or codec is None or is_rtx(codec):
            self._defer(data, dtls, arrival_ms)  # padding, CSRCs, RTX, unknown payload type
            return
        offset = 12
        abs_send_time = None
        if first & 0x10:
            if len(data) < 16:
                return
            profile, words = _EXTENSION.unpack_from(data, 12)
            offset = 16 + 4 * words
            if profile != 0xBEDE or len(data) < offset:
                self._defer(data, dtls, arrival_ms)  # two-byte extensions: aiortc parses them
                return
            wanted = self._abs_send_time_id
            if wanted is None:
                wanted = self._abs_send_time_id = self._find_abs_send_time_id(dtls)
            abs_send_time = one_byte_extension(data, 16, offset, wanted)
        self.handled += 1
        payload = data[offset:]
        packet = _Packet(seq, timestamp, ssrc, pt, marker_pt >> 7, payload)

        if self._estimator is not None and abs_send_time is not None:
            if self._group_send_time is not None and self._group_send_time != abs_send_time:
                self._flush_group()
            self._group_send_time = abs_send_time
            self._group_bytes += len(payload)
            self._group_arrival = arrival_ms
            self._group_ssrc = ssrc
            if packet.marker:
                self._flush_group()

        if timestamp != self._last_timestamp:  # aiortc stamps every packet; once a frame is enough
            self._last_timestamp = timestamp
            self._active[ssrc] = current_datetime()
        stats = self._streams.get(ssrc)
        if stats is None:
            stats = self._streams[ssrc] = StreamStatistics(codec.clockRate)
        stats.add(packet)  # type: ignore[arg-type]

        nack = self._nack
        if nack is not None and nack.add(packet):
            self._spawn(r._send_rtcp_nack(ssrc, sorted(nack.missing)))

        try:
            if not payload:
                packet._data = b""
            elif codec.name == "VP8":
                packet._data = vp8_payload(payload)
            else:
                packet._data = depayload(codec, payload)
        except ValueError as exc:
            logger.debug("x RTP payload parsing failed: %s", exc)
            return

        pli, frame = self._jitter.add(packet)
        if self._decoder_error.is_set():
            self._decoder_error.clear()
            pli = pli or self._video  # lost picture data: ask for a keyframe (RFC 4585 6.3.1.1)
        if frame is not None and getattr(r, _R + "decoder_thread"):
            decoder_queue, mapper = getattr(r, _R + "decoder_queue"), self._mapper
            ready = getattr(self._jitter, "pop_ready", None)  # media.frame_assembly: more may be complete
            while frame is not None:
                frame.timestamp = mapper.map(frame.timestamp)
                decoder_queue.put((codec, frame))
                frame = ready() if ready is not None else None
        if stall is not None and stall.check(packet):
            pli = True
        if pli:
            self._spawn(r._send_rtcp_pli(ssrc))

    def _flush_group(self) -> None:
        send_time, self._group_send_time = self._group_send_time, None
        size, self._group_bytes = self._group_bytes, 0
        if send_time is None or not size:
            return
        remb = self._estimator.add(abs_send_time=send_time, arrival_time_ms=self._group_arrival,
                                   payload_size=size, ssrc=self._group_ssrc)
        rtcp_ssrc = getattr(self.receiver, _R + "rtcp_ssrc", None)
        if remb is not None and rtcp_ssrc is not None:
            self._spawn(self.receiver._send_rtcp(
                RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(*remb))))

    def _find_abs_send_time_id(self, dtls: Any) -> int:
        ids = getattr(dtls._rtp_header_extensions_map, "_HeaderExtensionsMap__ids", None)
        found = getattr(ids, "abs_send_time", None)
        return found if isinstance(found, int) else -1

    def _defer(self, data: bytes, dtls: Any, arrival_ms: int) -> None:
        """aiortc parses it and its handler (with the stall watch, if any) takes it, in a task."""
        try:
            packet = RtpPacket.parse(data, dtls._rtp_header_extensions_map)
        except ValueError as exc:
            logger.debug("x RTP parsing failed: %s", exc)
            return
        self.deferred += 1
        self._spawn(self.receiver._handle_rtp_packet(packet, arrival_time_ms=arrival_ms))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _TransportHook:
    """Per DTLS transport: the socket-side hook and which SSRCs go to which ``LeanReceive``."""

    def __init__(self, dtls: Any) -> None:
        self.dtls = dtls
        self.routes: dict[bytes, tuple[LeanReceive, StallWatch | None] | None] = {}
        """SSRC (4 bytes as on the wire) -> its receiver's short path, or None: aiortc's path."""
        self._own_handle_rtp_data = dtls._handle_rtp_data
        dtls._handle_rtp_data = self._handle_rtp_data
        self._hooked: set[int] = set()
        self._sockets_hooked = False
        self.failed = 0
        """Packets the short path raised on (dropped; the first is logged)."""

    async def _handle_rtp_data(self, data: bytes, arrival_time_ms: int) -> None:
        # aiortc's path (the first packets of every SSRC): once connected, hook the sockets
        if not self._sockets_hooked:
            self._hook_protocols()
        await self._own_handle_rtp_data(data, arrival_time_ms=arrival_time_ms)

    def _hook_protocols(self) -> None:
        connection = getattr(self.dtls.transport, "_connection", None)
        for protocol in getattr(connection, "_protocols", ()):
            if id(protocol) not in self._hooked:
                self._hooked.add(id(protocol))
                protocol.datagram_received = self._datagram_hook(protocol)
                transport: Any = getattr(protocol, "transport", None)
                if getattr(transport, "max_size", 0) > READ_SIZE:
                    transport.max_size = READ_SIZE  # asyncio's own reads too (READ_SIZE's doc)
        # with a nominated pair the set of sockets is final (aiortc does no ICE restart)
        self._sockets_hooked = bool(getattr(connection, "_nominated", None))

    def _datagram_hook(self, protocol: Any) -> Any:
        """A protocol's ``datagram_received``: RTP of a known SSRC the short way, the rest to aioice.

        After a datagram that took the short way it reads what else waits on the socket (at most
        ``DRAIN_MAX``): a sender's packets of one frame arrive together, and asyncio reads one
        datagram per loop turn (an ``epoll_wait`` and a turn of the loop each).
        """
        routes, learn, dtls, hook = self.routes, self._learn, self.dtls, self
        own = protocol.datagram_received
        transport = protocol.transport
        sock = getattr(transport, "_sock", None)

        def handle(data: bytes, addr: Any) -> bool:
            # RTP, not RTCP (RTCP's packet types 192-223 sit where RTP's marker and payload type are)
            if len(data) > 12 and 127 < data[0] < 192 and not 191 < data[1] < 224:
                key = data[8:12]
                route = routes.get(key)
                if route is None and key not in routes:
                    route = learn(key)
                if route is not None and dtls._state == State.CONNECTED:
                    dtls._RTCDtlsTransport__rx_bytes += len(data)
                    dtls._RTCDtlsTransport__rx_packets += 1
                    try:
                        route[0].datagram(data, hook, route[1])
                    except Exception:  # a bug here must not cost more than this one packet
                        hook.failed += 1
                        if hook.failed == 1:
                            logger.exception("short receive path failed on a packet; dropped it")
                    return True
            own(data, addr)
            return False

        def datagram_received(data: bytes, addr: Any) -> None:
            if not handle(data, addr) or sock is None:
                return
            for _ in range(DRAIN_MAX):
                if transport.is_closing():
                    return
                try:
                    data, addr = sock.recvfrom(READ_SIZE)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    return  # asyncio reads it again and reports it
                handle(data, addr)

        return datagram_received

    def _learn(self, key: bytes) -> tuple[LeanReceive, StallWatch | None] | None:
        """The short path for this SSRC, once aiortc routed it to a receiver marked for it."""
        ssrc = int.from_bytes(key, "big")
        receiver = self.dtls._rtp_router.ssrc_table.get(ssrc)
        if receiver is None:
            return None  # not routed yet: aiortc routes it first (not remembered, asked again)
        connection = getattr(self.dtls.transport, "_connection", None)
        queue = getattr(connection, "_queue", None)
        if queue is None or not queue.empty():
            return None  # packets still wait on aiortc's path: keep the order, ask again later
        lean = getattr(receiver, "_callrt_lean_receive", None)
        route = lean.route() if isinstance(lean, LeanReceive) else None
        self.routes[key] = route
        return route


def lean_receive(receiver: RTCRtpReceiver) -> LeanReceive | None:
    """Mark ``receiver`` (before it receives) for the short receive path (module doc). Idempotent.

    Returns its ``LeanReceive`` (packet counters), or None when aiortc's internals differ or
    ``CALLRT_RTP_RECEIVE=aiortc`` is set (the receiver is left as aiortc made it).
    """
    global _warned
    current = getattr(receiver, "_callrt_lean_receive", None)
    if isinstance(current, LeanReceive):
        return current
    if os.environ.get(ENV, "").strip().lower() == "aiortc":
        return None
    dtls: Any = receiver.transport
    if (not all(hasattr(receiver, _R + name) for name in _REQUIRED)
            or not all(hasattr(dtls, a) for a in ("_rx_srtp", "_rtp_router", "_state", "_handle_rtp_data",
                                                   "_rtp_header_extensions_map", "_RTCDtlsTransport__rx_bytes"))
            or not hasattr(getattr(dtls, "transport", None), "_connection")):
        if not _warned:
            _warned = True
            logger.info("aiortc receiver internals differ; its own receive path is kept")
        return None
    if not isinstance(getattr(dtls, "_callrt_receive_hook", None), _TransportHook):
        dtls._callrt_receive_hook = _TransportHook(dtls)
    lean = LeanReceive(receiver)
    receiver._callrt_lean_receive = lean  # type: ignore[attr-defined]
    return lean
