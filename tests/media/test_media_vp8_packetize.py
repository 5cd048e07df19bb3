"""callrt's VP8 payloader (``media.vp8_packetize``): aiortc's bytes exactly, and frames that survive the trip."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import pytest
from aiortc.codecs.vpx import PACKET_MAX, Vp8Encoder, vp8_depayload

from media.codecs import VideoDecoder, VideoEncoder
from media.frames import VIDEO_TIME_BASE, VideoFrame
from media.testing import draw_index, read_index, render_pattern
from media.vp8_packetize import Vp8Packetizer, rtp_timestamp


def _packet(size: int, pts: int | None = 123_456, time_base: Fraction | None = Fraction(1, 90_000)) -> av.Packet:
    packet = av.Packet(os.urandom(size))
    packet.pts = pts
    if time_base is not None:
        packet.time_base = time_base
    return packet


CHUNK = PACKET_MAX - 4


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 7, 6_200, 40_000])
def test_payloads_are_aiortcs_bytes_for_every_split(size):
    ours, theirs = Vp8Packetizer(picture_id=1234), Vp8Encoder()
    theirs.picture_id = 1234
    for _ in range(3):  # the picture ID advances the same way
        packet = _packet(size)
        assert ours.pack(packet) == theirs.pack(packet)
    assert ours.picture_id == theirs.picture_id


def test_picture_id_wraps_at_15_bits_as_aiortcs():
    ours, theirs = Vp8Packetizer(picture_id=(1 << 15) - 2), Vp8Encoder()
    theirs.picture_id = (1 << 15) - 2
    for _ in range(4):
        packet = _packet(3_000)
        assert ours.pack(packet) == theirs.pack(packet)
    assert ours.picture_id == 2


def test_a_random_first_picture_id_in_range():
    ids = {Vp8Packetizer().picture_id for _ in range(50)}
    assert len(ids) > 1 and all(0 <= i < 1 << 15 for i in ids)


@pytest.mark.parametrize("time_base", [Fraction(1, 90_000), Fraction(1, 30), Fraction(1, 1000), Fraction(1, 48_000)])
def test_timestamp_is_the_pts_in_the_90khz_clock_as_aiortcs(time_base):
    for pts in (0, 1, 7, 29, 123_457):
        packet = _packet(10, pts=pts, time_base=time_base)
        assert rtp_timestamp(packet) == Vp8Encoder().pack(packet)[1]
    assert rtp_timestamp(_packet(10, pts=None)) == 0


def test_encoded_frames_survive_payloading_and_depayloading():
    """Real VP8 frames at 640x480: split by callrt, reassembled by aiortc's depayloader, decoded to the drawn index."""
    pattern = render_pattern(640, 480, count=6)
    encoder, decoder = VideoEncoder(), VideoDecoder("vp8")
    packer = Vp8Packetizer()
    sent, seen, split = [], [], 0
    for i in range(20):
        frame = VideoFrame(pattern[i % len(pattern)].copy(), pts=i * 3000, time_base=VIDEO_TIME_BASE)
        draw_index(frame, 100 + i)
        for packet in encoder.encode(frame, keyframe=i == 0):
            payloads, timestamp = packer.pack(packet)
            assert all(len(p) <= PACKET_MAX for p in payloads)
            assert timestamp == packet.pts
            split += len(payloads) > 1
            data = b"".join(vp8_depayload(p) for p in payloads)
            assert data == bytes(packet)
            sent.append(100 + i)
            seen += [read_index(f) for f in decoder.decode(data)]
    assert split > 0  # some frames took more than one payload
    assert seen == sent[: len(seen)] and len(seen) >= 15
