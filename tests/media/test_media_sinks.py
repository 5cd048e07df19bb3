"""The receive path: bounded sinks over real remote tracks, plane views, BGR on demand, clean shutdown."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from media.avframes import to_av
from media.errors import PipelineClosed
from media.fanout import EncodedVideoFanout, FrameFanout
from media.frames import VideoFrame
from media.sinks import AudioSink, VideoSink
from media.testing import PatternVideoSource, ToneAudioSource, dominant_frequency, draw_index, read_index
from tests.media.helpers import connect, eventually

pytestmark = pytest.mark.timeout(60)


class CountingTrack(MediaStreamTrack):
    """A real MediaStreamTrack yielding ``count`` indexed frames as fast as asked, then ending."""

    kind = "video"

    def __init__(self, count: int, grey: int | None = None) -> None:
        super().__init__()
        self.count, self.grey, self.i = count, grey, 0
        self.made: list[av.VideoFrame] = []

    async def recv(self) -> av.VideoFrame:
        await asyncio.sleep(0)
        if self.i >= self.count:
            self.stop()
            raise MediaStreamError
        f = VideoFrame.allocate(128, 96, pts=self.i * 3000)
        if self.grey is not None:
            f.y[:] = self.grey
        else:
            draw_index(f, self.i)
        self.i += 1
        out = to_av(f)
        self.made.append(out)
        return out


class PausableTrack(MediaStreamTrack):
    """A real MediaStreamTrack yielding indexed frames at 30 fps while ``running`` is set."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.running = asyncio.Event()
        self.running.set()
        self.i = 0

    async def recv(self) -> av.VideoFrame:
        await self.running.wait()
        await asyncio.sleep(1 / 30)
        self.i += 1
        return to_av(VideoFrame.allocate(64, 48, pts=self.i * 3000))


async def test_sink_rate_reads_at_once_and_falls_to_zero_when_frames_stop() -> None:
    track = PausableTrack()
    sink = VideoSink(track)
    try:
        await asyncio.sleep(0.5)  # before a whole second: already a rate, not 0
        assert 15 < sink.stats().fps < 45
        await asyncio.sleep(1.0)
        assert 20 < sink.stats().fps < 40
        track.running.clear()  # the sender stops: the rate must not keep its last value
        await asyncio.sleep(2.2)
        assert sink.stats().fps < 1.0
        assert sink.received > 30
    finally:
        track.running.set()
        await sink.aclose()


async def test_sink_is_bounded_without_a_consumer() -> None:
    src = PatternVideoSource(320, 240, fps=30)
    await src.start()
    async with EncodedVideoFanout(src, "vp8") as fanout:
        a, b, sink = await connect(fanout.add_to, lambda t: VideoSink(t, maxsize=3))
        try:
            await eventually(lambda: sink.received >= 20, timeout=10)
            stats = sink.stats()
            assert stats.queued <= 3
            assert stats.dropped >= stats.received - 3 - 1
            assert sink.track._queue.qsize() <= 5  # aiortc's unbounded queue is kept drained
            latest = sink.latest()
            assert latest is not None and 0 <= src.last_index - read_index(latest) < 30  # a recent frame
        finally:
            await sink.aclose()
            await a.close()
            await b.close()
    await src.stop()
    assert sink.ended and sink.latest() is None


async def test_async_iteration_in_order_then_ends() -> None:
    track = CountingTrack(12)
    sink = VideoSink(track, maxsize=100)
    got = [read_index(f) async for f in sink]
    assert got == list(range(12))
    assert sink.ended and sink.stats().received == 12 and sink.stats().dropped == 0
    await sink.aclose()


async def test_frames_are_views_of_the_decoder_frames() -> None:
    track = CountingTrack(1)
    sink = VideoSink(track)
    frame = await sink.recv()
    plane = np.frombuffer(track.made[0].planes[0], np.uint8)
    assert np.shares_memory(frame.y, plane) and not frame.is_packed
    await sink.aclose()


async def test_on_frame_callbacks_and_unregister() -> None:
    track = CountingTrack(10)
    sink = VideoSink(track, autostart=False)
    seen: list[int] = []
    unregister = sink.on_frame(lambda f: seen.append(read_index(f)))
    sink.on_frame(lambda f: 1 / 0)  # a failing callback is logged, not fatal
    sink.start()
    await sink.wait_ended()
    assert seen == list(range(10))
    unregister()
    assert sink.stats().dropped == 10 - 4  # default maxsize 4, nobody consumed
    await sink.aclose()


async def test_to_bgr_only_when_asked_into_reused_buffers() -> None:
    track = CountingTrack(3, grey=126)
    sink = VideoSink(track)
    await sink.wait_ended()
    frames = []
    while len(frames) < 3:
        frames.append(await sink.recv())
    b1, b2, b3 = (sink.to_bgr(f) for f in frames)
    assert b1 is not None and b1.shape == (96, 128, 3)
    assert np.shares_memory(b1, b3) and not np.shares_memory(b1, b2)
    assert abs(float(b3.mean()) - (126 - 16) * 255 / 219) < 2  # limited-range grey to full range
    await sink.aclose()


async def test_aclose_cancels_and_awaits_the_task() -> None:
    track = CountingTrack(10**9)
    sink = VideoSink(track)
    await eventually(lambda: sink.received > 5)
    task = sink._task
    await sink.aclose()
    assert task is not None and task.done()
    with pytest.raises(PipelineClosed):
        await sink.recv()
    await sink.aclose()  # idempotent
    with pytest.raises(PipelineClosed):
        sink.start()


async def test_audio_over_a_peer_connection_keeps_its_tone() -> None:
    tone = ToneAudioSource(440.0)
    await tone.start()
    async with FrameFanout(tone) as fanout:
        a, b, sink = await connect(fanout.add_to, lambda t: AudioSink(t, maxsize=200))
        try:
            await eventually(lambda: sink.received >= 40, timeout=10)
            frames = []
            while len(frames) < 40:
                frames.append(await sink.recv())
        finally:
            await sink.aclose()
            await a.close()
            await b.close()
    await tone.stop()
    pcm = np.concatenate([f.samples for f in frames[10:]])
    assert pcm.dtype == np.int16 and pcm.shape[1] == 2
    assert abs(dominant_frequency(pcm, frames[0].sample_rate) - 440) < 10
    assert np.abs(pcm).max() > 3000  # audible, not silence
