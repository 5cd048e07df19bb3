"""A video packet lost for good: aiortc alone freezes, with ``recover_stalls`` the video resumes (real peers)."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from media.fanout import EncodedVideoFanout
from media.sinks import VideoSink
from media.stall_recovery import StallWatch, recover_stalls
from media.testing import PatternVideoSource
from tests.media.helpers import connect, indices_after_loss

pytestmark = pytest.mark.timeout(60)


class _LoseOnePacket:
    """Drops the ``nth`` media packet a receiver gets and every retransmission: lost for good."""

    def __init__(self, receiver: Any, nth: int) -> None:
        self.receiver = receiver
        self.nth = nth
        self.seen = 0
        self.lost_at: float | None = None
        self.on_lost: Any = None
        self._own = receiver._handle_rtp_packet
        receiver._handle_rtp_packet = self.handle

    async def handle(self, packet: Any, arrival_time_ms: int) -> None:
        if packet.ssrc in self.receiver._RTCRtpReceiver__rtx_ssrc:
            return  # no retransmission gets through
        self.seen += 1
        if self.seen == self.nth:
            self.lost_at = time.monotonic()
            if self.on_lost is not None:
                self.on_lost()
            return
        await self._own(packet, arrival_time_ms)


@pytest.mark.parametrize("watched", [True, False], ids=["recover_stalls", "aiortc-alone"])
async def test_video_frozen_on_a_lost_packet_resumes(watched: bool) -> None:
    src = PatternVideoSource(320, 240, fps=30)
    await src.start()
    pcs: list[Any] = []
    try:
        async with EncodedVideoFanout(src, "vp8", bitrate=400_000) as fanout:
            hooks: list[tuple[_LoseOnePacket, StallWatch | None]] = []

            def on_receiver(receiver: Any) -> None:
                loss = _LoseOnePacket(receiver, nth=45)  # installed first: the watch sees what survives
                hooks.append((loss, recover_stalls(receiver) if watched else None))

            a, b, sink = await connect(fanout.add_to, VideoSink, on_receiver=on_receiver)
            pcs += [a, b]
            [(loss, watch)] = hooks
            requests_at_loss: list[int] = []
            loss.on_lost = lambda: requests_at_loss.append(fanout.keyframe_requests)
            try:
                after = await indices_after_loss(sink, loss)
            finally:
                await sink.aclose()
            if watched:
                assert watch is not None and watch.recoveries >= 1
                assert recover_stalls(b.getTransceivers()[0].receiver) is watch  # idempotent
                assert fanout.keyframe_requests > requests_at_loss[0]  # the PLI reached the shared encoder
                # well over a second of video in the 3 s after the loss; the frames decoded before the
                # keyframe arrived may show artefacts (their reference is gone), the last second is clean
                assert len(after) >= 40, after
                tail = after[-30:]
                assert all(0 < b - a <= 3 for a, b in itertools.pairwise(tail)), after
            else:
                # aiortc alone waits for the packet until its 512-packet buffer overflows (~10 s here):
                # at most the frame or two already complete come out in the 3 s after the loss
                assert len(after) <= 3, after
    finally:
        for pc in pcs:
            await pc.close()
        await src.stop()


async def test_audio_receivers_are_not_watched() -> None:
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    try:
        audio = pc.addTransceiver("audio").receiver
        video = pc.addTransceiver("video").receiver
        assert recover_stalls(audio) is None
        assert isinstance(recover_stalls(video), StallWatch)
    finally:
        await pc.close()


def _rtp(seq: int, frame: int) -> Any:
    from aiortc.rtp import RtpPacket

    packet = RtpPacket(payload_type=96, sequence_number=seq, timestamp=frame * 3000)  # 30 fps
    packet._data = b"x"  # what aiortc's depayloader leaves for the jitter buffer
    return packet


def test_a_backlog_of_complete_frames_is_not_a_stall_but_a_hole_in_the_oldest_frame_is() -> None:
    """Checked on aiortc's own jitter buffer, held by a stand-in receiver (only the attributes the watch reads)."""
    from aiortc.jitterbuffer import JitterBuffer

    class _Receiver:  # a stand-in: the watch needs the jitter buffer, the RTX map and the packet handler
        def __init__(self) -> None:
            self._RTCRtpReceiver__jitter_buffer = JitterBuffer(capacity=512, is_video=True)
            self._RTCRtpReceiver__rtx_ssrc: dict[int, int] = {}

        async def _handle_rtp_packet(self, packet: Any, arrival_time_ms: int) -> None:
            self._RTCRtpReceiver__jitter_buffer.add(packet)

    receiver = _Receiver()
    jitter = receiver._RTCRtpReceiver__jitter_buffer
    watch = StallWatch(receiver)  # type: ignore[arg-type]
    # frame 0 arrives, frame 1 is late, frames 2-30 (~1 s) wait behind it; then frame 1 arrives:
    # every frame is complete, aiortc hands one over per arriving packet (a backlog, not a stall)
    for seq in [0, *range(2, 31), 1]:
        jitter.add(_rtp(seq, seq))
    jitter.add(_rtp(32, 32))  # and a new hole (31) behind the backlog
    assert watch._stalled_at(_rtp(32, 32)) is None
    # a hole in the oldest frame with packets more than 0.5 s newer behind it is a stall
    stuck = JitterBuffer(capacity=512, is_video=True)
    receiver._RTCRtpReceiver__jitter_buffer = stuck
    watch = StallWatch(receiver)  # type: ignore[arg-type]
    for seq in [100, 101, *range(103, 125)]:  # frame 50 is packets 100-102; 102 never comes
        stuck.add(_rtp(seq, 50 if seq < 103 else seq - 52))
    assert watch._stalled_at(_rtp(124, 72)) == 2  # 22 frames (0.73 s) behind the hole at slot 2
    assert watch._stalled_at(_rtp(110, 58)) is None  # 0.27 s behind it: still worth waiting for
