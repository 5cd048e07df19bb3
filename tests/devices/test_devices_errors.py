"""Each way a device can be missing gives its typed error, naming the device and the fix, fast."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from devices import (
    AudioFile,
    BackendMissing,
    Camera,
    DeviceNotFound,
    DeviceUnavailable,
    FFmpegSource,
    Microphone,
    ScreenCapture,
    Speaker,
    UnreadableFile,
    VideoFile,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_missing_video_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.avi"
    with pytest.raises(UnreadableFile) as info:
        await VideoFile(missing).start()
    assert str(missing) in info.value.device and "no such file" in info.value.message


async def test_missing_audio_and_camera_files(tmp_path: Path) -> None:
    with pytest.raises(UnreadableFile):
        await AudioFile(tmp_path / "nope.wav").start()
    with pytest.raises(UnreadableFile):
        await Camera(str(tmp_path / "nope.avi")).start()


async def test_file_that_is_not_media(tmp_path: Path) -> None:
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"definitely not a video " * 200)
    with pytest.raises(UnreadableFile) as info:
        await VideoFile(junk).start()
    assert info.value.code == "unreadable_file" and info.value.fix


async def test_camera_url_refused_fails_fast() -> None:
    camera = Camera(f"http://127.0.0.1:{free_port()}/stream.mjpg", open_timeout=1)
    t0 = time.monotonic()
    with pytest.raises(DeviceUnavailable) as info:
        await camera.start()
    assert time.monotonic() - t0 < 2
    assert "URL" in info.value.fix and not camera.running


async def test_camera_url_that_never_answers_times_out(silent_server_url: str) -> None:
    camera = Camera(silent_server_url, open_timeout=1)
    t0 = time.monotonic()
    with pytest.raises(DeviceUnavailable):
        await camera.start()
    assert time.monotonic() - t0 < 3


async def test_camera_index_without_device_node() -> None:
    with pytest.raises(DeviceNotFound) as info:
        await Camera(9).start()
    err = info.value
    assert isinstance(err, LookupError)
    assert "/dev/video9" in err.device and "TestPattern" in err.fix


async def test_screen_without_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(DeviceUnavailable) as info:
        await ScreenCapture().start()
    assert "DISPLAY" in info.value.message and "Xvfb" in info.value.fix


async def test_screen_on_a_display_nobody_serves() -> None:
    with pytest.raises(DeviceUnavailable) as info:
        await ScreenCapture(":87").start()
    assert ":87" in info.value.device and "Xvfb" in info.value.fix


async def test_ffmpeg_unknown_format() -> None:
    with pytest.raises(BackendMissing):
        await FFmpegSource("x", "no-such-format").start()


async def test_unknown_microphone_and_speaker_names() -> None:
    pytest.importorskip("sounddevice", exc_type=OSError, reason="PortAudio (libportaudio2) is not installed")
    with pytest.raises(DeviceNotFound) as info:
        await Microphone("no-such-microphone").start()
    assert "no-such-microphone" in info.value.device and info.value.fix
    with pytest.raises(DeviceNotFound):
        await Speaker("no-such-speaker").start()
    with pytest.raises(DeviceNotFound):
        await Microphone(999).start()


def test_no_sound_server_means_device_not_found_with_the_fix(tmp_path: Path) -> None:
    """With PulseAudio unreachable (and no sound card, as on CI machines) opening the default mic says so."""
    pytest.importorskip("sounddevice", exc_type=OSError, reason="PortAudio (libportaudio2) is not installed")
    code = textwrap.dedent(
        """
        import asyncio, sounddevice, devices
        if any(d["max_input_channels"] for d in sounddevice.query_devices()):
            print("has-devices")
            raise SystemExit(0)
        try:
            asyncio.run(devices.Microphone().start())
        except devices.DeviceNotFound as exc:
            print(exc.code, "|", exc.device, "|", exc.fix)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(PULSE_SERVER=f"unix:{tmp_path}/no-such-socket", PULSE_RUNTIME_PATH=str(tmp_path), HOME=str(tmp_path))
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    if out.stdout.strip() == "has-devices":
        pytest.skip("this machine has a sound card besides PulseAudio")
    code_, device, fix = (part.strip() for part in out.stdout.split("|"))
    assert code_ == "device_not_found" and device == "default microphone"
    assert "PulseAudio" in fix and "scripts/devices.sh start" in fix
