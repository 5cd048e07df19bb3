"""VP8 RTP payloads (RFC 7741) from an encoded frame: the bytes aiortc's ``Vp8Encoder.pack`` makes, cheaper.

aiortc's payloader copies the frame into ``bytes``, builds a descriptor object and serialises it
with ``struct`` for every payload, slices the frame (a copy) and joins the two (another), and
converts the timestamp through ``Fraction`` arithmetic: 10-11 us per 640x480 frame here, warm,
against 3 us for this one. It is called once per frame for all the peers of a fan-out
(``media.tracks.SharedPacketizer``), on the event loop.

The payloads are byte for byte aiortc's: a 4-byte descriptor (X=1, S=1 on the first payload,
partition 0, I=1 with a 15-bit picture ID), then at most ``PACKET_MAX - 4`` bytes of the frame;
the picture ID advances by one per frame and wraps at 2**15. The RTP timestamp is the packet's
pts in the 90 kHz clock (truncated, as aiortc's ``convert_timebase``).
"""

from __future__ import annotations

import random
from fractions import Fraction
from struct import Struct

import av
from aiortc.codecs.vpx import PACKET_MAX

VIDEO_CLOCK = Fraction(1, 90_000)
_DESCRIPTOR = Struct("!BBH")
_CHUNK = PACKET_MAX - _DESCRIPTOR.size
"""Frame bytes per payload (aiortc's ``PACKET_MAX`` less the descriptor)."""


class Vp8Packetizer:
    """Splits encoded VP8 frames into RTP payloads with a running picture ID (module doc)."""

    __slots__ = ("picture_id",)

    def __init__(self, picture_id: int | None = None) -> None:
        self.picture_id = random.randint(0, (1 << 15) - 1) if picture_id is None else picture_id & 0x7FFF
        """The picture ID of the next frame (random at first, as aiortc's)."""

    def pack(self, packet: av.Packet) -> tuple[list[bytes], int]:
        """RTP payloads and RTP timestamp of one encoded frame (``encoder.pack``'s interface in aiortc)."""
        pid = 0x8000 | self.picture_id
        self.picture_id = (self.picture_id + 1) & 0x7FFF
        data = memoryview(packet)  # no copy: each payload is the descriptor plus a slice, joined once
        if not data:
            return [], rtp_timestamp(packet)  # as aiortc: nothing to send
        payloads = [_DESCRIPTOR.pack(0x90, 0x80, pid) + data[:_CHUNK]]
        if len(data) > _CHUNK:
            rest = _DESCRIPTOR.pack(0x80, 0x80, pid)
            payloads += [rest + data[pos : pos + _CHUNK] for pos in range(_CHUNK, len(data), _CHUNK)]
        return payloads, rtp_timestamp(packet)


def rtp_timestamp(packet: av.Packet) -> int:
    """``packet``'s pts in the 90 kHz RTP clock (0 without a pts)."""
    pts = packet.pts or 0
    time_base = packet.time_base
    if time_base is None or time_base == VIDEO_CLOCK:
        return pts
    return int(pts * time_base / VIDEO_CLOCK)
