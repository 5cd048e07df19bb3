"""Video that freezes on one lost packet recovers: give up on it, ask for a keyframe.

aiortc's video jitter buffer hands a frame to the decoder only when every packet from its
oldest one onwards is there. A packet lost for good (its NACKed retransmission lost too, or too
old for the sender's history) stops every later frame until the buffer overflows: 512 packets,
16 s of 640x480 video at 1 Mbps. Seen in the network-impairment test (5 % loss each way): one
participant got 49 frames in 10 s while its packets kept arriving.

``recover_stalls(receiver)`` watches one video receiver (one instance, like
``media.inline_decode``): after each media packet, if the buffer's oldest frame is missing a
packet and packets more than ``STALL_MEDIA_S`` of media time newer have arrived, that frame is
dropped and the sender is asked for a keyframe (PLI, at most one per
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

from media.inline_decode import receiver_kind

logger = logging.getLogger(__name__)

STALL_MEDIA_S = 0.5
"""Give up on a missing packet once packets this much newer (in media time) are waiting behind it."""
PLI_INTERVAL_S = 0.5
"""At most one keyframe request per this many seconds from one receiver."""
VIDEO_CLOCK_RATE = 90_000

_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"
_RTX_ATTR = "_RTCRtpReceiver__rtx_ssrc"
_warned = False


class StallWatch:
    """The watch on one receiver; ``recoveries`` counts the frozen streams it restarted."""

    def __init__(self, receiver: RTCRtpReceiver) -> None:
        self.receiver = receiver
        # aiortc creates both once, in the receiver's constructor (the RTX map is filled in later)
        self._jitter = getattr(receiver, _JITTER_ATTR)
        self._rtx_ssrcs: dict[int, int] = getattr(receiver, _RTX_ATTR)
        self.recoveries = 0
        self.dropped_packets = 0
        """Packets dropped from the jitter buffer with the incomplete frames (the gap not counted)."""
        self._own = receiver._handle_rtp_packet
        self._last_pli = float("-inf")

    async def handle(self, packet: Any, arrival_time_ms: int) -> None:
        await self._own(packet, arrival_time_ms)
        if self.check(packet):
            await self.receiver._send_rtcp_pli(packet.ssrc)

    def check(self, packet: Any) -> bool:
        """After ``packet`` reached the jitter buffer: recover a stall; True when a keyframe request is due.

        (``media.rtp_receive`` calls this from its packet handler, which cannot await.)
        """
        if packet.ssrc in self._rtx_ssrcs:
            return False  # a retransmission: its sequence number is the RTX stream's
        gap = self._stalled_at(packet)
        return gap is not None and self._recover(gap, packet)

    def _stalled_at(self, packet: Any) -> int | None:
        """Where the gap is (slots after the oldest) if the oldest frame is incomplete and stale.

        aiortc emits the oldest frame once a packet of a later frame follows it with no hole in
        between; a hole before that point blocks every frame. A complete oldest frame is not a
        stall (aiortc emits one frame per arriving packet, so a backlog of complete frames drains).
        """
        jitter = self._jitter
        origin = jitter._origin
        if origin is None:
            return None
        capacity = jitter._capacity
        slots = jitter._packets
        span = (packet.sequence_number - origin) & 0xFFFF
        if span >= capacity:
            return None
        first_ts = None
        gap = None
        for i in range(span + 1):
            held = slots[(origin + i) % capacity]
            if held is None:
                if gap is None:
                    gap = i
            elif first_ts is None:
                first_ts = held.timestamp
            elif gap is None and held.timestamp != first_ts:
                return None  # the oldest frame is complete: aiortc hands it over on the next packet
            elif gap is not None:
                break
        if gap is None or first_ts is None:
            return None
        waited = (packet.timestamp - first_ts) & 0xFFFFFFFF
        return gap if 0x80000000 > waited > STALL_MEDIA_S * VIDEO_CLOCK_RATE else None

    def _recover(self, gap: int, packet: Any) -> bool:
        jitter = self._jitter
        origin, capacity, slots = jitter._origin, jitter._capacity, jitter._packets
        if gap:
            # the oldest frame lost a packet after its start: drop it through the hole and the rest
            # of that frame; the next frame's first packet becomes the oldest
            count = gap + 1
        else:
            # its first packet is missing: drop up to the first packet after the hole and the rest of
            # that packet's frame (it may lack its start)
            count = next(i for i in range(1, capacity) if slots[(origin + i) % capacity] is not None) + 1
        before = sum(1 for p in slots if p is not None)
        jitter.smart_remove(count)
        self.dropped_packets += before - sum(1 for p in slots if p is not None)
        self.recoveries += 1
        logger.info("video from ssrc %d stalled on a lost packet; skipped it and asked for a keyframe",
                    packet.ssrc)
        now = time.monotonic()
        if now - self._last_pli < PLI_INTERVAL_S:
            return False
        self._last_pli = now
        return True


def recover_stalls(receiver: RTCRtpReceiver) -> StallWatch | None:
    """Watch ``receiver`` (video, before it receives) for a stream frozen on a lost packet.

    Returns the watch (the existing one if called again), or None for audio receivers and when
    aiortc's internals differ.
    """
    global _warned
    if receiver_kind(receiver) != "video":
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
