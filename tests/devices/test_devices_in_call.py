"""Real (virtual) devices published into real calls: content verified on the remote side, devices
released when disabled mid-call, device loss becomes a mute, a missing default device never fails a join."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from devices import Camera, DeviceGone, DeviceNotFound, Microphone, ScreenCapture, Speaker, Tone, dominant_frequency
from signaling import DeviceStatus
from signaling.server import EmbeddedCoordinator
from tests.conftest import eventually, make_config
from tests.devices.test_devices_pulse import our_source_outputs
from tests.signaling.media_helpers import make_bot, remote_of

pytestmark = [pytest.mark.devices, pytest.mark.timeout(120)]


@pytest.fixture
async def coord():
    async with EmbeddedCoordinator(make_config()) as c:
        yield c


@pytest.fixture
async def pair(coord):
    """alice (the device under test) and bob (the remote side) in one call, not yet joined."""
    alice = await make_bot(coord, "alice", "devices", 440)
    bob = await make_bot(coord, "bob", "devices", 660)
    yield alice, bob
    for bot in (alice, bob):
        await bot.client.aclose()


async def remote_audio_frequency(call, user: str, blocks: int = 40, min_rms: int = 2000) -> float:
    remote = await remote_of(call, user, "audio")
    chunks = []
    for _ in range(400):
        frame = await asyncio.wait_for(remote.audio.recv(), 10)
        if np.sqrt(np.mean(frame.samples.astype(np.float64) ** 2)) > min_rms:
            chunks.append(frame.samples.copy())
            if len(chunks) >= blocks:
                break
    assert len(chunks) >= blocks, "no loud audio arrived"
    return dominant_frequency(np.concatenate(chunks), 48_000)


async def test_microphone_tone_reaches_the_remote_side_and_is_released_when_disabled(
        pair, pulse: dict[str, str], tone_file: Callable[..., Path]) -> None:
    alice, bob = pair
    await alice.call.microphone.select(Microphone())  # the default input: the monitor of the null sink
    await alice.call.join(create=True)
    await bob.call.join()
    assert len(our_source_outputs()) >= 1
    player = await asyncio.create_subprocess_exec(
        "pacat", "--format=float32le", "--rate=48000", "--channels=1", f"--device={pulse['sink']}",
        str(tone_file(1000, 4.0, amplitude=0.5)))
    try:
        assert await remote_audio_frequency(bob.call, "alice") == pytest.approx(1000, abs=5)
    finally:
        await player.wait()
    # disabling mid-call closes the PulseAudio stream; the remote side sees the mute
    await alice.call.microphone.disable()
    await eventually(lambda: our_source_outputs() == [], timeout=5)
    await eventually(lambda: "audio" not in bob.call.state.participant(alice.call.session_id).published_tracks)
    # enabling reopens the device and resumes on the same transceiver
    link = alice.call.media.links[bob.call.session_id]
    await alice.call.microphone.enable()
    assert len(our_source_outputs()) >= 1 and alice.call.media.links[bob.call.session_id] is link
    await eventually(lambda: "audio" in bob.call.state.participant(alice.call.session_id).published_tracks)


async def test_screen_capture_colour_reaches_the_remote_side(pair, xdisplay: str) -> None:
    alice, bob = pair
    await asyncio.to_thread(subprocess.run, ["xsetroot", "-display", xdisplay, "-solid", "#ff0000"], check=True,
                            timeout=5)
    await alice.call.camera.select(ScreenCapture(xdisplay, width=320, height=240, fps=15))
    await alice.call.join(create=True)
    await bob.call.join()
    remote = await remote_of(bob.call, "alice", "video")
    for _ in range(10):
        frame = await asyncio.wait_for(remote.video.recv(), 10)
    bgr = remote.video.to_bgr(frame)
    b, g, r = (float(c) for c in bgr.reshape(-1, 3).mean(axis=0))
    assert r > 200 and g < 60 and b < 60, (b, g, r)


async def test_camera_on_a_live_stream_and_switching_sources_mid_call(pair, mjpeg_server) -> None:
    alice, bob = pair
    camera = Camera(mjpeg_server.url, width=320, height=240)
    await alice.call.camera.select(camera)
    await alice.call.join(create=True)
    await bob.call.join()
    remote = await remote_of(bob.call, "alice", "video")
    frames = [await asyncio.wait_for(remote.video.recv(), 10) for _ in range(10)]
    means = [float(f.y.mean()) for f in frames]
    assert max(means) - min(means) > 1.0  # a live stream: the content changes
    assert mjpeg_server.active_connections == 1
    # disabling closes the stream connection (the device is released)
    await alice.call.camera.disable()
    await eventually(lambda: mjpeg_server.active_connections == 0, timeout=5)
    await alice.call.camera.enable()
    await eventually(lambda: mjpeg_server.active_connections == 1, timeout=5)
    # switching to another source mid-call: no new join, same peer connection
    link = alice.call.media.links[bob.call.session_id]
    await alice.call.camera.select(alice.pattern)
    await eventually(lambda: mjpeg_server.active_connections == 0, timeout=5)
    from tests.signaling.media_helpers import assert_in_order, frame_indices

    indices = await frame_indices(remote.video, n=12)
    assert_in_order([i for i in indices[2:] if i is not None])
    assert alice.call.media.links[bob.call.session_id] is link


async def test_a_device_that_disappears_mid_call_becomes_a_mute(pair, mjpeg_server) -> None:
    alice, bob = pair
    await alice.call.camera.select(Camera(mjpeg_server.url, width=320, height=240))
    errors: list = []
    alice.call.on("camera.error", errors.append)
    await alice.call.join(create=True)
    await bob.call.join()
    await remote_of(bob.call, "alice", "video")
    mjpeg_server.stop()  # the camera goes away
    await eventually(lambda: alice.call.camera.status is DeviceStatus.DISABLED, timeout=15)
    assert isinstance(alice.call.camera.error, DeviceGone) and errors
    await eventually(lambda: bob.call.state.participant(alice.call.session_id).published_tracks == ["audio"])
    # the call goes on: audio still flows (loud frames only, as in the other audio checks)
    assert await remote_audio_frequency(bob.call, "alice", blocks=20) == pytest.approx(440, abs=5)


async def test_default_on_camera_without_a_device_never_fails_the_join(coord) -> None:
    if Path("/dev/video0").exists():  # noqa: ASYNC240 (one stat)
        pytest.skip("this machine has a camera: the default device would open")
    from signaling import Client
    from tests.conftest import API_KEY

    async with Client(coord.url, api_key=API_KEY, token=coord.user_token("nocam")) as client:
        call = client.call("default", "nocam")
        await call.microphone.select(Tone(440))
        errors: list = []
        call.on("camera.error", errors.append)
        await call.join(create=True)  # camera_default_on is True in the default call type
        assert call.camera.status is DeviceStatus.DISABLED
        assert isinstance(call.camera.error, DeviceNotFound) and call.camera.error.code == "device_not_found"
        assert errors and errors[0] is call.camera.error
        assert call.microphone.status is DeviceStatus.ENABLED
        assert call.state.participant(call.session_id).published_tracks == ["audio"]


async def test_speaker_plays_a_remote_participant_into_the_sink(pair, pulse: dict[str, str]) -> None:
    alice, bob = pair
    await alice.call.join(create=True)
    await bob.call.join()
    remote = await remote_of(bob.call, "alice", "audio")
    monitor = Microphone()  # the default input is vmic, the monitor of the sink the speaker plays into
    await monitor.start()
    async with Speaker() as speaker:
        async def play() -> None:
            async for frame in remote.audio:
                await speaker.play(frame)

        task = asyncio.ensure_future(play())
        try:
            captured = []
            for _ in range(150):
                block = await asyncio.wait_for(monitor.recv(), 5)
                if np.abs(block.samples).max() > 2000:
                    captured.append(block.samples.copy())
                    if len(captured) >= 25:
                        break
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await monitor.stop()
    assert len(captured) >= 25
    assert dominant_frequency(np.concatenate(captured), 48_000) == pytest.approx(440, abs=5)


def test_managers_list_devices(pulse: dict[str, str]) -> None:
    from signaling import Client

    call = Client("http://127.0.0.1:1", api_key="k", token="t").call("default", "x")
    mics = call.microphone.list_devices()
    assert any("pulse" in d.name.lower() or d.default for d in mics)
    cams = call.camera.list_devices()
    assert all(d.kind in ("camera", "screen") for d in cams)


_ = cv2  # OpenCV is what Camera reads the stream with
