"""When received frames go to the decoder: as soon as they can, not one frame (or four) later.

Video. aiortc's video jitter buffer knows a frame is complete only when a packet of the *next*
frame follows it (a new RTP timestamp). So every frame waits for the next one: a frame interval
of latency (33 ms at 30 fps, a whole second for a 1 fps screen share), and the last frame before
a sender pauses, mutes or stops is never decoded at all. Senders mark the last packet of each
frame (the RTP marker bit, RFC 7741 section 4.1 for VP8, RFC 6184 section 5.1 for H.264; aiortc,
callrt and browsers all set it), and libwebrtc completes frames on it. ``MarkerJitterBuffer``
hands the oldest frame over as soon as its packets, from the oldest one up to a packet with the
marker bit and the same timestamp, are all there with no hole. Everything else stays aiortc's:
a frame is still also complete when a packet with a new timestamp follows it (a sender that
never sets the marker), a hole still holds every later frame back until the retransmission
arrives or ``media.stall_recovery`` gives up on it, and overflow is handled as before. Packets
with no media (padding between frames) make no frame of their own.

Audio. aiortc's audio buffer hands a packet over only once four later ones have arrived (80 ms
of 20 ms packets), and a packet lost for good (audio is not retransmitted) holds everything
behind it until its 16 slots overflow; after that it keeps 14 packets, 280 ms, for the rest of
the call (measured: 4 packets held before one loss, 14 after, for good). Each Opus packet
decodes on its own, so ``InOrderAudioBuffer`` hands every packet over as soon as the ones before
it have been: at once when they arrive in order; a missing one is waited for until
``AUDIO_REORDER_PACKETS`` newer packets have arrived (it was reordered, or it is lost), then
skipped; the decoder conceals the 20 ms it leaves (``media.loss_concealment``). Smoothing
arrival jitter for playout is the playout buffer's job (``media.audio.PlayoutBuffer``), which
knows the device's clock.

``prompt_assembly(receiver)`` switches one receiver's buffer. It stays the same object (its
class is switched to a subclass that adds no state), so whatever already holds it (the stall
watch, the short receive path) keeps working. It relies on aiortc 1.x's ``JitterBuffer``; with
any other buffer it leaves the receiver alone. A buffer may have more than one frame ready after
one packet (a hole filled); aiortc takes one per packet, ``pop_ready()`` gives the rest
(``media.rtp_receive`` takes them at once).
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import MAX_MISORDER, JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

from media.inline_decode import receiver_kind

logger = logging.getLogger(__name__)

_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"
_warned = False

AUDIO_REORDER_PACKETS = 3
"""A missing audio packet is skipped once this many newer ones have arrived (60 ms of 20 ms packets)."""


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

    def _take(self, count: int, timestamp: int) -> JitterFrame | None:
        """The oldest ``count`` packets as one frame, removed from the buffer.

        Packets with no media (padding-only packets, which some senders send between frames with
        the last frame's timestamp) make no frame: an empty packet would put the decoder into
        draining. The frame after them is returned instead, if it is complete.
        """
        origin, capacity, slots = self._origin, self._capacity, self._packets
        assert origin is not None
        data = b"".join([slots[(origin + i) % capacity]._data for i in range(count)])  # type: ignore[union-attr]
        self.remove(count)
        if not data:
            return self._remove_frame(0)
        return JitterFrame(data=data, timestamp=timestamp)

    def pop_ready(self) -> JitterFrame | None:
        """The next frame if it is complete already (after a hole was filled, several may be)."""
        return self._remove_frame(0)


class InOrderAudioBuffer(JitterBuffer):
    """Audio packets in sequence order as soon as they can be (module doc); one packet is one frame.

    ``_origin`` is the next sequence number to hand over; packets wait in ``_packets`` at
    ``sequence_number % capacity`` while one before them is missing.
    """

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._origin is None:
            self._origin = seq
        else:
            ahead = (seq - self._origin) & 0xFFFF
            if ahead >= 0x8000:  # before the next one due
                if 0x10000 - ahead < MAX_MISORDER:
                    return False, None  # late: handed over already, or skipped as lost
                self._restart(seq)  # the sender's numbering jumped back: follow it
            elif ahead >= self._capacity:
                self._restart(seq)  # too far ahead to wait for what is missing: start here
        self._packets[seq % self._capacity] = packet
        return False, self.pop_ready()

    def pop_ready(self) -> JitterFrame | None:
        """The next packet due, if it is here (or once enough newer ones say the missing one is lost).

        A packet with no media (padding) is passed over: an empty packet would put the decoder
        into draining.
        """
        capacity, slots = self._capacity, self._packets
        while (origin := self._origin) is not None:
            packet = slots[origin % capacity]
            if packet is None:
                waiting = [i for i in range(1, capacity) if slots[(origin + i) % capacity] is not None]
                if len(waiting) < AUDIO_REORDER_PACKETS:
                    return None
                origin = (origin + waiting[0]) & 0xFFFF  # skip the lost packet(s)
                packet = slots[origin % capacity]
                assert packet is not None
            slots[origin % capacity] = None
            self._origin = (origin + 1) & 0xFFFF
            if packet._data:  # type: ignore[attr-defined]
                return JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]
        return None

    def _restart(self, seq: int) -> None:
        for i in range(self._capacity):
            self._packets[i] = None
        self._origin = seq


def prompt_assembly(receiver: RTCRtpReceiver) -> bool:
    """Have ``receiver`` hand frames to its decoder as soon as they can be (module doc). Idempotent.

    Call before it receives. Returns True when it does; False when aiortc's internals differ.
    """
    global _warned
    kind = receiver_kind(receiver)
    jitter: Any = getattr(receiver, _JITTER_ATTR, None)
    wanted: type[JitterBuffer] = MarkerJitterBuffer if kind == "video" else InOrderAudioBuffer
    if isinstance(jitter, wanted):
        return True
    if kind not in ("audio", "video") or type(jitter) is not JitterBuffer or jitter._origin is not None:
        if not _warned:
            _warned = True
            logger.info("aiortc's jitter buffer differs or already receives; frames are handed over as aiortc does")
        return False
    if kind == "video" and jitter._prefetch != 0:
        return False
    jitter.__class__ = wanted
    return True
