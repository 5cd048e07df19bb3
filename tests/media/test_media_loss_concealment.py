"""Opus loss concealment (``media.loss_concealment``): a lost packet is played as libopus' guess, not a hole.

Unit cases decode a real Opus tone with packets taken out; the peer case loses one packet on the
way between real aiortc peers and checks what the receiving application got.
"""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest

from devices.tone import rms_level
from media.codecs import AudioDecoder, AudioEncoder
from media.fanout import EncodedAudioFanout
from media.frames import AudioFrame
from media.inline_decode import concealment_stats
from media.loss_concealment import OpusConcealment, toc_frame_samples
from media.receive_path import prepare_receiver
from media.sinks import AudioSink
from media.testing import ToneAudioSource, dominant_frequency
from tests.media.helpers import DropOnArrival, connected, eventually

pytestmark = pytest.mark.timeout(60)

TONE = 440.0


def _tone_packets(seconds: float = 1.0, first_pts: int = 0) -> list[tuple[bytes, int]]:
    """(Opus packet, RTP timestamp) of a 440 Hz stereo tone, 20 ms each."""
    n = int(48_000 * seconds)
    x = (np.sin(2 * np.pi * TONE * np.arange(n) / 48_000) * 8000).astype(np.int16)
    stereo = np.stack([x, x], 1)
    enc = AudioEncoder(bitrate=48_000)
    out = []
    for i in range(0, n, 960):
        for p in enc.encode(AudioFrame(stereo[i:i + 960].copy(), 48_000, i)):
            out.append((bytes(p), (first_pts + int(p.pts)) & 0xFFFFFFFF))
    return out


def _decode(dec: AudioDecoder, packets: list[tuple[bytes, int]]) -> list[tuple[int, np.ndarray]]:
    return [(f.pts, f.samples.copy()) for data, pts in packets for f in dec.decode(data, pts=pts)]


# the second: RTP time wraps between the lost packet and the next one
@pytest.mark.parametrize("first_pts", [0, 0x100000000 - 860 - 15 * 960])
def test_a_lost_packet_is_concealed_with_the_tone(first_pts: int) -> None:
    packets = _tone_packets(first_pts=first_pts)
    lost = 15
    dec = AudioDecoder()
    got = _decode(dec, packets[:lost] + packets[lost + 1:])
    steps = {(b[0] - a[0]) & 0xFFFFFFFF for a, b in itertools.pairwise(got)}
    assert steps == {960}, steps  # no hole: the lost 20 ms are there
    assert len(got) == len(packets)
    concealed = dict(got)[packets[lost][1]]
    normal = rms_level(got[lost - 1][1])
    assert abs(dominant_frequency(concealed, 48_000) - TONE) <= 50  # 50 Hz bins in 20 ms
    assert rms_level(concealed) > 0.5 * normal, (rms_level(concealed), normal)
    assert dec.concealment is not None
    stats = dec.concealment.stats()
    assert (stats.concealed_samples, stats.concealment_events, stats.gaps_left) == (960, 1, 0)


def test_without_concealment_the_hole_stays() -> None:
    packets = _tone_packets()
    got = _decode(AudioDecoder(conceal_ms=0), packets[:15] + packets[16:])
    assert len(got) == len(packets) - 1
    assert (got[15][0] - got[14][0]) == 1920


def test_consecutive_losses_are_one_event_and_a_long_gap_is_left_alone() -> None:
    packets = _tone_packets(2.0)
    dec = AudioDecoder()
    # 3 lost (60 ms: concealed), then 10 lost (200 ms, past MAX_GAP_MS: a sender that paused)
    got = _decode(dec, packets[:10] + packets[13:40] + packets[50:])
    assert dec.concealment is not None
    stats = dec.concealment.stats()
    assert (stats.concealed_samples, stats.concealment_events, stats.gaps_left) == (3 * 960, 1, 1)
    pts = [p for p, _ in got]
    assert pts[10:13] == [packets[i][1] for i in (10, 11, 12)]
    assert packets[45][1] not in pts and packets[50][1] in pts


