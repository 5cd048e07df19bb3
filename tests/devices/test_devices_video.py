"""Video sources on real inputs: an MJPG file written at test time, lavfi, a live MJPEG-over-HTTP camera."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from pathlib import Path

import cv2
import pytest

from devices import Camera, DeviceGone, FFmpegSource, MJPEGServer, TestPattern, VideoFile, read_frame_index
from media.frames import VideoFrame
from media.source import SourceEnded


def write_mjpg(path: Path, frames: int, fps: float, size: tuple[int, int] = (640, 480)) -> Path:
    """An MJPG .avi whose frames carry TestPattern indices 0..frames-1."""
    pattern = TestPattern(*size)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(cv2.cvtColor(pattern.render(i), cv2.COLOR_YUV2BGR_I420))
    writer.release()
    return path


async def collect(source, n: int) -> tuple[list[VideoFrame], float]:  # type: ignore[no-untyped-def]
    await source.start()
    try:
        t0 = time.monotonic()
        frames = [await source.recv() for _ in range(n)]
        return frames, time.monotonic() - t0
    finally:
        await source.stop()


async def test_video_file_loops_at_the_file_rate(tmp_path: Path) -> None:
    path = write_mjpg(tmp_path / "clip.avi", frames=20, fps=40)
    frames, elapsed = await collect(VideoFile(path), 45)
    assert [read_frame_index(f) for f in frames] == list(range(20)) * 2 + list(range(5))
    assert 0.95 < elapsed < 1.6  # 44 intervals of 25 ms
    pts = [f.pts for f in frames]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)  # keeps increasing across the loop
    assert pts[20] - pts[19] == pytest.approx(2250, abs=2)  # 1/40 s on the 90 kHz clock
    assert all(f.width == 640 and f.height == 480 for f in frames)


async def test_video_file_scaled_and_once(tmp_path: Path) -> None:
    path = write_mjpg(tmp_path / "clip.avi", frames=10, fps=100)
    source = VideoFile(path, width=320, height=240, loop=False)
    frames, _ = await collect(source, 10)
    assert [read_frame_index(f) for f in frames] == list(range(10))
    assert (frames[0].width, frames[0].height) == (320, 240)
    await source.start()
    for _ in range(10):
        await source.recv()
    with pytest.raises(SourceEnded):
        await source.recv()
    assert not source.running
    await source.stop()


async def test_ffmpeg_lavfi_source_scaled_and_rate_limited() -> None:
    source = FFmpegSource("testsrc=size=320x240:rate=30", "lavfi", width=640, height=360, fps=15)
    frames, elapsed = await collect(source, 8)
    assert (frames[0].width, frames[0].height) == (640, 360)
    assert 0.35 < elapsed < 0.8  # 7 intervals of 1/15 s: every other frame of the 30 fps input
    steps = {round((b.pts - a.pts) / 6000) for a, b in itertools.pairwise(frames)}
    assert steps == {1}
    assert frames[0].y.std() > 10  # real picture content, not a flat frame


async def test_camera_on_live_mjpeg_stream_verifies_content(mjpeg_server: MJPEGServer) -> None:
    camera = Camera(mjpeg_server.url, open_timeout=3)
    frames, elapsed = await collect(camera, 30)
    indices = [read_frame_index(f) for f in frames]
    assert None not in indices
    assert indices[0] <= 2 and indices == sorted(indices)
    consecutive = sum(b - a == 1 for a, b in itertools.pairwise(indices))
    assert consecutive >= 25, indices  # at most a few dropped under load
    assert 0.6 < elapsed < 1.6  # paced by the live stream (30 fps)
    assert (frames[0].width, frames[0].height) == (640, 480)


async def test_camera_stop_closes_the_http_connection(mjpeg_server: MJPEGServer) -> None:
    camera = Camera(mjpeg_server.url, width=320, height=240)
    await camera.start()
    frame = await camera.recv()
    assert (frame.width, frame.height) == (320, 240) and read_frame_index(frame) is not None
    assert mjpeg_server.wait_for_connections(opened=1, timeout=2)
    assert mjpeg_server.active_connections == 1
    await camera.stop()
    assert await asyncio.to_thread(mjpeg_server.wait_for_connections, closed=1, timeout=2)
    assert mjpeg_server.active_connections == 0
    # restartable: a new connection
    await camera.start()
    assert read_frame_index(await camera.recv()) is not None
    await camera.stop()
    assert await asyncio.to_thread(mjpeg_server.wait_for_connections, opened=2, closed=2, timeout=2)


async def test_camera_stream_that_stalls_raises_device_gone(mjpeg_server: MJPEGServer) -> None:
    camera = Camera(mjpeg_server.url, read_timeout=1.0)
    await camera.start()
    await camera.recv()
    mjpeg_server.stall()
    t0 = time.monotonic()
    with pytest.raises(DeviceGone) as info:
        for _ in range(100):
            await camera.recv()
    assert time.monotonic() - t0 < 3
    assert mjpeg_server.url in info.value.device and info.value.fix
    assert not camera.running
    assert await asyncio.to_thread(mjpeg_server.wait_for_connections, closed=1, timeout=3)


async def test_camera_stream_that_disconnects_raises_device_gone(mjpeg_server: MJPEGServer) -> None:
    camera = Camera(mjpeg_server.url, read_timeout=2.0)
    await camera.start()
    await camera.recv()
    mjpeg_server.drop_clients()
    with pytest.raises(DeviceGone):
        for _ in range(100):
            await camera.recv()
    assert not camera.running


async def test_camera_file_is_paced_and_looped(tmp_path: Path) -> None:
    path = write_mjpg(tmp_path / "cam.avi", frames=10, fps=50)
    frames, _ = await collect(Camera(str(path)), 25)
    assert [read_frame_index(f) for f in frames] == list(range(10)) * 2 + list(range(5))
    # Pacing is judged on when the camera released each frame (its capture time), not on when this
    # test got round to reading it: frames released while a loaded loop was still returning from
    # start() wait in the queue and would arrive back to back.
    span = frames[-1].capture_time - frames[0].capture_time
    assert 0.4 < span < 0.9  # 24 intervals of 20 ms


async def test_slow_consumer_gets_fresh_frames_and_drops_are_counted(tmp_path: Path) -> None:
    path = write_mjpg(tmp_path / "fast.avi", frames=100, fps=100)
    source = VideoFile(path, loop=False)
    await source.start()
    first = read_frame_index(await source.recv())
    await asyncio.sleep(0.3)  # ~30 frames come due meanwhile; the queue keeps the newest two
    late = read_frame_index(await source.recv())
    await source.stop()
    assert first == 0 and late is not None and late >= 20
    assert source.dropped_frames >= 20


async def test_cancelled_start_and_stop_leave_no_reader_thread(silent_server_url: str, tmp_path: Path) -> None:
    camera = Camera(silent_server_url, open_timeout=1.0)
    task = asyncio.create_task(camera.start())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not camera.running
    source = VideoFile(write_mjpg(tmp_path / "c.avi", frames=5, fps=30))
    await source.start()
    await source.recv()
    await source.stop()
    assert await asyncio.to_thread(no_reader_threads_within, 3.0)


def no_reader_threads_within(timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(t.name.startswith("callrt-device:") for t in threading.enumerate()):
            return True
        time.sleep(0.05)
    return False


def test_converter_keeps_one_scaler_and_matches_pyav() -> None:
    """One scaler per source, reused frame after frame: each output is that frame's pixels (the same as
    PyAV's own per-frame conversion, within rounding), never a stale one."""
    import av
    import numpy as np

    from devices._video import I420Converter

    pattern = TestPattern(640, 480)
    conv = I420Converter(320, 240)
    for i in range(3):
        bgr = cv2.cvtColor(pattern.render(i), cv2.COLOR_YUV2BGR_I420)
        frame = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuvj422p", threads=1)
        ours = conv.from_av(frame)
        reference = frame.to_ndarray(width=320, height=240, format="yuv420p")
        assert ours.shape == (360, 320) and ours.flags.c_contiguous
        assert np.abs(ours.astype(np.int16) - reference.astype(np.int16)).max() <= 2
    assert conv.size == (320, 240)
