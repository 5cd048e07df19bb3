"""The short receive path (``media.rtp_receive``) on real aiortc peers: frames and tones arrive through it,
lost packets are asked for again and their retransmissions (aiortc's path) complete the frames, a
packet lost for good still ends in a keyframe request, and anything it does not own stays aiortc's."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiortc.codecs.vpx import VpxPayloadDescriptor, vp8_depayload

from media.fanout import EncodedAudioFanout, EncodedVideoFanout
from media.receive_path import prepare_receiver
from media.rtp_receive import ENV, READ_SIZE, LeanReceive, lean_receive, one_byte_extension, vp8_payload
from media.sinks import AudioSink, VideoSink
from media.stall_recovery import StallWatch
from media.testing import PatternVideoSource, ToneAudioSource, dominant_frequency, read_index
from tests.media.helpers import DropOnArrival, connect, connected, eventually, indices_after_loss, next_indices

pytestmark = pytest.mark.timeout(60)


def _hooks(receiver: Any) -> tuple[LeanReceive, StallWatch | None]:
    """What a call installs on a receiver (``signaling.rtc.peer``)."""
    path = prepare_receiver(receiver)
    lean = path.lean
    assert lean is not None and lean_receive(receiver) is lean  # idempotent
    assert path.prompt_assembly
    assert prepare_receiver(receiver) == path
    return lean, path.stall_watch


_Call = tuple[EncodedVideoFanout, VideoSink, LeanReceive, StallWatch | None]


@contextlib.asynccontextmanager
async def _video_call(bitrate: int) -> AsyncIterator[_Call]:
    """A 320x240 VP8 fan-out to one loopback peer whose receiver has what a call installs."""
    hooks: list[tuple[LeanReceive, StallWatch | None]] = []
    async with (PatternVideoSource(320, 240, fps=30) as src,
                EncodedVideoFanout(src, "vp8", bitrate=bitrate) as fanout,
                connected(fanout.add_to, VideoSink, on_receiver=lambda r: hooks.append(_hooks(r))) as (_, _, sink)):
        [(lean, watch)] = hooks
        yield fanout, sink, lean, watch


async def test_video_takes_the_short_path_in_order_and_lost_packets_are_retransmitted() -> None:
    async with _video_call(600_000) as (fanout, sink, lean, _):
        loss = DropOnArrival(lean, {60, 61})
        indices = await next_indices(sink, 60, timeout=20)
        # every socket of the connection reads at most READ_SIZE per datagram, asyncio's reads too
        connection = lean.receiver.transport.transport._connection  # type: ignore[attr-defined]
        assert {p.transport.max_size for p in connection._protocols} == {READ_SIZE}
    assert loss.dropped == 2
    # every frame, in order: the two lost packets were NACKed from the short path, and their
    # retransmissions (RTX, which aiortc's handler unwraps) completed the frame; the first RTX
    # packet takes aiortc's path end to end (as every new SSRC's first packets do), the second
    # is handed to aiortc's handler from the short path
    assert indices == list(range(indices[0], indices[0] + 60)), indices
    assert lean.handled >= 100 and lean.deferred >= 1
    assert fanout.keyframe_requests <= 1  # no keyframe needed (at most the joiner's first)


async def test_a_packet_lost_for_good_on_the_short_path_is_skipped_and_a_keyframe_requested() -> None:
    async with _video_call(400_000) as (fanout, sink, lean, watch):
        loss = DropOnArrival(lean, {60}, rtx=True)
        requests_at_loss: list[int] = []
        loss.on_lost = lambda: requests_at_loss.append(fanout.keyframe_requests)
        after = await indices_after_loss(sink, loss)
    assert watch is not None and watch.recoveries >= 1
    assert fanout.keyframe_requests > requests_at_loss[0]  # the PLI went out from the short path
    assert len(after) >= 40, after
    tail = after[-30:]
    assert all(0 < y - x <= 3 for x, y in itertools.pairwise(tail)), after


async def test_a_packet_the_short_path_fails_on_costs_that_packet_only(caplog: pytest.LogCaptureFixture) -> None:
    async with _video_call(400_000) as (_, sink, lean, _):
        await asyncio.wait_for(sink.recv(), 10)
        await eventually(lambda: lean.handled > 0)
        own = lean.datagram
        lean.datagram = lambda *args: 1 / 0  # type: ignore[assignment,method-assign]
        hook = lean.receiver.transport._callrt_receive_hook  # type: ignore[attr-defined]
        await eventually(lambda: hook.failed >= 3)
        lean.datagram = own  # type: ignore[method-assign]
        # the stream goes on (the lost packets asked for again or a keyframe requested)
        first = read_index(await asyncio.wait_for(sink.recv(), 10))
        more = [read_index(await asyncio.wait_for(sink.recv(), 10)) for _ in range(30)]
    assert more[-1] > first and lean.handled > 30
    assert sum("short receive path failed" in r.getMessage() for r in caplog.records) == 1


async def test_audio_takes_the_short_path_and_the_tone_arrives() -> None:
    tone = ToneAudioSource(740.0, channels=1, frame_ms=20)
    await tone.start()
    async with EncodedAudioFanout(tone) as fanout:
        hooks: list[tuple[LeanReceive, StallWatch | None]] = []
        a, b, sink = await connect(fanout.add_to, lambda t: AudioSink(t, maxsize=200),
                                   on_receiver=lambda r: hooks.append(_hooks(r)))
        try:
            await eventually(lambda: sink.received >= 50, timeout=10)
            got = [await asyncio.wait_for(sink.recv(), 5) for _ in range(50)]
            pcm = np.concatenate([f.samples for f in got[10:]])
            assert abs(dominant_frequency(pcm, got[0].sample_rate) - 740) < 10
            [(lean, watch)] = hooks
            assert watch is None and lean.handled >= 40
            # what aiortc's reports and stats read was kept: packets counted per SSRC, transport bytes
            stats = next(iter(lean.receiver._RTCRtpReceiver__remote_streams.values()))  # type: ignore[attr-defined]
            assert stats.packets_received >= lean.handled
            assert lean.receiver.transport._RTCDtlsTransport__rx_packets >= lean.handled  # type: ignore[attr-defined]
        finally:
            await sink.aclose()
            await a.close()
            await b.close()
    await tone.stop()


async def test_a_foreign_packet_handler_or_the_switch_keeps_aiortcs_path(monkeypatch: pytest.MonkeyPatch) -> None:
    src = PatternVideoSource(320, 240, fps=30)
    await src.start()
    pcs: list[Any] = []
    try:
        async with EncodedVideoFanout(src, "vp8", bitrate=400_000) as fanout:
            seen: list[int] = []
            leans: list[LeanReceive | None] = []

            def on_receiver(receiver: Any) -> None:
                own = receiver._handle_rtp_packet

                async def counting(packet: Any, arrival_time_ms: int) -> None:  # e.g. a test's loss injector
                    seen.append(packet.sequence_number)
                    await own(packet, arrival_time_ms)

                receiver._handle_rtp_packet = counting
                leans.append(lean_receive(receiver))

            a, b, sink = await connect(fanout.add_to, VideoSink, on_receiver=on_receiver)
            pcs += [a, b]
            try:
                indices = [read_index(await asyncio.wait_for(sink.recv(), 10)) for _ in range(20)]
            finally:
                await sink.aclose()
            [lean] = leans
            assert lean is not None and lean.handled == 0  # every packet went through the foreign handler
            assert len(seen) >= 20 and indices == list(range(indices[0], indices[0] + 20))
    finally:
        for pc in pcs:
            await pc.close()
        await src.stop()
    from aiortc import RTCPeerConnection

    monkeypatch.setenv(ENV, "aiortc")
    pc = RTCPeerConnection()
    try:
        assert lean_receive(pc.addTransceiver("video").receiver) is None
    finally:
        await pc.close()


def _descriptors() -> list[bytes]:
    out = []
    for x, i, m, l_, t, k, s in itertools.product((0, 1), repeat=7):
        first = (x << 7) | (s << 4) | 2
        if not x:
            out.append(bytes([first]))
            continue
        d = [first, (i << 7) | (l_ << 6) | (t << 5) | (k << 4)]
        if i:
            d += [0x80 | 0x12, 0x34] if m else [0x21]
        if l_:
            d.append(7)
        if t or k:
            d.append(0b01000011)
        out.append(bytes(d))
    return out


def test_vp8_descriptor_is_stripped_as_aiortc_does() -> None:
    body = bytes(range(40))
    for descriptor in _descriptors():
        assert vp8_payload(descriptor + body) == vp8_depayload(descriptor + body)
        # a descriptor cut anywhere is refused by both
        for cut in range(len(descriptor)):
            with pytest.raises(ValueError):
                vp8_depayload(descriptor[:cut])
            with pytest.raises(ValueError):
                vp8_payload(descriptor[:cut])
    # and what aiortc's own packetizer writes round-trips
    desc = VpxPayloadDescriptor(partition_start=1, partition_id=0, picture_id=300)
    assert vp8_payload(bytes(desc) + body) == body


def test_abs_send_time_is_read_from_one_byte_extensions_as_aiortc_writes_them() -> None:
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
    from aiortc.rtp import HeaderExtensions, HeaderExtensionsMap

    ext_map = HeaderExtensionsMap()
    ext_map.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
        RTCRtpHeaderExtensionParameters(id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
    ]))
    for mid, ast in (("0", 0x123456), ("video-long-mid", 1), (None, 0xFFFFFF)):
        ext = HeaderExtensions()
        ext.mid, ext.abs_send_time = mid, ast
        profile, value = ext_map.set(ext)
        assert profile == 0xBEDE
        assert one_byte_extension(value, 0, len(value), 3) == ast
        assert one_byte_extension(value, 0, len(value), 5) is None  # not there
    # padding, an element cut short, the reserved id 15, a wrong length: no value, no exception
    assert one_byte_extension(bytes([0, 0, 0x32, 1, 2, 3]), 0, 6, 3) == 0x010203
    assert one_byte_extension(bytes([0x32, 1, 2]), 0, 3, 3) is None
    assert one_byte_extension(bytes([0xF0, 0x32, 1, 2, 3]), 0, 5, 3) is None
    assert one_byte_extension(bytes([0x31, 1, 2, 0]), 0, 4, 3) is None
