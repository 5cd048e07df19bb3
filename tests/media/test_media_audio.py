"""Sample formats, stateful resampling, the 10 ms quantum, jitter and playout buffers."""

from __future__ import annotations

import asyncio
import itertools
import threading

import numpy as np
import pytest

from media.audio import (
    JitterBuffer,
    PlayoutBuffer,
    Rechunker,
    Resampler,
    float_to_int16,
    int16_to_float,
    quantum_samples,
)
from media.frames import AudioFrame
from media.testing import dominant_frequency


def _frame(pts: int, n: int = 480, value: int | None = None, ch: int = 2) -> AudioFrame:
    v = pts // n if value is None else value
    return AudioFrame(np.full((n, ch), v, np.int16), 48_000, pts)


def test_float_int16_conversions_into_buffers() -> None:
    block = np.array([[-1.0, 1.0], [0.5, -0.5], [2.0, -2.0]], np.float32)
    out = np.empty((3, 2), np.int16)
    assert float_to_int16(block, out) is out
    np.testing.assert_array_equal(out, [[-32767, 32767], [16384, -16384], [32767, -32768]])
    back = int16_to_float(out)
    assert back.dtype == np.float32 and abs(float(back[1, 0]) - 0.5) < 1e-4


def test_resampler_is_stateful_and_keeps_the_tone() -> None:
    rs = Resampler(48_000, 2)
    t = np.arange(44_100) / 44_100
    mono = (np.sin(2 * np.pi * 1000 * t) * 12_000).astype(np.int16)
    out = []
    for start in range(0, 44_100, 441):  # 10 ms blocks at 44.1 kHz
        out += rs.resample(AudioFrame(np.ascontiguousarray(mono[start : start + 441, None]), 44_100, start))
    total = sum(f.num_samples for f in out)
    assert abs(total - 48_000) < 200  # the filter delay, not a drift
    assert all(f.channels == 2 and f.sample_rate == 48_000 for f in out)
    pts = [f.pts for f in out]
    assert pts == sorted(pts) and all(b.pts == a.pts + a.num_samples for a, b in itertools.pairwise(out))
    pcm = np.concatenate([f.samples for f in out])
    assert abs(dominant_frequency(pcm[4800:], 48_000) - 1000) < 5
    # No clicks at block edges: the largest sample-to-sample step stays that of a 1 kHz sine.
    assert np.abs(np.diff(pcm[4800:, 0].astype(int))).max() < 12_000 * 2 * np.pi * 1000 / 48_000 * 1.2


def test_rechunker_cuts_exact_quanta() -> None:
    rc = Rechunker(channels=2)
    assert rc.samples == quantum_samples() == 480
    out = []
    pos = 0
    for n in (100, 700, 333, 1267):
        block = np.arange(pos, pos + n, dtype=np.int16)[:, None].repeat(2, 1)
        out += rc.push(AudioFrame(np.ascontiguousarray(block), 48_000, pos))
        pos += n
    assert [f.num_samples for f in out] == [480] * 5
    joined = np.concatenate([f.samples[:, 0] for f in out])
    np.testing.assert_array_equal(joined, np.arange(2400, dtype=np.int16))
    assert [f.pts for f in out] == [0, 480, 960, 1440, 1920]


def test_jitter_buffer_reorders_and_waits_for_depth() -> None:
    jb = JitterBuffer(depth=3)
    for pts in (960, 0):
        jb.put(_frame(pts))
    assert jb.pop() is None  # still filling
    jb.put(_frame(480))
    assert [jb.pop().pts for _ in range(3)] == [0, 480, 960]  # type: ignore[union-attr]


def test_jitter_buffer_conceals_gaps_and_drops_late_frames() -> None:
    jb = JitterBuffer(depth=2)
    for pts in (0, 480, 1440):  # 960 is missing
        jb.put(_frame(pts))
    played = [jb.pop() for _ in range(3)]
    assert [f.pts for f in played] == [0, 480, 960]  # type: ignore[union-attr]
    assert not played[2].samples.any()  # type: ignore[union-attr]  (silence for the gap)
    jb.put(_frame(960))  # arrives after its slot was played
    assert jb.pop().pts == 1440  # type: ignore[union-attr]
    jb.put(_frame(1920))
    jb.put(_frame(1920))
    s = jb.stats()
    assert (s.concealed, s.late, s.duplicates, s.played) == (1, 1, 1, 3)


def test_jitter_buffer_is_bounded() -> None:
    jb = JitterBuffer(depth=2, capacity=5)
    for i in range(20):
        jb.put(_frame(i * 480))
    assert len(jb) == 5 and jb.stats().overflows == 15
    assert jb.pop().pts == 15 * 480  # type: ignore[union-attr]


def test_playout_ring_wraps_pads_and_drops_oldest() -> None:
    pb = PlayoutBuffer(channels=1, max_ms=10)  # 480 samples
    pb.write(np.arange(300, dtype=np.int16)[:, None])
    first = pb.read(200)
    np.testing.assert_array_equal(first[:, 0], np.arange(200))
    pb.write(np.arange(300, 600, dtype=np.int16)[:, None])  # wraps around the ring
    out = pb.read(500)
    np.testing.assert_array_equal(out[:400, 0], np.arange(200, 600))
    assert not out[400:].any()  # padded with silence
    pb.write(np.arange(1000, dtype=np.int16)[:, None])  # more than capacity: keeps the newest
    np.testing.assert_array_equal(pb.read(480)[:, 0], np.arange(520, 1000))
    s = pb.stats()
    assert s.underruns == 1 and s.dropped == 520 and s.buffered == 0


async def test_wait_for_playout_with_a_device_thread() -> None:
    pb = PlayoutBuffer(channels=2)
    for i in range(10):
        pb.write(_frame(i * 480))
    stop = threading.Event()

    def device() -> None:  # a speaker callback pulling 10 ms every 2 ms
        buf = np.empty((480, 2), np.int16)
        while not stop.wait(0.002):
            pb.read(480, buf)

    thread = threading.Thread(target=device)
    thread.start()
    try:
        await asyncio.wait_for(pb.wait_for_playout(), 2)
        assert pb.buffered == 0 and pb.stats().played >= 4800
    finally:
        stop.set()
        thread.join()


async def test_clear_releases_waiters() -> None:
    pb = PlayoutBuffer(channels=2)
    pb.write(_frame(0, n=48_000))
    waiter = asyncio.ensure_future(pb.wait_for_playout())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    assert pb.clear() == 48_000
    await asyncio.wait_for(waiter, 1)
    await pb.wait_for_playout()  # empty: returns at once


def test_playout_rejects_wrong_channel_count() -> None:
    with pytest.raises(ValueError):
        PlayoutBuffer(channels=2).write(np.zeros((10, 1), np.int16))
