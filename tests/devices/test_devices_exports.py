"""The public surface of ``devices``, and that it imports without the PortAudio library."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import devices
from media.errors import CallrtError
from media.source import AudioSource, VideoSource

ROOT = Path(__file__).resolve().parents[2]


def test_all_is_sorted_and_importable() -> None:
    assert devices.__all__ == sorted(devices.__all__)
    for name in devices.__all__:
        assert getattr(devices, name) is not None, name


def test_sources_implement_the_media_protocol() -> None:
    for cls in (devices.Camera, devices.ScreenCapture, devices.FFmpegSource, devices.VideoFile, devices.TestPattern):
        assert issubclass(cls, VideoSource), cls
    for cls in (devices.Microphone, devices.AudioFile, devices.Tone):
        assert issubclass(cls, AudioSource), cls
    videos = [devices.Camera(0), devices.Camera("http://x/y"), devices.ScreenCapture(":1"), devices.VideoFile("a.avi"),
              devices.FFmpegSource("testsrc", "lavfi"), devices.TestPattern()]  # fmt: skip
    audios = [devices.Microphone(), devices.AudioFile("a.wav"), devices.Tone()]
    assert [s.kind for s in videos] == ["video"] * len(videos)
    assert [s.kind for s in audios] == ["audio"] * len(audios)
    assert not any(s.running for s in videos + audios)
    assert all(s.name for s in videos + audios)


def test_error_tree_codes_and_builtins() -> None:
    codes = {
        devices.DeviceError: "device_error",
        devices.DeviceNotFound: "device_not_found",
        devices.BackendMissing: "device_backend_missing",
        devices.DeviceUnavailable: "device_unavailable",
        devices.DeviceBusy: "device_busy",
        devices.DeviceGone: "device_gone",
        devices.UnreadableFile: "unreadable_file",
    }
    for cls, code in codes.items():
        assert issubclass(cls, CallrtError)
        err = cls("camera 0", "something broke", "do this")
        assert err.code == code
        assert err.message == "camera 0: something broke. Fix: do this"
        assert err.to_dict() == {
            "code": code, "message": err.message, "status": err.status, "device": "camera 0", "fix": "do this"
        }  # fmt: skip
    assert issubclass(devices.DeviceNotFound, LookupError)
    assert issubclass(devices.DeviceBusy, devices.DeviceUnavailable)


def test_import_without_portaudio_then_typed_error(tmp_path: Path) -> None:
    """Without libportaudio2, `import devices` works; audio raises BackendMissing naming the package."""
    fake = tmp_path / "sounddevice.py"
    fake.write_text("raise OSError('PortAudio library not found')\n")
    code = textwrap.dedent(
        """
        import asyncio, devices
        listing = devices.list_devices()
        assert [e.code for e in listing.errors] == ["device_backend_missing"], listing.errors
        try:
            asyncio.run(devices.Microphone().start())
        except devices.BackendMissing as exc:
            print(exc.message)
        else:
            raise SystemExit("no error")
        """
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "PortAudio" in out.stdout and "apt-get install libportaudio2" in out.stdout


def test_format_devices_renders_a_table_and_errors() -> None:
    listing = devices.DeviceList(
        cameras=(devices.DeviceInfo("screen", ":99", "X display :99", "x11grab"),),
        microphones=(devices.DeviceInfo("microphone", "1", "default", "ALSA", True, 32, 44_100.0),),
        errors=(devices.BackendMissing("PortAudio", "not installed", "apt-get install libportaudio2"),),
    )
    text = devices.format_devices(listing)
    lines = text.splitlines()
    assert lines[0].split() == ["KIND", "ID", "NAME", "BACKEND", "DETAILS"]
    assert "screen" in lines[1] and ":99" in lines[1]
    assert "32 ch, 44100 Hz, default" in lines[2]
    assert "apt-get install libportaudio2" in lines[-1]
    assert json.loads(json.dumps(listing.to_dict()))["errors"][0]["code"] == "device_backend_missing"
    assert [d.kind for d in listing] == ["screen", "microphone"]
