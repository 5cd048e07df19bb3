"""``media.frame_assembly``: a video frame is handed over at its marker packet, not when the next frame begins.

Unit cases drive the jitter buffer with RTP packets as a receiver would; the peer cases send a
finite pattern over real aiortc peers and check which frames the receiver decoded.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from media.fanout import EncodedAudioFanout, EncodedVideoFanout
from media.frame_assembly import AUDIO_REORDER_PACKETS, InOrderAudioBuffer, MarkerJitterBuffer, prompt_assembly
from media.inline_decode import hook_decoder
from media.receive_path import prepare_receiver
from media.rtp_receive import lean_receive
from media.sinks import AudioSink, VideoSink
from media.testing import PatternVideoSource, ToneAudioSource, dominant_frequency, read_index
from tests.media.helpers import DropOnArrival, connected, eventually

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


def test_padding_between_frames_makes_no_frame() -> None:
    """A padding-only packet (no media, the last frame's timestamp, no marker) between two frames:
    handed over alone it would be an empty packet, which puts FFmpeg's decoder into draining."""
    frames = _packets(2, 2, first_seq=100)
    padding = RtpPacket(payload_type=96, marker=0, sequence_number=102, timestamp=3000)
    padding._data = b""  # type: ignore[attr-defined]
    for p in frames[2:]:
        p.sequence_number += 1
    out = _feed(_buffer(), [*frames[:2], padding, *frames[2:]])
    assert [(n, d) for n, d, _ in out] == [(1, b"f0p0;f0p1;"), (4, b"f1p0;f1p1;")]


def test_without_markers_frames_complete_as_in_aiortc() -> None:
    packets = _packets(5, 3, marker=False)
    rng = random.Random(7)
    shuffled = packets[:]
    for i in range(0, len(shuffled) - 1, 2):  # swap neighbours now and then: mild reordering
        if rng.random() < 0.5:
            shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
    assert _feed(_buffer(), shuffled) == _feed(JitterBuffer(capacity=128, is_video=True), shuffled)


def _audio_buffer() -> JitterBuffer:
    jitter = JitterBuffer(capacity=16, prefetch=4)  # aiortc's audio buffer
    jitter.__class__ = InOrderAudioBuffer
    return jitter


def _audio_feed(jitter: Any, seqs: list[int]) -> list[list[int]]:
    """Per packet added (by sequence number): the sequence numbers handed over after it, in order."""
    out = []
    for seq in seqs:
        p = RtpPacket(payload_type=111, sequence_number=seq & 0xFFFF, timestamp=960 * seq & 0xFFFFFFFF)
        p._data = seq.to_bytes(4, "big")  # type: ignore[attr-defined]
        got = []
        _, frame = jitter.add(p)
        while frame is not None:
            got.append(int.from_bytes(frame.data, "big"))
            assert frame.timestamp == 960 * got[-1] & 0xFFFFFFFF
            frame = jitter.pop_ready() if hasattr(jitter, "pop_ready") else None  # aiortc's: one per packet
        out.append(got)
    return out


def test_audio_in_order_goes_out_at_once_across_the_wrap() -> None:
    seqs = list(range(65533, 65533 + 6))
    assert _audio_feed(_audio_buffer(), seqs) == [[s] for s in seqs]
    # aiortc's own buffer: each packet only once 4 later ones have arrived
    plain = _audio_feed(JitterBuffer(capacity=16, prefetch=4), seqs)
    assert plain == [[], [], [], [], [65533], [65534]]


def test_audio_reordered_packets_come_out_in_order() -> None:
    assert _audio_feed(_audio_buffer(), [10, 12, 11, 13]) == [[10], [], [11, 12], [13]]


def test_audio_lost_packet_is_skipped_after_enough_newer_ones_and_late_ones_are_dropped() -> None:
    after_loss = [12 + i for i in range(AUDIO_REORDER_PACKETS)]
    out = _audio_feed(_audio_buffer(), [10, *after_loss, 11, after_loss[-1] + 1])
    # 11 lost: 12.. wait until AUDIO_REORDER_PACKETS are there, then all go out in order; 11 arriving
    # after that is dropped (its place was given up); the stream goes on
    assert out[0] == [10]
    assert all(o == [] for o in out[1:AUDIO_REORDER_PACKETS])
    assert out[AUDIO_REORDER_PACKETS] == after_loss
    assert out[-2:] == [[], [after_loss[-1] + 1]]


def test_audio_padding_makes_no_frame() -> None:
    jitter = _audio_buffer()
    assert _audio_feed(jitter, [1, 2]) == [[1], [2]]
    padding = RtpPacket(payload_type=111, sequence_number=3, timestamp=960 * 2)
    padding._data = b""  # type: ignore[attr-defined]
    assert jitter.add(padding) == (False, None)
    assert _audio_feed(jitter, [4]) == [[4]]


def test_audio_jumps_restart_the_buffer() -> None:
    jitter = _audio_buffer()
    assert _audio_feed(jitter, [100, 101]) == [[100], [101]]
    assert _audio_feed(jitter, [5000, 5001]) == [[5000], [5001]]  # far ahead: start there
    assert _audio_feed(jitter, [4000, 4001]) == [[4000], [4001]]  # far back: the sender restarted
    assert _audio_feed(jitter, [3990]) == [[]]  # just behind: late, dropped


async def test_each_kind_gets_its_buffer_and_it_is_idempotent() -> None:
    pc = RTCPeerConnection()
    try:
        audio = pc.addTransceiver("audio").receiver
        video = pc.addTransceiver("video").receiver
        jitters = [r._RTCRtpReceiver__jitter_buffer for r in (audio, video)]  # type: ignore[attr-defined]
        for receiver in (audio, video):
            assert prompt_assembly(receiver) is True and prompt_assembly(receiver) is True
        assert [r._RTCRtpReceiver__jitter_buffer for r in (audio, video)] == jitters  # type: ignore[attr-defined]
        assert isinstance(jitters[0], InOrderAudioBuffer) and isinstance(jitters[1], MarkerJitterBuffer)
    finally:
        await pc.close()


@pytest.mark.parametrize("path", ["callrt", "aiortc"])
async def test_the_last_frame_a_sender_sends_is_decoded(path: str) -> None:
    """A source that stops after 90 frames: with callrt's receive path the receiver decodes frame 89
    (what a muted camera or a one-off slide leaves on screen); aiortc's buffer waits for a frame 90
    that never comes."""
    install = prepare_receiver if path == "callrt" else hook_decoder
    async with (PatternVideoSource(320, 240, fps=30, frames=90) as src,
                EncodedVideoFanout(src, "vp8", bitrate=400_000) as fanout,
                connected(fanout.add_to, VideoSink, on_receiver=install) as (_, _, sink)):
        await eventually(lambda: fanout.frames_handled == 90)  # the last one encoded and sent
        await asyncio.sleep(0.5)  # its packets cross loopback
        latest = sink.latest()
        assert latest is not None and sink.received >= 30
        assert read_index(latest) == (89 if path == "callrt" else 88)


@pytest.mark.parametrize("path", ["callrt", "aiortc"])
async def test_one_lost_audio_packet_costs_no_lasting_delay(path: str) -> None:
    """One audio packet lost on the way (audio is not retransmitted): with callrt's receive path the
    receiver holds nothing back once the packets after it went out; aiortc's buffer keeps 14 of them
    (280 ms of audio) for the rest of the call. The tone keeps arriving either way."""
    receivers: list[Any] = []

    def install(receiver: Any) -> None:
        if path == "callrt":
            prepare_receiver(receiver)
        else:
            hook_decoder(receiver)
            lean_receive(receiver)  # the short path, to lose a packet on (jitter buffer: aiortc's)
        receivers.append(receiver)

    async with (ToneAudioSource(440.0) as src, EncodedAudioFanout(src) as fanout,
                connected(fanout.add_to, AudioSink, on_receiver=install) as (_, _, sink)):
        [receiver] = receivers
        jitter = receiver._RTCRtpReceiver__jitter_buffer
        loss = DropOnArrival(receiver._callrt_lean_receive, {40})
        await eventually(lambda: loss.dropped == 1)
        received = sink.received
        held = []
        for _ in range(20):  # a second after the loss, sampled between packets
            await asyncio.sleep(0.05)
            held.append(sum(p is not None for p in jitter._packets))
        assert sink.received - received >= 20  # it goes on
        samples = [(await asyncio.wait_for(sink.recv(), 5)).samples for _ in range(5)]
    tone = dominant_frequency(np.concatenate(samples), 48_000)
    assert abs(tone - 440.0) < 10, tone
    if path == "callrt":
        assert max(held[5:]) == 0, held  # handed over as each arrives
    else:
        assert min(held[5:]) >= 10, held  # the backlog the loss left stays
