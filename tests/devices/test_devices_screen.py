"""ScreenCapture of the real Xvfb display: known colours come through x11grab and I420 intact."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from devices import DeviceGone, ScreenCapture

pytestmark = pytest.mark.devices


def set_root(colour: str) -> None:
    subprocess.run(["xsetroot", "-solid", colour], check=True, timeout=5)


def mean_bgr(frame) -> np.ndarray:  # type: ignore[no-untyped-def]
    return cv2.cvtColor(frame.data, cv2.COLOR_YUV2BGR_I420).reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize(
    ("colour", "bgr"), [("#ff0000", (0, 0, 255)), ("#0000ff", (255, 0, 0)), ("#30c060", (96, 192, 48))]
)
async def test_screen_capture_sees_the_root_colour(xdisplay: str, colour: str, bgr: tuple[int, int, int]) -> None:
    set_root(colour)
    screen = ScreenCapture(xdisplay, fps=30)
    await screen.start()
    try:
        frames = [await screen.recv() for _ in range(3)]
    finally:
        await screen.stop()
    assert (frames[-1].width, frames[-1].height) == (640, 480)
    assert np.allclose(mean_bgr(frames[-1]), bgr, atol=6), mean_bgr(frames[-1])
    assert frames[0].pts < frames[1].pts < frames[2].pts


async def test_screen_capture_scaled_region_and_paced(xdisplay: str) -> None:
    set_root("#ff0000")
    screen = ScreenCapture(xdisplay, width=320, height=180, fps=20, region=(0, 0, 320, 240))
    await screen.start()
    try:
        frames = [await screen.recv() for _ in range(8)]
    finally:
        await screen.stop()
    assert (frames[0].width, frames[0].height) == (320, 180)
    assert np.allclose(mean_bgr(frames[-1]), (0, 0, 255), atol=6)
    span = (frames[-1].pts - frames[0].pts) / 90_000
    assert 0.25 < span < 0.6  # 7 intervals at 20 fps


@pytest.fixture
def private_xvfb(xdisplay: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A second Xvfb of our own (so the test may kill it), on a free display number."""
    n = 140
    while os.path.exists(f"/tmp/.X11-unix/X{n}") or os.path.exists(f"/tmp/.X{n}-lock"):
        n += 1
    server = subprocess.Popen(
        ["Xvfb", f":{n}", "-screen", "0", "320x240x24", "-nolisten", "tcp", "-noreset"], stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while not os.path.exists(f"/tmp/.X11-unix/X{n}") and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f":{n}", server
    server.kill()
    server.wait(5)


async def test_screen_whose_x_server_dies_raises_device_gone(private_xvfb: tuple[str, subprocess.Popen[bytes]]) -> None:
    """FFmpeg's x11grab keeps returning the last image after its server died; the source notices."""
    display, server = private_xvfb
    screen = ScreenCapture(display)
    await screen.start()
    await screen.recv()
    server.terminate()
    await asyncio.to_thread(server.wait, 5)
    t0 = time.monotonic()
    with pytest.raises(DeviceGone) as info:
        for _ in range(300):
            await screen.recv()
    assert time.monotonic() - t0 < 3
    assert display in info.value.device
    assert not screen.running
