"""A received video frame goes to the decoder when its last packet arrives, not one frame later.

aiortc's video jitter buffer knows a frame is complete only when a packet of the *next* frame
follows it (a new RTP timestamp). So every frame waits for the next one: a frame interval of
latency (33 ms at 30 fps, a whole second for a 1 fps screen share), and the last frame before a
sender pauses, mutes or stops is never decoded at all. Senders mark the last packet of each frame
(the RTP marker bit, RFC 7741 section 4.1 for VP8, RFC 6184 section 5.1 for H.264; aiortc,
callrt and browsers all set it), and libwebrtc completes frames on it.

``complete_frames_on_marker(receiver)`` makes one video receiver's jitter buffer do the same:
the oldest frame is handed over as soon as its packets, from the oldest one up to a packet with
the marker bit and the same timestamp, are all there with no hole. Everything else stays
aiortc's: a frame is still also complete when a packet with a new timestamp follows it (a
sender that never sets the marker), a hole still holds every later frame back until the
retransmission arrives or ``media.stall_recovery`` gives up on it, and overflow is handled as
before.

The buffer object stays the same one (its class is switched to a subclass that adds no state),
so whatever already holds it (the stall watch, the short receive path) keeps working. It relies
on aiortc 1.x's ``JitterBuffer``; with any other buffer it leaves the receiver alone.
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame

from media.inline_decode import receiver_kind

logger = logging.getLogger(__name__)

_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"
_warned = False


class MarkerJitterBuffer(JitterBuffer):
    """aiortc's jitter buffer that also completes the oldest frame at its marker packet (module doc)."""

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        origin = self._origin
        if origin is None:
            return None
        capacity = self._capacity
        slots = self._packets
        timestamp = None
        for count in range(capacity):
            packet = slots[(origin + count) % capacity]
            if packet is None:
                return None  # a hole: the oldest frame is not complete yet
            if timestamp is None:
                timestamp = packet.timestamp
            elif packet.timestamp != timestamp:
                return self._take(count, timestamp)  # a later frame began: aiortc's rule
            if packet.marker:
                return self._take(count + 1, timestamp)
        return None

    def _take(self, count: int, timestamp: int) -> JitterFrame:
        """The oldest ``count`` packets as one frame, removed from the buffer."""
        origin, capacity, slots = self._origin, self._capacity, self._packets
        assert origin is not None
        data = b"".join([slots[(origin + i) % capacity]._data for i in range(count)])  # type: ignore[union-attr]
        self.remove(count)
        return JitterFrame(data=data, timestamp=timestamp)


def complete_frames_on_marker(receiver: RTCRtpReceiver) -> bool:
    """Have ``receiver`` (video) hand over each frame at its marker packet (module doc). Idempotent.

    Returns True when it does; False for audio receivers (one packet is one frame there, and
    aiortc's prefetch is its jitter allowance) and when aiortc's internals differ.
    """
    global _warned
    if receiver_kind(receiver) != "video":
        return False
    jitter: Any = getattr(receiver, _JITTER_ATTR, None)
    if isinstance(jitter, MarkerJitterBuffer):
        return True
    if type(jitter) is not JitterBuffer or getattr(jitter, "_prefetch", None) != 0:
        if not _warned:
            _warned = True
            logger.info("aiortc's video jitter buffer differs; frames complete on the next frame as before")
        return False
    jitter.__class__ = MarkerJitterBuffer
    return True
