"""scripts/devices.sh is idempotent: a second start reuses the running daemons; status reports them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.devices

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".devices"


def script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "devices.sh"), *args], capture_output=True, text=True, timeout=60
    )


def test_start_is_idempotent_and_status_reports(pulse: dict[str, str], xdisplay: str) -> None:
    pids = {name: (STATE / f"{name}.pid").read_text().strip() for name in ("pulse", "xvfb")}
    again = script("start")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    assert {name: (STATE / f"{name}.pid").read_text().strip() for name in ("pulse", "xvfb")} == pids
    status = script("status")
    assert status.returncode == 0, status.stdout
    assert f"pid {pids['pulse']}" in status.stdout and f"DISPLAY={xdisplay}" in status.stdout
    env = (STATE / "env").read_text()
    for key in ("PULSE_SERVER", "PULSE_RUNTIME_PATH", "DISPLAY", "ALSA_CONFIG_PATH"):
        assert f"export {key}=" in env
