"""Codec work on the loop in a one-CPU process: same media, no codec threads (real loopback peers)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable
from fractions import Fraction
from typing import Any

import pytest

from media._boundary import CODEC_THREADS_ENV, Worker, codecs_on_loop
from media.avframes import from_av
from media.fanout import EncodedVideoFanout
from media.inline_decode import (
    MAX_QUEUED,
    _FFmpegVp8,
    _InlineDecoder,
    _ThreadDecoder,
    consume_directly,
    decode_on_loop,
    hook_decoder,
    stop_consuming,
)
from media.sinks import VideoSink
from media.testing import PatternVideoSource, read_index
from tests.media.helpers import connect, eventually, next_indices

pytestmark = pytest.mark.timeout(60)


def test_placement_follows_cpu_affinity_and_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CODEC_THREADS_ENV, raising=False)
    mask = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(mask)})  # this thread only
        assert codecs_on_loop() is True
        os.sched_setaffinity(0, mask)
        assert codecs_on_loop() is (len(mask) == 1)
    finally:
        os.sched_setaffinity(0, mask)
    monkeypatch.setenv(CODEC_THREADS_ENV, "0")
    assert codecs_on_loop() is True and Worker("w").inline is True
    monkeypatch.setenv(CODEC_THREADS_ENV, "1")
    assert codecs_on_loop() is False
    w = Worker("w")
    assert w.inline is False
    w.close()


async def test_threaded_worker_runs_calls_in_order_on_its_thread_then_the_final_call() -> None:
    w = Worker("callrt-test", inline=False)
    ident = await w.run(threading.get_ident)
    assert ident != threading.get_ident()
    thread = next(t for t in threading.enumerate() if t.ident == ident)
    with pytest.raises(ZeroDivisionError):  # a call's exception reaches the awaiting task
        await w.run(lambda: 1 / 0)
    seen: list[tuple[str, int]] = []
    blocker = threading.Event()
    slow = asyncio.ensure_future(w.run(lambda: (blocker.wait(5), seen.append(("call", threading.get_ident())))))
    await asyncio.sleep(0.05)
    w.close(final=lambda: seen.append(("final", threading.get_ident())))  # does not block
    assert w.closed and seen == []
    blocker.set()
    await slow
    thread.join(5)
    assert seen == [("call", ident), ("final", ident)] and not thread.is_alive()
    with pytest.raises(RuntimeError):
        await w.run(int)


async def test_inline_worker_runs_on_the_loop_and_closes_with_its_final_call() -> None:
    w = Worker("inline", inline=True)
    assert await w.run(threading.get_ident) == threading.get_ident()
    released = []
    w.close(final=lambda: released.append(True))
    w.close()  # idempotent
    assert released == [True] and w.closed
    with pytest.raises(RuntimeError):
        await w.run(int)


@contextlib.asynccontextmanager
async def _pattern_to_one_peer(wrap: Callable[[Any], Any]) -> AsyncIterator[tuple[EncodedVideoFanout, Any, Any]]:
    """A 320x240 pattern through a VP8 fan-out to one loopback peer whose receiver gets ``hook_decoder``.

    Yields (fan-out, (placement, receiver), ``wrap(remote track)``); afterwards waits until no
    video decoder thread started here is left.
    """
    before = {t.ident for t in threading.enumerate()}
    src = PatternVideoSource(320, 240, fps=30)
    await src.start()
    pcs: list[Any] = []
    try:
        async with EncodedVideoFanout(src, "vp8", bitrate=400_000) as fanout:
            hooked: list[tuple[str | None, Any]] = []
            a, b, wrapped = await connect(fanout.add_to, wrap,
                                          on_receiver=lambda r: hooked.append((hook_decoder(r), r)))
            pcs += [a, b]
            [hook] = hooked
            yield fanout, hook, wrapped
    finally:
        for pc in pcs:
            await pc.close()
        await src.stop()
    # the receiver's stop ended the track and aiortc's thread (nothing left behind)
    await eventually(lambda: not any(t.ident not in before and t.name == "video-decoder"
                                     for t in threading.enumerate()), timeout=5)


async def test_video_encoded_and_decoded_on_the_loop_arrives_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CODEC_THREADS_ENV, "0")
    before = {t.name for t in threading.enumerate()}
    async with _pattern_to_one_peer(VideoSink) as (fanout, (placement, receiver), sink):
        assert fanout._worker.inline
        try:
            indices = [read_index(await asyncio.wait_for(sink.recv(), 10)) for _ in range(15)]
        finally:
            await sink.aclose()
        assert indices == sorted(indices) and len(set(indices)) == 15
        assert placement == "loop" and decode_on_loop(receiver) is True  # idempotent
        stand_in = receiver._RTCRtpReceiver__decoder_queue
        assert isinstance(stand_in, _InlineDecoder) and stand_in.decoded >= 15
        assert isinstance(stand_in._decoder, _FFmpegVp8)  # FFmpeg's VP8 decoder, not aiortc's libvpx binding
        assert fanout.encodes_done >= 15
        # no encoder thread was started for this fan-out
        assert not any(t.name.startswith("callrt-enc") for t in threading.enumerate() if t.name not in before)


async def test_video_decoded_on_aiortc_thread_hands_frames_over_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """With codec threads: decoded on aiortc's thread, in order; an unread track keeps only the newest 4."""
    monkeypatch.setenv(CODEC_THREADS_ENV, "1")
    async with _pattern_to_one_peer(lambda t: t) as (_, (placement, receiver), track):
        assert placement == "thread"
        assert hook_decoder(receiver) == "thread" and decode_on_loop(receiver) is False  # idempotent
        stand_in = receiver._RTCRtpReceiver__decoder_queue
        assert isinstance(stand_in, _ThreadDecoder)
        decoding_threads: set[str] = set()
        own_decode = stand_in._decode

        def spy(item: object) -> object:
            decoding_threads.add(threading.current_thread().name)
            return own_decode(item)

        stand_in._decode = spy
        # nobody reads for a while: at most MAX_QUEUED frames wait, the rest dropped oldest first
        await eventually(lambda: stand_in.decoded >= 20, timeout=10)
        assert decoding_threads == {"video-decoder"}  # aiortc's thread, not the loop
        assert track._queue.qsize() <= MAX_QUEUED["video"] == 4
        assert stand_in.dropped >= stand_in.decoded - 4 > 0
        # what waits is the newest video, in order, and reading goes on with later frames
        frames = [await asyncio.wait_for(track.recv(), 5) for _ in range(track._queue.qsize())]
        waiting = [read_index(from_av(f)) for f in frames]
        frames += [await asyncio.wait_for(track.recv(), 5) for _ in range(10)]
        indices = [read_index(from_av(f)) for f in frames]
        assert indices == sorted(indices) and len(set(indices)) == len(indices)
        # RTP time (90 kHz) on every decoded frame, as aiortc's decoder sets it
        pts = [f.pts for f in frames]
        assert all(f.time_base == Fraction(1, 90_000) for f in frames) and pts == sorted(pts)
        assert (pts[-1] - pts[0]) / 90_000 == pytest.approx((indices[-1] - indices[0]) / 30, abs=0.1)
        assert waiting[-1] >= stand_in.decoded - 10


