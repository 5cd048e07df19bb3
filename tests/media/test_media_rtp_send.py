"""The lean RTP send loop (``media.rtp_send``) on real aiortc peers: the packets aiortc would send,
retransmissions from its history, the counters its reports and stats read, whether the fan-out
sends a frame at once (the sender's loop waiting) or the sender's loop takes it from its queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiortc.rtp import RtpPacket

from media.fanout import EncodedAudioFanout, EncodedVideoFanout
from media.rtp_send import SentPacket, lean_rtp
from media.sinks import AudioSink, VideoSink
from media.testing import PatternVideoSource, ToneAudioSource
from tests.media.helpers import connect, eventually, next_indices

pytestmark = pytest.mark.timeout(60)


def _sender(pc: Any) -> Any:
    return pc.getTransceivers()[0].sender


def _history(sender: Any) -> list[SentPacket]:
    return sorted(sender._RTCRtpSender__rtp_history.values(), key=lambda p: p.sequence_number)


@contextlib.asynccontextmanager
async def _video_fanout() -> AsyncIterator[tuple[EncodedVideoFanout, list[Any]]]:
    """A 320x240 test pattern's VP8 fan-out; the peer connections put in the list are closed after it."""
    src = PatternVideoSource(320, 240, fps=30)
    await src.start()
    pcs: list[Any] = []
    try:
        async with EncodedVideoFanout(src, "vp8", bitrate=600_000) as fanout:
            yield fanout, pcs
    finally:
        await src.stop()
        for pc in pcs:
            await pc.close()


class _LoseFirstCopies:
    """Drops the first arrival of media packets ``nth`` and ``nth + 1``; their retransmissions get through."""

    def __init__(self, receiver: Any, nth: int) -> None:
        self.receiver = receiver
        self.nth = nth
        self.seen = 0
        self.dropped: list[int] = []
        self.retransmitted: list[int] = []
        self._own = receiver._handle_rtp_packet
        receiver._handle_rtp_packet = self.handle

    async def handle(self, packet: Any, arrival_time_ms: int) -> None:
        if packet.ssrc in self.receiver._RTCRtpReceiver__rtx_ssrc:
            self.retransmitted.append(packet.sequence_number)
        else:
            self.seen += 1
            if self.seen in (self.nth, self.nth + 1):
                self.dropped.append(packet.sequence_number)
                return
        await self._own(packet, arrival_time_ms)


async def test_video_packets_are_aiortcs_and_a_lost_one_is_retransmitted() -> None:
    async with _video_fanout() as (fanout, pcs):
        losses: list[_LoseFirstCopies] = []
        a, b, sink = await connect(fanout.add_to, VideoSink,
                                   on_receiver=lambda r: losses.append(_LoseFirstCopies(r, nth=40)))
        pcs += [a, b]
        sender = _sender(a)
        assert sender._callrt_lean_rtp and lean_rtp(sender)  # installed by the fan-out; idempotent
        try:
            indices = await next_indices(sink, 45)
        finally:
            await sink.aclose()
        # every frame, in order, nothing missing: the two packets lost were sent again (NACK)
        (loss,) = losses
        assert len(loss.dropped) == 2
        assert indices == list(range(indices[0], indices[0] + 45)), indices
        await eventually(lambda: len(loss.retransmitted) >= 2, timeout=5)
        # what went out parses as aiortc's own packets: header, mid, abs-send-time, marker per frame
        ext_map = sender._RTCRtpSender__rtp_header_extensions_map
        sent = _history(sender)
        assert len(sent) > 10
        mid = sender._RTCRtpSender__mid
        for entry in sent:
            p = RtpPacket.parse(entry.serialize(), ext_map)
            assert (p.version, p.payload_type, p.ssrc) == (2, entry.payload_type, sender._ssrc)
            assert (p.sequence_number, p.timestamp, p.marker) == (entry.sequence_number, entry.timestamp,
                                                                   entry.marker)
            assert p.payload == entry.payload and p.extensions.mid == mid
            assert p.extensions.abs_send_time is not None
        # one marker per frame: the last packet of each RTP timestamp
        by_ts: dict[int, list[SentPacket]] = {}
        for entry in sent:
            by_ts.setdefault(entry.timestamp, []).append(entry)
        for group in list(by_ts.values())[1:-1]:
            assert [e.marker for e in group] == [0] * (len(group) - 1) + [1]
        # with the sender's loop waiting, the fan-out sent (nearly) every frame itself, at once
        (track,) = fanout.tracks
        assert track.sent > 40 and track._queue.put_count < track.sent // 4, (track.sent, track._queue.put_count)
        # the counters aiortc's sender reports and stats read
        stats = await sender.getStats()
        out = next(s for s in stats.values() if s.type == "outbound-rtp")
        assert out.packetsSent >= len(sent) and out.bytesSent > 0
        assert sender._RTCRtpSender__ntp_timestamp > 0


async def test_audio_packets_carry_the_level_the_fanout_measured() -> None:
    tone = ToneAudioSource(1000.0, channels=1)
    await tone.start()
    pcs: list[Any] = []
    try:
        async with EncodedAudioFanout(tone) as fanout:
            a, b, sink = await connect(fanout.add_to, lambda t: AudioSink(t, maxsize=200))
            pcs += [a, b]
            await asyncio.wait_for(sink.recv(), 10)
            await sink.aclose()
            sender = _sender(a)
            ext_map = sender._RTCRtpSender__rtp_header_extensions_map
            levels = {RtpPacket.parse(e.serialize(), ext_map).extensions.audio_level for e in _history(sender)}
            assert levels and all(lvl is not None and not lvl[0] and 0 <= lvl[1] <= 20 for lvl in levels), levels
    finally:
        await tone.stop()
        for pc in pcs:
            await pc.close()


async def test_a_failing_direct_send_falls_back_to_the_senders_loop() -> None:
    async with _video_fanout() as (fanout, pcs):
        a, b, sink = await connect(fanout.add_to, VideoSink)
        pcs += [a, b]
        try:
            await next_indices(sink, 5)
            (track,) = fanout.tracks
            assert track._push is not None
            calls: list[int] = []

            def broken(packet: Any) -> bool:
                calls.append(1)
                raise RuntimeError("injected")

            track._push = broken
            puts = track._queue.put_count
            indices = await next_indices(sink, 20)
        finally:
            await sink.aclose()
        # one failure, logged; that peer skips to the next keyframe (requested at once), then its
        # sender's loop takes every frame from the queue, in order
        assert calls == [1] and track._push is None and track.skipped >= 1
        assert track._queue.put_count >= puts + 15
        assert indices == sorted(set(indices)) and indices[-1] - indices[0] <= 24, indices  # a few lost
        assert indices[-15:] == list(range(indices[-15], indices[-15] + 15)), indices
