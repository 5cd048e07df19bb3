"""A leaner RTP send loop for aiortc's ``RTCRtpSender``: the same packets, less Python per packet.

aiortc's ``RTCRtpSender._run_rtp`` builds an ``RtpPacket`` object for every packet, serialises
its header extensions for every packet (reading the wall clock through ``datetime`` twice), and
hands each packet down four nested coroutines (DTLS transport, ICE transport, aioice connection,
protocol) to one ``sendto``. With the codec off the loop (encode once, ``media.fanout``) that
per-packet Python is most of what a sender costs per extra peer. ``lean_rtp(sender)`` swaps
that one sender's loop (the instance, never the class) for one that, per frame, builds the
header-extension block once (abs-send-time, mid, audio level: the values aiortc would write)
and, per packet, packs the 12-byte header, protects it with the same SRTP session and sends it
on the nominated ICE pair's socket directly.

What stays aiortc's: where frames come from (``_next_encoded_frame``: its packetizer, its
encoder for raw frames), RTCP (its sender reports read the counters kept here), NACK
retransmission (its ``_retransmit`` reads the history kept here, entries that serialise to the
bytes first sent), ``stop()``. Differences, deliberate: the packets of one frame share one
abs-send-time (they leave within one loop turn, < 1 ms; abs-send-time has 4 us steps) and the
NTP time for sender reports is read once per frame. A nominated pair that does not send plain
UDP (a TURN relay) gets each packet through aiortc's own path.

The hook relies on private attributes of aiortc 1.x; when they are missing it leaves the sender
alone (and says so once in the log). ``CALLRT_RTP_SEND=aiortc`` in the environment keeps
aiortc's own loop everywhere (to compare, or should an aiortc release change underneath).
"""

from __future__ import annotations

import asyncio
import logging
import os
import traceback
from dataclasses import dataclass, field
from struct import pack
from typing import Any

from aioice.ice import StunProtocol
from aiortc import RTCRtpSender, clock
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTP_HISTORY_SIZE, random_sequence_number
from aiortc.rtp import HeaderExtensions
from aiortc.utils import random32

logger = logging.getLogger(__name__)

_P = "_RTCRtpSender__"
_REQUIRED = ("rtp_started", "rtp_exited", "rtp_history", "rtp_header_extensions_map", "octet_count",
             "packet_count", "ntp_timestamp", "rtp_timestamp")
_warned = False
ENV = "CALLRT_RTP_SEND"
"""``aiortc``: leave every sender's loop as aiortc made it."""


@dataclass(slots=True)
class SentPacket:
    """What the history keeps of one sent packet: enough for aiortc's ``_retransmit`` (and RTX)."""

    data: bytes
    """The packet as first sent (before SRTP)."""
    sequence_number: int
    timestamp: int
    marker: int
    payload: bytes
    extensions: HeaderExtensions
    payload_type: int
    ssrc: int
    csrc: list[int] = field(default_factory=list)

    def serialize(self, extensions_map: Any = None) -> bytes:
        """The packet as first sent (what ``RtpPacket.serialize`` gives aiortc's retransmission)."""
        return self.data


def lean_rtp(sender: RTCRtpSender) -> bool:
    """Give ``sender`` the lean send loop (module doc); call before it starts sending. Idempotent.

    Returns False (and leaves the sender as aiortc made it) when its internals differ or
    ``CALLRT_RTP_SEND=aiortc`` is set.
    """
    global _warned
    if getattr(sender, "_callrt_lean_rtp", False):
        return True
    if os.environ.get(ENV, "").strip().lower() == "aiortc":
        return False
    if not all(hasattr(sender, _P + name) for name in _REQUIRED) or getattr(sender, _P + "rtp_task", None):
        if not _warned:
            _warned = True
            logger.info("aiortc sender internals differ or it already sends; its own RTP loop is kept")
        return False

    async def run_rtp(codec: RTCRtpCodecParameters) -> None:
        await _run(sender, codec)

    sender._run_rtp = run_rtp  # type: ignore[method-assign]
    sender._callrt_lean_rtp = True  # type: ignore[attr-defined]
    return True