def test_a_late_packet_neither_conceals_nor_moves_the_stream_back() -> None:
    packets = _tone_packets(0.4)
    order = [*packets[:5], packets[6], packets[5], *packets[7:]]  # 5 arrives after 6
    dec = AudioDecoder()
    got = _decode(dec, order)
    assert dec.concealment is not None
    # 6 came early: 5 was concealed; the real 5 then decodes late (the decoder does not drop it)
    stats = dec.concealment.stats()
    assert (stats.concealed_samples, stats.concealment_events) == (960, 1)
    assert [p for p, _ in got][-1] == packets[-1][1]
    assert dec.concealment.expected == packets[-1][1] + 960


def test_a_sender_that_restarts_its_clock_is_followed() -> None:
    """Timestamps jump back (a sender restarted): concealment follows the new clock, not the old end."""
    packets = _tone_packets(0.6)
    dec = AudioDecoder()
    _decode(dec, [(data, pts + 5_000_000) for data, pts in packets[:10]])  # the old clock, far ahead
    got = _decode(dec, packets[10:15] + packets[16:])  # the new clock, with packet 15 lost
    assert dec.concealment is not None
    stats = dec.concealment.stats()
    assert (stats.concealed_samples, stats.concealment_events) == (960, 1)
    assert packets[15][1] in [p for p, _ in got]


def test_toc_durations() -> None:
    assert toc_frame_samples(1 << 3) == 960  # SILK 20 ms
    assert toc_frame_samples(3 << 3) == 2880  # SILK 60 ms
    assert toc_frame_samples(12 << 3) == 480  # hybrid 10 ms
    assert toc_frame_samples(16 << 3) == 120  # CELT 2.5 ms
    assert toc_frame_samples(31 << 3) == 960  # CELT 20 ms
    packets = _tone_packets(0.1)
    assert toc_frame_samples(packets[0][0][0]) == 960  # what our encoder sends


def test_plan_fills_whole_frames_from_where_the_stream_ended() -> None:
    c = OpusConcealment()
    assert c.plan(5000, 31 << 3) == []  # nothing decoded yet: nothing to fill
    c.done(0, 960)
    plan = c.plan(960 * 3, (31 << 3) | 3)
    assert plan == [(bytes([31 << 3]), 960), (bytes([31 << 3]), 1920)]


async def test_one_packet_lost_between_peers_is_concealed() -> None:
    """A tone over real peers with one packet lost on the way: the application gets every 20 ms
    slot, the lost one as libopus' continuation of the tone, and the receiver counts it."""
    receivers = []

    def install(receiver: object) -> None:
        prepare_receiver(receiver)  # type: ignore[arg-type]
        receivers.append(receiver)

    async with (ToneAudioSource(TONE) as src, EncodedAudioFanout(src) as fanout,
                connected(fanout.add_to, AudioSink, on_receiver=install) as (_, _, sink)):
        frames: list[tuple[int, np.ndarray]] = []
        sink.on_frame(lambda f: frames.append((f.pts, f.samples.copy())))
        [receiver] = receivers
        loss = DropOnArrival(receiver._callrt_lean_receive, {40})
        await eventually(lambda: loss.dropped == 1)
        await asyncio.sleep(0.3)
        stats = concealment_stats(receiver)
    assert stats is not None and (stats.concealed_samples, stats.concealment_events) == (960, 1)
    [lost_rtp] = loss.lost_timestamps
    lost = (lost_rtp - receiver._RTCRtpReceiver__timestamp_mapper._origin) & 0xFFFFFFFF  # as aiortc maps it
    by_pts = dict(frames)
    assert {lost - 960, lost, lost + 960} <= by_pts.keys()  # the slot is there, between its neighbours
    concealed, before = by_pts[lost], by_pts[lost - 960]
    assert abs(dominant_frequency(concealed, 48_000) - TONE) <= 50
    assert rms_level(concealed) > 0.5 * rms_level(before)
