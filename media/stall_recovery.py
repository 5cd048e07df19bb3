"""Video that freezes on one lost packet recovers: give up on it, ask for a keyframe.

aiortc's video jitter buffer hands a frame to the decoder only when every packet from its
oldest one onwards is there. A packet lost for good (its NACKed retransmission lost too, or too
old for the sender's history) stops every later frame until the buffer overflows: 512 packets,
16 s of 640x480 video at 1 Mbps. Seen in the network-impairment test (5 % loss each way): one
participant got 49 frames in 10 s while its packets kept arriving.

``recover_stalls(receiver)`` watches one video receiver (one instance, like
``media.inline_decode``): after each media packet, if the buffer's oldest incomplete frame is
missing a packet and packets more than ``STALL_MEDIA_S`` of media time newer have arrived, the
frames up to the gap are dropped and the sender is asked for a keyframe (PLI, at most one per
``PLI_INTERVAL_S``); the frames behind the gap flow again at once (with artefacts until the
keyframe arrives). On a healthy stream the check costs a scan of the current frame's packets.

It relies on private attributes of aiortc's receiver and jitter buffer; when they are missing
(another aiortc version) it logs once and leaves the receiver alone.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiortc import RTCRtpReceiver

logger = logging.getLogger(__name__)

STALL_MEDIA_S = 0.5
"""Give up on a missing packet once packets this much newer (in media time) are waiting behind it."""
PLI_INTERVAL_S = 0.5
"""At most one keyframe request per this many seconds from one receiver."""
VIDEO_CLOCK_RATE = 90_000

_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"
_RTX_ATTR = "_RTCRtpReceiver__rtx_ssrc"
_KIND_ATTR = "_RTCRtpReceiver__kind"
_warned = False


class StallWatch:
    """The watch on one receiver; ``recoveries`` counts the frozen streams it restarted."""

    def __init__(self, receiver: RTCRtpReceiver) -> None:
        self.receiver = receiver
        self.recoveries = 0
        self.dropped_packets = 0
        """Packets dropped from the jitter buffer with the incomplete frames (the gap not counted)."""
        self._own = receiver._handle_rtp_packet
        self._last_pli = float("-inf")

    async def handle(self, packet: Any, arrival_time_ms: int) -> None:
        await self._own(packet, arrival_time_ms)
        if packet.ssrc in getattr(self.receiver, _RTX_ATTR, {}):
            return  # a retransmission: its sequence number is the RTX stream's
        jitter = getattr(self.receiver, _JITTER_ATTR, None)
        if jitter is not None and self._stalled(jitter, packet):
            await self._recover(jitter, packet)

    def _stalled(self, jitter: Any, packet: Any) -> bool:
        origin = jitter._origin
        if origin is None:
            return False
        capacity = jitter._capacity
        slots = jitter._packets
        span = (packet.sequence_number - origin) & 0xFFFF
        if span >= capacity:
            return False
        first_ts = None
        gap = False
        for i in range(span + 1):
            held = slots[(origin + i) % capacity]
            if held is None:
                gap = True
            elif first_ts is None:
                first_ts = held.timestamp
        if not gap or first_ts is None:
            return False
        waited = (packet.timestamp - first_ts) & 0xFFFFFFFF
        return waited < 0x80000000 and waited > STALL_MEDIA_S * VIDEO_CLOCK_RATE

    async def _recover(self, jitter: Any, packet: Any) -> None:
        origin, capacity, slots = jitter._origin, jitter._capacity, jitter._packets
        gap = next(i for i in range(capacity) if slots[(origin + i) % capacity] is None)
        after = next(i for i in range(gap + 1, capacity) if slots[(origin + i) % capacity] is not None)
        before = sum(1 for p in slots if p is not None)
        # drop everything up to the first packet after the gap and the rest of that packet's frame
        # (it may lack its start): the next frame's first packet becomes the oldest
        jitter.smart_remove(after + 1)
        self.dropped_packets += before - sum(1 for p in slots if p is not None)
        self.recoveries += 1
        logger.info("video from ssrc %d stalled on a lost packet; skipped it and asked for a keyframe",
                    packet.ssrc)
        now = time.monotonic()
        if now - self._last_pli >= PLI_INTERVAL_S:
            self._last_pli = now
            await self.receiver._send_rtcp_pli(packet.ssrc)


def recover_stalls(receiver: RTCRtpReceiver) -> StallWatch | None:
    """Watch ``receiver`` (video, before it receives) for a stream frozen on a lost packet.

    Returns the watch (the existing one if called again), or None for audio receivers and when
    aiortc's internals differ.
    """
    global _warned
    kind = getattr(receiver, _KIND_ATTR, None) or getattr(receiver.track, "kind", None)
    if kind != "video":
        return None
    current = getattr(receiver._handle_rtp_packet, "__self__", None)
    if isinstance(current, StallWatch):
        return current
    jitter = getattr(receiver, _JITTER_ATTR, None)
    if (jitter is None or not hasattr(receiver, _RTX_ATTR) or not hasattr(receiver, "_send_rtcp_pli")
            or not all(hasattr(jitter, a) for a in ("_origin", "_capacity", "_packets", "smart_remove"))):
        if not _warned:
            _warned = True
            logger.info("aiortc receiver internals differ; video stall recovery is off")
        return None
    watch = StallWatch(receiver)
    receiver._handle_rtp_packet = watch.handle  # type: ignore[method-assign]
    return watch