class _Wire:
    """SRTP-protects and sends one RTP packet on the nominated pair's socket, without a coroutine."""

    def __init__(self, dtls: Any) -> None:
        self.dtls = dtls
        self.connection = getattr(dtls.transport, "_connection", None)

    def send_now(self, data: bytes) -> bool:
        """Send ``data``; False when this needs aiortc's path (a relay, or not connected: its errors)."""
        dtls = self.dtls
        conn = self.connection
        pair = conn._nominated.get(1) if conn is not None else None
        if pair is None or dtls._state != State.CONNECTED:
            return False
        protocol = pair.protocol
        if type(protocol) is not StunProtocol or protocol.transport is None:
            return False
        data = dtls._tx_srtp.protect(data)
        protocol.transport.sendto(data, pair.remote_addr)
        dtls._RTCDtlsTransport__tx_bytes += len(data)
        dtls._RTCDtlsTransport__tx_packets += 1
        return True


async def _run(sender: RTCRtpSender, codec: RTCRtpCodecParameters) -> None:
    s: Any = sender
    getattr(s, _P + "rtp_started").set()
    history: dict[int, Any] = getattr(s, _P + "rtp_history")
    ext_map = getattr(s, _P + "rtp_header_extensions_map")
    wire = _Wire(s.transport)
    payload_type: int = codec.payloadType or 0  # always set on negotiated codecs
    sequence_number = random_sequence_number()  # aiortc's: low half, no early wrap (SRTP)
    timestamp_origin = random32()
    try:
        while True:
            if not getattr(s, _P + "track"):
                await asyncio.sleep(0.02)
                continue
            frame = await s._next_encoded_frame(codec)
            if frame is None:
                continue
            timestamp = (timestamp_origin + frame.timestamp) & 0xFFFFFFFF
            ext = HeaderExtensions()
            ext.abs_send_time = (clock.current_ntp_time() >> 14) & 0x00FFFFFF
            ext.mid = getattr(s, _P + "mid")
            if frame.audio_level is not None:
                ext.audio_level = (False, -frame.audio_level)
            profile, value = ext_map.set(ext)
            first = 0x90 if value else 0x80  # version 2, extension bit
            block = pack("!HH", profile, len(value) >> 2) + value if value else b""
            ssrc = s._ssrc
            payloads = frame.payloads
            last = len(payloads) - 1
            octets = 0
            for i, payload in enumerate(payloads):
                marker = 1 if i == last else 0
                data = pack("!BBHLL", first, (marker << 7) | payload_type, sequence_number, timestamp,
                            ssrc) + block + payload
                history[sequence_number % RTP_HISTORY_SIZE] = SentPacket(
                    data, sequence_number, timestamp, marker, payload, ext, payload_type, ssrc)
                if not wire.send_now(data):
                    await s.transport._send_rtp(data)
                octets += len(payload)
                sequence_number = (sequence_number + 1) & 0xFFFF
            setattr(s, _P + "ntp_timestamp", clock.current_ntp_time())
            setattr(s, _P + "rtp_timestamp", timestamp)
            setattr(s, _P + "octet_count", getattr(s, _P + "octet_count") + octets)
            setattr(s, _P + "packet_count", getattr(s, _P + "packet_count") + len(payloads))
    except (asyncio.CancelledError, ConnectionError, MediaStreamError):
        pass
    except Exception:
        # as aiortc: the exit event must be set or stop() hangs, so warn instead of raising
        logger.warning("RTCRtpSender(%s) %s", getattr(s, _P + "kind", "?"), traceback.format_exc())
    track = getattr(s, _P + "track")
    if track:
        track.stop()
        setattr(s, _P + "track", None)
    setattr(s, _P + "encoder", None)
    getattr(s, _P + "rtp_exited").set()
