"""Fixtures for the device tests: the real PulseAudio null sink, Xvfb display and MJPEG stream.

``bash scripts/devices.sh start`` writes ``.devices/env``; it is loaded here, before any test
imports sounddevice (PortAudio fixes its device list at import). Without the devices a test
skips with the reason, except under ``CI`` (set in CI on this machine kind, which provides
them), where the missing device is a failure.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV_FILE = ROOT / ".devices" / "env"
START_HINT = "run `bash scripts/devices.sh start` first"


def _load_env_file(path: Path) -> None:
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line.startswith("export "):
            continue
        key, _, value = line[len("export ") :].partition("=")
        parts = shlex.split(value)
        os.environ[key.strip()] = parts[0] if parts else ""


_load_env_file(ENV_FILE)

from devices import MJPEGServer  # noqa: E402  (after the env is loaded)


def need(ok: bool, reason: str) -> None:
    """Skip with ``reason`` when a device is missing; fail under CI, which must provide it."""
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI provides this device, but: {reason}", pytrace=False)
    pytest.skip(reason)


def _run(*cmd: str, timeout: float = 5.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def pulse() -> dict[str, str]:
    """The PulseAudio daemon with the null sink ``vsink`` and its monitor as source ``vmic``."""
    need(shutil.which("pactl") is not None, f"pactl is not installed; {START_HINT}")
    need(bool(os.environ.get("PULSE_SERVER")), f"PULSE_SERVER is not set (no {ENV_FILE}); {START_HINT}")
    info = _run("pactl", "info")
    need(info.returncode == 0, f"PulseAudio does not answer on {os.environ.get('PULSE_SERVER')}; {START_HINT}")
    sinks = _run("pactl", "list", "short", "sinks").stdout
    sources = _run("pactl", "list", "short", "sources").stdout
    need("vsink" in sinks and "vmic" in sources, f"PulseAudio lacks the vsink/vmic devices; {START_HINT}")
    try:
        import sounddevice  # noqa: F401
    except OSError as exc:
        need(False, f"PortAudio is not installed ({exc}); {START_HINT}")
    return {"sink": "vsink", "source": "vmic", "monitor": "vsink.monitor"}


@pytest.fixture(scope="session")
def xdisplay() -> str:
    """The Xvfb display (``$DISPLAY``)."""
    display = os.environ.get("DISPLAY")
    need(bool(display), f"DISPLAY is not set; {START_HINT}")
    need(
        shutil.which("xdpyinfo") is not None and shutil.which("xsetroot") is not None, f"X tools missing; {START_HINT}"
    )
    need(_run("xdpyinfo").returncode == 0, f"no X server answers on DISPLAY={display}; {START_HINT}")
    assert display is not None
    return display


@pytest.fixture
def silent_server_url() -> Iterator[str]:
    """A TCP port that accepts connections and never answers (a hung network camera)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/stream.mjpg"
    sock.close()


@pytest.fixture
def mjpeg_server() -> Iterator[MJPEGServer]:
    """A live numbered MJPEG-over-HTTP stream on loopback (640x480, 30 fps)."""
    with MJPEGServer(640, 480, 30) as server:
        yield server


@pytest.fixture
def tone_file(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Factory: a mono float32 raw sine file for ``pacat --format=float32le`` (a file, not a pipe)."""

    def make(frequency: float, seconds: float, amplitude: float = 0.5, rate: int = 48_000) -> Path:
        t = np.arange(int(rate * seconds)) / rate
        path = tmp_path / f"tone-{frequency:g}.f32"
        path.write_bytes((amplitude * np.sin(2 * np.pi * frequency * t)).astype("<f4").tobytes())
        return path

    return make
