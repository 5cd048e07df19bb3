"""Opus packet-loss concealment: a lost packet is played as libopus' best guess, not as a hole.

Audio is not retransmitted, so a packet lost on the way is gone. Before this, the receive path
skipped it (``media.frame_assembly.InOrderAudioBuffer``) and the next packet was decoded as if
nothing were missing: 20 ms vanished from the stream (a click, and the timeline shrank by 20 ms)
or, with a playout buffer, were filled with silence. libopus conceals losses itself (it extends
the last pitch period and fades, SILK and CELT each their own way) when it is handed a packet
whose frame is empty (RFC 6716 section 3.2: a frame of 0 or 1 bytes triggers the decoder's PLC),
and it then blends the next real packet into the guess. FFmpeg gives no way to call
``opus_decode(NULL)``, but a one-byte packet, the TOC byte of the packet after the gap with the
frame count code set to "one frame", does exactly that through FFmpeg's libopus decoder (the TOC
only sets how long the guess is; libopus conceals in the mode it was decoding in).

When a received packet's RTP timestamp is past where the previous one ended,
``OpusConcealment.plan(pts, toc)`` returns the concealment packets (and their pts) to decode
first, one per missing frame. Gaps longer than ``max_gap_ms`` are not filled: that is a sender
that paused (muted, DTX, a restart), not loss, and a guess stretched over it would only ring.
``done(pts, samples)`` records where the decoded packet ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from media.frames import AUDIO_SAMPLE_RATE

MAX_GAP_MS = 120
"""Longest gap filled by concealment (6 packets of 20 ms); longer ones are left as they are."""

_SILK_MS = (10, 20, 40, 60)
_HYBRID_MS = (10, 20)
_CELT_MS = (2.5, 5, 10, 20)


def toc_frame_samples(toc: int, rate: int = AUDIO_SAMPLE_RATE) -> int:
    """Samples in one frame of the configuration in Opus TOC byte ``toc`` (RFC 6716 section 3.1)."""
    config = toc >> 3
    if config < 12:
        ms: float = _SILK_MS[config & 3]
    elif config < 16:
        ms = _HYBRID_MS[config & 1]
    else:
        ms = _CELT_MS[config & 3]
    return int(rate * ms / 1000)


@dataclass(slots=True)
class ConcealmentStats:
    concealed_samples: int
    """Samples per channel played as libopus' concealment (WebRTC's ``concealedSamples``)."""
    concealment_events: int
    """Gaps concealed (consecutive lost packets are one event)."""
    gaps_left: int
    """Gaps longer than ``max_gap_ms``, not concealed (a sender that paused)."""


class OpusConcealment:
    """Decides which concealment packets to decode before a received Opus packet (module doc).

    Timestamps are RTP's 48 kHz clock, as Opus uses for any sample rate (RFC 7587 section 4.1),
    raw (wrapping at 2**32) or unwrapped as aiortc's receiver hands them to its decoder.
    ``expected`` is where the last decoded packet ended; a decoder calls ``plan`` only for a
    packet that does not start there, so in-order packets cost one comparison.
    """

    __slots__ = ("_gaps_left", "concealed_samples", "concealment_events", "expected", "max_gap")

    def __init__(self, max_gap_ms: int = MAX_GAP_MS) -> None:
        self.max_gap = max_gap_ms * AUDIO_SAMPLE_RATE // 1000
        self.expected: int | None = None
        self._gaps_left = 0
        self.concealed_samples = 0
        self.concealment_events = 0

    def plan(self, pts: int, toc: int) -> list[tuple[bytes, int]]:
        """``(packet, pts)`` pairs to decode before the packet at ``pts`` whose first byte is ``toc``.

        The concealment packets take that packet's configuration (it only sets their duration:
        libopus conceals in the mode it was decoding in).
        """
        if self.expected is None:
            return []
        gap = (pts - self.expected) & 0xFFFFFFFF
        if gap == 0 or gap >= 0x80000000:
            return []  # in order, or late (before where the stream got to)
        if gap > self.max_gap:
            self._gaps_left += 1
            return []
        step = toc_frame_samples(toc)
        filler = bytes([toc & 0xFC])  # frame count code 0: one frame, and it is empty
        # counted back from this packet: a receiver's unwrapped timeline (aiortc maps RTP time to
        # a count from 0 that keeps growing past 2**32) stays unwrapped, raw RTP time wraps
        start = pts - gap
        if start >= 0:
            plc = [(filler, start + i * step) for i in range(gap // step)]
        else:
            plc = [(filler, (start + i * step) % 0x100000000) for i in range(gap // step)]
        if plc:
            self.concealed_samples += len(plc) * step
            self.concealment_events += 1
        return plc

    def done(self, pts: int, samples: int) -> None:
        """The packet at ``pts`` decoded to ``samples`` per channel: the next one is due after them."""
        end = pts + samples
        if self.expected is None or (end - self.expected) & 0xFFFFFFFF < 0x80000000:
            self.expected = end  # at or past where the stream got to
        elif (self.expected - end) & 0xFFFFFFFF > self.max_gap:
            self.expected = end  # far behind: the sender restarted its clock, follow it
        # else a late packet (a little behind): it does not move the stream back

    def stats(self) -> ConcealmentStats:
        return ConcealmentStats(self.concealed_samples, self.concealment_events, self._gaps_left)
