"""TestPattern and Tone: content that receivers verify (frame index, FFT peak), at real pace."""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from devices import TestPattern, Tone, dominant_frequency, read_frame_index, rms_level
from media.frames import VideoFrame
from media.source import SourceEnded


@pytest.mark.parametrize("size", [(640, 480), (1280, 720), (320, 240), (176, 144)])
def test_pattern_index_roundtrip(size: tuple[int, int]) -> None:
    w, h = size
    pattern = TestPattern(w, h)
    for index in (0, 1, 2, 255, 256, 65_535, 1_234_567, (1 << 24) - 1):
        assert read_frame_index(VideoFrame(pattern.render(index))) == index


def test_pattern_index_survives_scaling() -> None:
    pattern = TestPattern(1280, 720)
    bgr = cv2.cvtColor(pattern.render(4242), cv2.COLOR_YUV2BGR_I420)
    small = cv2.resize(bgr, (320, 180), interpolation=cv2.INTER_AREA)
    assert read_frame_index(VideoFrame(cv2.cvtColor(small, cv2.COLOR_BGR2YUV_I420))) == 4242


def test_frames_without_a_pattern_read_none() -> None:
    assert read_frame_index(VideoFrame.allocate(640, 480)) is None
    noise = np.random.default_rng(1).integers(0, 256, (720, 640), dtype=np.uint8)
    assert read_frame_index(VideoFrame(noise)) is None


def test_pattern_content_moves() -> None:
    pattern = TestPattern(640, 480)
    a, b = pattern.render(10), pattern.render(11)
    below_band = slice(480 // 8, 480)
    assert np.abs(a[below_band].astype(int) - b[below_band].astype(int)).mean() > 1.0


@pytest.mark.parametrize(("codec", "decoder", "bitrate"), [("libvpx", "vp8", 300_000), ("libx264", "h264", 300_000)])
def test_pattern_index_survives_compression(codec: str, decoder: str, bitrate: int) -> None:
    """Every frame's index is read back in order after a real VP8/H.264 encode and decode."""
    w, h, n = 640, 480, 45
    pattern = TestPattern(w, h)
    enc = av.CodecContext.create(codec, "w")
    enc.width, enc.height, enc.pix_fmt, enc.bit_rate = w, h, "yuv420p", bitrate
    enc.time_base, enc.framerate = Fraction(1, 30), Fraction(30)
    enc.options = {"deadline": "realtime", "cpu-used": "8"} if codec == "libvpx" else {"preset": "ultrafast"}
    dec = av.CodecContext.create(decoder, "r")
    indices: list[int | None] = []

    def drain(packets: list[av.Packet]) -> None:
        for packet in packets:
            for frame in dec.decode(packet):
                indices.append(read_frame_index(VideoFrame(np.ascontiguousarray(frame.to_ndarray()))))

    for i in range(n):
        frame = av.VideoFrame.from_ndarray(pattern.render(i), format="yuv420p")
        frame.pts = i
        drain(enc.encode(frame))
    drain(enc.encode(None))
    assert indices == list(range(n))


async def test_pattern_paces_at_fps_and_stamps() -> None:
    pattern = TestPattern(320, 240, fps=30)
    await pattern.start()
    t0 = time.monotonic()
    frames = [await pattern.recv() for _ in range(16)]
    elapsed = time.monotonic() - t0
    await pattern.stop()
    assert 0.4 < elapsed < 0.9  # 15 intervals of 1/30 s
    assert [read_frame_index(f) for f in frames] == list(range(16))
    assert [f.pts for f in frames] == [i * 3000 for i in range(16)]
    assert all(abs(f.capture_time - time.time()) < 5 for f in frames)
    with pytest.raises(SourceEnded):
        await pattern.recv()


async def test_tone_frequency_level_and_pace() -> None:
    tone = Tone(1000, level=0.5)
    await tone.start()
    t0 = time.monotonic()
    frames = [await tone.recv() for _ in range(26)]
    elapsed = time.monotonic() - t0
    await tone.stop()
    assert 0.4 < elapsed < 0.8  # 25 blocks of 20 ms
    assert all(f.samples.shape == (960, 1) and f.sample_rate == 48_000 for f in frames)
    assert [f.pts for f in frames] == [i * 960 for i in range(26)]
    x = np.concatenate([f.samples for f in frames])
    assert dominant_frequency(x, 48_000) == pytest.approx(1000, abs=1)
    assert rms_level(x) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    assert np.abs(x).max() == pytest.approx(0.5 * 32767, rel=0.01)


async def test_tone_is_phase_continuous_across_blocks() -> None:
    tone = Tone(997, level=0.8, channels=2)
    await tone.start()
    x = np.concatenate([(await tone.recv()).samples for _ in range(5)]).astype(float)
    await tone.stop()
    assert x.shape == (4800, 2) and np.array_equal(x[:, 0], x[:, 1])
    max_step = 0.8 * 32767 * 2 * np.pi * 997 / 48_000  # the steepest slope of the sine
    assert np.abs(np.diff(x[:, 0])).max() <= max_step * 1.01


def test_dominant_frequency_resolves_below_a_bin() -> None:
    rate = 48_000
    t = np.arange(rate // 2) / rate
    for f in (220.0, 1000.0, 1234.5, 7000.0):
        noisy = np.sin(2 * np.pi * f * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
        assert dominant_frequency(noisy, rate) == pytest.approx(f, abs=0.5)
    assert dominant_frequency(np.zeros(1000), rate) == 0.0


def test_invalid_parameters_are_rejected() -> None:
    with pytest.raises(ValueError):
        Tone(1000, level=2.0)
    with pytest.raises(ValueError):
        Tone(30_000)
    with pytest.raises(ValueError):
        TestPattern(641, 480)


async def test_recv_on_a_stopped_source_ends_promptly() -> None:
    pattern = TestPattern(320, 240, fps=1)
    await pattern.start()
    await pattern.recv()
    task = asyncio.create_task(pattern.recv())
    await asyncio.sleep(0.05)
    await pattern.stop()
    with pytest.raises(SourceEnded):
        await asyncio.wait_for(task, 0.3)