@pytest.mark.parametrize("threads", ["0", "1"])
async def test_a_sink_takes_frames_straight_from_the_decoder_after_those_waiting(
        monkeypatch: pytest.MonkeyPatch, threads: str) -> None:
    """A sink takes the frames waiting on the track first, then each frame from the decoder as it is
    decoded (none through the track's queue), every one in order; closed, frames queue on the track again."""
    monkeypatch.setenv(CODEC_THREADS_ENV, threads)
    async with _pattern_to_one_peer(lambda t: t) as (_, (_, receiver), track):
        stand_in = receiver._RTCRtpReceiver__decoder_queue
        await eventually(lambda: stand_in.decoded >= 8, timeout=10)  # nobody reads yet: the newest 4 wait
        sink = VideoSink(track, autostart=False)
        seen: list[int] = []
        sink.on_frame(lambda f: seen.append(read_index(f)))
        waiting = [read_index(from_av(f)) for f in list(track._queue._queue)]
        assert len(waiting) == MAX_QUEUED["video"] and stand_in.handed == 0
        sink.start()
        await eventually(lambda: len(seen) >= len(waiting) + 20, timeout=10)
        assert seen[: len(waiting)] == waiting
        assert seen == sorted(seen) and len(set(seen)) == len(seen)
        assert stand_in.handed >= 20 and track._queue.qsize() == 0
        assert sink.received == len(seen) and read_index(sink.latest()) == seen[-1]
        await sink.aclose()
        handed = stand_in.handed
        await eventually(lambda: track._queue.qsize() >= 2, timeout=5)
        assert stand_in.handed == handed and track._queue.qsize() <= MAX_QUEUED["video"]


async def test_a_directly_fed_sink_still_ends_with_its_track() -> None:
    async with _pattern_to_one_peer(VideoSink) as (_, (_, receiver), sink):
        indices = await next_indices(sink, 10)
        assert indices == sorted(indices)
        assert receiver._RTCRtpReceiver__decoder_queue.handed >= 10
    # the peers closed: aiortc ends the track through its queue, and the sink ends with it
    await asyncio.wait_for(sink.wait_ended(), 5)
    assert sink.stats().ended and not hasattr(sink.track, "_callrt_consumer")
    await sink.aclose()


async def test_one_direct_consumer_per_track_and_its_errors_stay_out_of_the_receive_path(
        caplog: pytest.LogCaptureFixture) -> None:
    async with _pattern_to_one_peer(VideoSink) as (_, (_, receiver), sink):
        await next_indices(sink, 3)
        track, stand_in = sink.track, receiver._RTCRtpReceiver__decoder_queue
        calls: list[int] = []

        def broken(frame: Any) -> None:
            calls.append(1)
            raise RuntimeError("consumer bug")

        assert consume_directly(track, broken) is False  # the sink has it
        await sink.aclose()
        assert consume_directly(track, broken) is True
        try:
            await eventually(lambda: len(calls) >= 5, timeout=10)
            decoded = stand_in.decoded
            await eventually(lambda: stand_in.decoded >= decoded + 5, timeout=10)  # the receive path goes on
        finally:
            stop_consuming(track, broken)
        assert "consumer bug" in caplog.text and "direct consumer" in caplog.text
        stop_consuming(track, broken)  # idempotent
        assert not hasattr(track, "_callrt_consumer")
