"""Encode once, fan out: real aiortc peer connections over loopback, content checked at every receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCPeerConnection, RTCRtpSender

from media.codecs import VideoEncoder, VideoEncoderSettings
from media.fanout import EncodedVideoFanout
from media.frames import EncodedVideoFrame, VideoFrame
from media.sinks import VideoSink
from media.testing import PatternVideoSource, draw_index, read_index, render_pattern
from tests.media.helpers import connect, eventually

pytestmark = pytest.mark.timeout(60)


class Peers:
    """Sender/receiver pc pairs plus the receiving sinks, all closed at teardown."""

    def __init__(self) -> None:
        self.pairs: list[tuple[RTCPeerConnection, RTCPeerConnection, VideoSink]] = []

    async def add(self, fanout: EncodedVideoFanout, prefer: str | None = None) -> VideoSink:
        def add_tracks(pc: RTCPeerConnection) -> None:
            fanout.add_to(pc)
            if prefer is not None:  # override the fan-out's own preference (codec mismatch test)
                caps = RTCRtpSender.getCapabilities("video").codecs
                first = [c for c in caps if c.mimeType.lower() == prefer]
                pc.getTransceivers()[0].setCodecPreferences(first + [c for c in caps if c not in first])

        a, b, sink = await connect(add_tracks, VideoSink)
        self.pairs.append((a, b, sink))
        return sink

    async def close(self) -> None:
        for a, b, sink in self.pairs:
            await sink.aclose()
            await a.close()
            await b.close()


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    p = Peers()
    yield p
    await p.close()


@pytest.fixture
async def source() -> AsyncIterator[PatternVideoSource]:
    src = PatternVideoSource(320, 240, fps=30)
    await src.start()
    yield src
    await src.stop()


async def indices(sink: VideoSink, n: int) -> list[int]:
    return [read_index(await asyncio.wait_for(sink.recv(), 10)) for _ in range(n)]


def assert_increasing(seq: list[int]) -> None:
    assert seq == sorted(seq) and len(set(seq)) == len(seq), seq


async def test_one_encoder_feeds_three_peers(peers: Peers, source: PatternVideoSource) -> None:
    async with EncodedVideoFanout(source, "vp8", bitrate=500_000) as fanout:
        sinks = [await peers.add(fanout) for _ in range(3)]
        got = [await indices(s, 10) for s in sinks]
        for seq in got:
            assert_increasing(seq)
            assert max(seq) <= source.last_index  # real frames of this source, in order
        # One encode per source frame, whatever the number of peers ...
        stats = fanout.stats()
        assert stats.encodes <= stats.frames_in
        # ... and every peer was sent (nearly) every encoded packet (a peer started late, or
        # flushed once on a loaded machine, misses a few).
        for peer in stats.peers:
            assert peer.mode == "encoded" and peer.sent >= 0.7 * stats.encodes
        assert sum(p.sent for p in stats.peers) > 2.1 * stats.encodes
        # ... and split into RTP payloads once, not once per peer
        assert 0 < fanout.packetizer.packed <= stats.encodes
        # REMB from each receiver reached the fan-out through the sender hook.
        await eventually(lambda: all(t.bandwidth for t in fanout.tracks), timeout=8)
        assert fanout.encoder.bitrate == max(fanout.encoder.settings.min_bitrate,
                                             min(min(t.bandwidth for t in fanout.tracks),
                                                 fanout.encoder.settings.max_bitrate))


async def test_pli_from_a_peer_reaches_the_shared_encoder(peers: Peers, source: PatternVideoSource) -> None:
    async with EncodedVideoFanout(source, "vp8") as fanout:
        await peers.add(fanout)
        sink = await peers.add(fanout)
        await indices(sink, 3)
        requests, keyframes = fanout.keyframe_requests, fanout.encoder.keyframes
        a, b, _ = peers.pairs[1]
        receiver, sender = b.getReceivers()[0], a.getSenders()[0]
        await receiver._send_rtcp_pli(sender._ssrc)  # a real PLI over RTCP, as on picture loss
        await eventually(lambda: fanout.encoder.keyframes > keyframes)
        assert fanout.keyframe_requests > requests
        assert_increasing(await indices(sink, 5))


async def test_late_joiner_gets_a_keyframe_fast(peers: Peers, source: PatternVideoSource) -> None:
    async with EncodedVideoFanout(source, "vp8") as fanout:
        early = await peers.add(fanout)
        await indices(early, 15)
        keyframes = fanout.encoder.keyframes
        late = await peers.add(fanout)
        first = await asyncio.wait_for(late.recv(), 10)
        assert read_index(first) <= source.last_index
        assert fanout.encoder.keyframes > keyframes  # forced on the late peer's first recv()
        assert fanout.stats().encodes <= fanout.stats().frames_in


async def test_pause_resume_keeps_the_transceiver(peers: Peers, source: PatternVideoSource) -> None:
    async with EncodedVideoFanout(source, "vp8") as fanout:
        sink = await peers.add(fanout)
        await indices(sink, 3)
        a = peers.pairs[0][0]
        transceivers = a.getTransceivers()
        fanout.pause()
        assert fanout.state == "paused"
        await asyncio.sleep(0.3)
        received, pulled = sink.received, fanout.frames_in
        await asyncio.sleep(0.4)
        assert sink.received == received and fanout.frames_in == pulled  # nothing pulled, nothing sent
        keyframes = fanout.encoder.keyframes
        fanout.resume()
        after = await indices(sink, 5)
        assert_increasing(after)
        assert fanout.encoder.keyframes > keyframes
        assert a.getTransceivers() == transceivers and a.getTransceivers()[0].direction == "sendrecv"


async def test_replace_source_switches_camera(peers: Peers, source: PatternVideoSource) -> None:
    async with EncodedVideoFanout(source, "vp8") as fanout:
        sink = await peers.add(fanout)
        await indices(sink, 3)
        other = PatternVideoSource(160, 120, fps=30)
        await other.start()
        try:
            assert fanout.replace_source(other) is source
            await eventually(lambda: sink.latest() is not None and sink.latest().width == 160, timeout=5)
            frame = await asyncio.wait_for(sink.recv(), 5)
            while frame.width != 160:
                frame = await asyncio.wait_for(sink.recv(), 5)
            assert read_index(frame) <= other.last_index
            assert fanout.encoder.rebuilds >= 1
        finally:
            await other.stop()


async def test_h264_fanout_and_codec_mismatch_fallback(peers: Peers, source: PatternVideoSource) -> None:
    async with EncodedVideoFanout(source, "h264", bitrate=600_000) as fanout:
        matched = await peers.add(fanout)
        mismatched = await peers.add(fanout, prefer="video/vp8")  # remote ends up negotiating VP8
        assert_increasing(await indices(matched, 5))
        assert_increasing(await indices(mismatched, 5))  # aiortc encodes VP8 for that one peer
        modes = sorted(t.mode for t in fanout.tracks)
        assert modes == ["encoded", "raw"]


async def test_bandwidth_policy_follows_the_lowest_peer() -> None:
    async with EncodedVideoFanout(None, "vp8", bitrate=800_000) as fanout:
        s = fanout.encoder.settings
        t1, t2, t3 = fanout.subscribe(), fanout.subscribe(), fanout.subscribe()
        assert fanout.encoder.bitrate == 800_000  # no estimate yet: the configured rate
        fanout.report_bandwidth(t1, 2_000_000)
        fanout.report_bandwidth(t2, 600_000)
        assert fanout.encoder.bitrate == 600_000
        fanout.report_bandwidth(t3, 10_000)
        assert fanout.encoder.bitrate == s.min_bitrate
        fanout.unsubscribe(t3)
        fanout.unsubscribe(t2)
        assert fanout.encoder.bitrate == min(2_000_000, s.max_bitrate)
        assert t2.readyState == "ended"


async def test_slow_peer_queue_is_bounded_and_resyncs_on_a_keyframe() -> None:
    async with EncodedVideoFanout(None, "vp8", queue_size=4) as fanout:
        track = fanout.subscribe()
        recv = asyncio.ensure_future(track.recv())  # started, then never consumes again
        await asyncio.sleep(0)
        enc = VideoEncoder(codec="vp8")
        pattern = render_pattern(160, 120, 10)
        frames = [VideoFrame(pattern[i % 10], pts=i * 3000) for i in range(30)]
        packets = [p for i, f in enumerate(frames) for p in enc.encode(f, keyframe=(i == 0))]
        for p in packets:
            track.offer(p)
            assert len(track._queue) <= 4
        assert track.dropped > 0 and track.skipped > 0
        assert fanout.keyframe_requests >= 2  # first recv, then the overflow
        assert len(track._queue) == 0  # flushed: deltas after a gap would not decode
        (key,) = enc.encode(VideoFrame(pattern[0], pts=31 * 3000), keyframe=True)  # the answer to the request
        track.offer(key)
        assert (await asyncio.wait_for(recv, 2)) is key


async def test_a_peer_starting_during_an_encode_still_gets_a_keyframe():
    """Regression: a subscriber whose first recv() (and keyframe request) landed while a frame was
    being encoded missed that keyframe and then waited for the next periodic one (100 s)."""
    import time

    from devices import TestPattern
    from media.fanout import EncodedVideoFanout

    source = TestPattern(320, 240, fps=30)
    await source.start()
    fanout = EncodedVideoFanout(source, "vp8")
    original = fanout.encoder.encode
    loop = asyncio.get_running_loop()
    in_flight = asyncio.Event()

    def slow_encode(frame, *args, **kwargs):  # the worker thread is slow to get the CPU
        loop.call_soon_threadsafe(in_flight.set)
        time.sleep(0.02)
        return original(frame, *args, **kwargs)

    fanout.encoder.encode = slow_encode
    first = fanout.subscribe()
    drain = asyncio.ensure_future(_drain(first))
    try:
        for _ in range(3):
            await asyncio.sleep(0.3)
            in_flight.clear()
            await in_flight.wait()  # an encode was just handed to the worker
            late = fanout.subscribe()
            packet = await asyncio.wait_for(late.recv(), 3.0)
            assert packet.is_keyframe
            fanout.unsubscribe(late)
    finally:
        drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)
        await fanout.aclose()
        await source.stop()


async def _drain(track):
    while True:
        await track.recv()


REPLAY_OFFSET = 5000


class _ReplayedPattern(PatternVideoSource):
    """Frames whose pixels show index i but whose packets (``EncodedVideoFrame``) carry index i + 5000:
    what a receiver decodes tells which was sent. A keyframe every 10 frames, as a replay has."""

    def __init__(self) -> None:
        super().__init__(320, 240, fps=30)
        self._encoder = VideoEncoder(VideoEncoderSettings(codec="vp8", bitrate=400_000))
        self.rendered = 0

    async def recv(self) -> VideoFrame:
        frame = await super().recv()
        shown = VideoFrame(frame.data.copy(), pts=frame.pts)
        draw_index(shown, self.last_index + REPLAY_OFFSET)
        if self.last_index % 10 == 0:
            self._encoder.force_keyframe()
        (packet,) = self._encoder.encode(shown)

        def render() -> VideoFrame:
            self.rendered += 1
            return frame

        return EncodedVideoFrame.replay(bytes(packet), "vp8", packet.is_keyframe, frame.width, frame.height,
                                        render, pts=frame.pts, capture_time=frame.capture_time)


async def test_pre_encoded_video_is_sent_as_it_is(peers: Peers) -> None:
    """The replay's packets reach every peer (late joiner included, from the replay's next keyframe)
    without the fan-out encoding or rendering anything; switching to a camera starts with our keyframe."""
    source = _ReplayedPattern()
    await source.start()
    try:
        async with EncodedVideoFanout(source, "vp8") as fanout:
            first = await peers.add(fanout)
            got = await indices(first, 8)
            assert_increasing(got)
            assert all(i >= REPLAY_OFFSET for i in got), got  # the packets, not the pixels
            late = await peers.add(fanout)
            assert all(i >= REPLAY_OFFSET for i in await indices(late, 3))
            stats = fanout.stats()
            assert fanout.encodes_done == 0 and stats.encodes == 0 and stats.passed_through >= 11
            assert source.rendered == 0  # nobody needed the pixels
            camera = PatternVideoSource(320, 240, fps=30)
            await camera.start()
            try:
                fanout.replace_source(camera)
                for sink in (first, late):
                    frame = await asyncio.wait_for(sink.recv(), 5)
                    while read_index(frame) >= REPLAY_OFFSET:
                        frame = await asyncio.wait_for(sink.recv(), 5)
                    assert read_index(frame) <= camera.last_index  # decodes cleanly at once
                assert fanout.encoder.keyframes >= 1 and fanout.encodes_done > 0
            finally:
                await camera.stop()
    finally:
        await source.stop()


def test_an_encoded_video_frame_renders_its_pixels_on_first_use() -> None:
    calls = []
    pixels = VideoFrame.allocate(64, 32)

    def render() -> VideoFrame:
        calls.append(1)
        return pixels

    frame = EncodedVideoFrame.replay(b"\x00", "vp8", True, 64, 32, render, pts=7, capture_time=1.0)
    assert (frame.width, frame.height, frame.pts, frame.keyframe, frame.packet) == (64, 32, 7, True, b"\x00")
    assert calls == []
    assert frame.y.shape == (32, 64) and int(frame.y[0, 0]) == 16 and frame.data.shape == (48, 64)
    assert calls == [1]
    wrong = EncodedVideoFrame.replay(b"", "vp8", False, 64, 48, render)
    with pytest.raises(ValueError):
        _ = wrong.y
