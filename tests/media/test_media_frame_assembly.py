"""``media.frame_assembly``: a video frame is handed over at its marker packet, not when the next frame begins.

Unit cases drive the jitter buffer with RTP packets as a receiver would; the peer cases send a
finite pattern over real aiortc peers and check which frames the receiver decoded.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from media.fanout import EncodedVideoFanout
from media.frame_assembly import MarkerJitterBuffer, complete_frames_on_marker
from media.inline_decode import hook_decoder
from media.receive_path import prepare_receiver
from media.sinks import VideoSink
from media.testing import PatternVideoSource, read_index
from tests.media.helpers import connect, eventually

pytestmark = pytest.mark.timeout(60)


def _packets(frames: int, per_frame: int, *, marker: bool = True, first_seq: int = 65530) -> list[RtpPacket]:
    """``frames`` frames of ``per_frame`` packets each (sequence numbers wrap), payload naming each packet."""
    out = []
    seq = first_seq
    for f in range(frames):
        for i in range(per_frame):
            p = RtpPacket(payload_type=96, marker=int(marker and i == per_frame - 1),
                          sequence_number=seq & 0xFFFF, timestamp=3000 * (f + 1))
            p._data = f"f{f}p{i};".encode()  # type: ignore[attr-defined]
            out.append(p)
            seq += 1
    return out


def _buffer() -> JitterBuffer:
    jitter = JitterBuffer(capacity=128, is_video=True)
    jitter.__class__ = MarkerJitterBuffer
    return jitter


def _feed(jitter: JitterBuffer, packets: list[RtpPacket]) -> list[tuple[int, bytes, int]]:
    """(index of the packet whose arrival completed the frame, frame data, timestamp) per frame out."""
    out = []
    for n, p in enumerate(packets):
        _, frame = jitter.add(p)
        if frame is not None:
            out.append((n, frame.data, frame.timestamp))
    return out


def test_a_frame_comes_out_with_its_marker_packet() -> None:
    packets = _packets(3, 4)
    out = _feed(_buffer(), packets)
    # each frame at its own last packet (index 3, 7, 11), whole and in order, across the sequence wrap
    assert [n for n, _, _ in out] == [3, 7, 11]
    assert [d for _, d, _ in out] == [b"".join(p._data for p in packets[i : i + 4]) for i in (0, 4, 8)]
    assert [ts for _, _, ts in out] == [3000, 6000, 9000]
    # aiortc's own buffer: each frame only when the next frame's first packet arrives; the last never
    assert [n for n, _, _ in _feed(JitterBuffer(capacity=128, is_video=True), packets)] == [4, 8]


def test_a_hole_holds_the_frame_until_it_is_filled() -> None:
    packets = _packets(2, 4)
    late = packets[1]  # lost, then retransmitted after the marker arrived
    order = [packets[0], packets[2], packets[3], packets[4], late, *packets[5:]]
    out = _feed(_buffer(), order)
    assert [n for n, _, _ in out] == [4, 7]  # frame 0 when the hole is filled, frame 1 at its marker
    assert out[0][1] == b"f0p0;f0p1;f0p2;f0p3;"


def test_a_marker_packet_that_arrives_first_waits_for_the_rest() -> None:
    packets = _packets(2, 3)
    out = _feed(_buffer(), [*packets[:3], packets[5], packets[3], packets[4]])
    assert [(n, d) for n, d, _ in out] == [(2, b"f0p0;f0p1;f0p2;"), (5, b"f1p0;f1p1;f1p2;")]


def test_without_markers_frames_complete_as_in_aiortc() -> None:
    packets = _packets(5, 3, marker=False)
    rng = random.Random(7)
    shuffled = packets[:]
    for i in range(0, len(shuffled) - 1, 2):  # swap neighbours now and then: mild reordering
        if rng.random() < 0.5:
            shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
    assert _feed(_buffer(), shuffled) == _feed(JitterBuffer(capacity=128, is_video=True), shuffled)


async def test_only_video_receivers_are_switched_and_it_is_idempotent() -> None:
    pc = RTCPeerConnection()
    try:
        audio = pc.addTransceiver("audio").receiver
        video = pc.addTransceiver("video").receiver
        assert complete_frames_on_marker(audio) is False
        assert type(audio._RTCRtpReceiver__jitter_buffer) is JitterBuffer  # type: ignore[attr-defined]
        jitter = video._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
        assert complete_frames_on_marker(video) is True and complete_frames_on_marker(video) is True
        assert video._RTCRtpReceiver__jitter_buffer is jitter  # type: ignore[attr-defined]
        assert isinstance(jitter, MarkerJitterBuffer)
    finally:
        await pc.close()


@pytest.mark.parametrize("path", ["callrt", "aiortc"])
async def test_the_last_frame_a_sender_sends_is_decoded(path: str) -> None:
    """A source that stops after 90 frames: with callrt's receive path the receiver decodes frame 89
    (what a muted camera or a one-off slide leaves on screen); aiortc's buffer waits for a frame 90
    that never comes."""
    src = PatternVideoSource(320, 240, fps=30, frames=90)
    await src.start()
    pcs: list[Any] = []
    try:
        async with EncodedVideoFanout(src, "vp8", bitrate=400_000) as fanout:
            install = prepare_receiver if path == "callrt" else hook_decoder
            a, b, sink = await connect(fanout.add_to, VideoSink, on_receiver=install)
            pcs += [a, b]
            try:
                await eventually(lambda: fanout.frames_handled == 90)  # the last one encoded and sent
                await asyncio.sleep(0.5)  # its packets cross loopback
                latest = sink.latest()
                assert latest is not None and sink.received >= 30
                assert read_index(latest) == (89 if path == "callrt" else 88)
            finally:
                await sink.aclose()
    finally:
        for pc in pcs:
            await pc.close()
        await src.stop()
