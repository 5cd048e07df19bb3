"""Microphone and Speaker against the real PulseAudio null sink (vsink) and its monitor source (vmic)."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from devices import DeviceGone, Microphone, Speaker, Tone, dominant_frequency, list_devices, rms_level
from media.frames import AudioFrame

pytestmark = pytest.mark.devices


def our_source_outputs() -> list[str]:
    """PulseAudio source outputs (recording streams) opened by this process."""
    out = subprocess.run(["pactl", "list", "source-outputs"], capture_output=True, text=True, timeout=5).stdout
    blocks = out.split("Source Output #")[1:]
    return [b for b in blocks if f'application.process.id = "{os.getpid()}"' in b]


async def test_tone_played_into_sink_is_captured_by_microphone(
    pulse: dict[str, str], tone_file: Callable[..., Path]
) -> None:
    path = tone_file(1000, 1.0, amplitude=0.5)
    mic = Microphone()
    await mic.start()
    player = await asyncio.create_subprocess_exec(
        "pacat", "--format=float32le", "--rate=48000", "--channels=1", f"--device={pulse['sink']}", str(path)
    )
    try:
        frames = [await mic.recv() for _ in range(60)]  # 1.2 s
    finally:
        await mic.stop()
        await player.wait()
    assert all(f.samples.shape == (960, 1) and f.sample_rate == 48_000 for f in frames)
    pts = [f.pts for f in frames]
    assert all(b - a >= 960 for a, b in itertools.pairwise(pts))
    x = np.concatenate([f.samples for f in frames])
    loud = np.abs(x[:, 0]) > 3000
    assert loud.sum() > 24_000  # at least half a second of tone came through
    tone = x[np.flatnonzero(loud)[0] :][:24_000]
    assert dominant_frequency(tone, 48_000) == pytest.approx(1000, abs=3)
    assert rms_level(tone) == pytest.approx(0.354, abs=0.05)


async def test_microphone_stop_releases_the_device(pulse: dict[str, str]) -> None:
    mic = Microphone()
    await mic.start()
    await mic.recv()
    assert len(our_source_outputs()) == 1
    await mic.stop()
    assert our_source_outputs() == []
    await mic.start()  # restartable
    frame = await mic.recv()
    assert frame.pts == 0
    assert len(our_source_outputs()) == 1
    await mic.stop()
    assert our_source_outputs() == []


async def test_speaker_playback_lands_in_the_sink_monitor(pulse: dict[str, str], tmp_path: Path) -> None:
    capture = tmp_path / "monitor.raw"
    with capture.open("wb") as sink_file:
        recorder = await asyncio.create_subprocess_exec(
            "parec", f"--device={pulse['monitor']}", "--format=s16le", "--rate=48000", "--channels=1", "--raw",
            stdout=sink_file,
        )  # fmt: skip
        try:
            await asyncio.sleep(0.2)
            tone = Tone(660, level=0.5)
            async with Speaker() as speaker:
                await tone.start()
                for _ in range(40):  # 0.8 s
                    await speaker.play(await tone.recv())
                await speaker.drain()
                await asyncio.sleep(0.2)
            assert speaker.dropped_samples == 0
        finally:
            recorder.terminate()
            await recorder.wait()
    x = np.frombuffer(capture.read_bytes(), dtype="<i2")
    loud = np.flatnonzero(np.abs(x) > 3000)
    assert loud.size > 24_000, "the speaker's tone did not reach the sink monitor"
    played = x[loud[0] : loud[0] + 24_000]
    assert dominant_frequency(played, 48_000) == pytest.approx(660, abs=3)
    assert rms_level(played) > 0.2


async def test_speaker_rejects_play_before_start() -> None:
    with pytest.raises(RuntimeError):
        await Speaker().play(await _one_tone_frame())


async def _one_tone_frame():  # type: ignore[no-untyped-def]
    tone = Tone(440)
    await tone.start()
    return await tone.recv()


def test_list_devices_lists_the_pulse_devices(pulse: dict[str, str]) -> None:
    listing = list_devices()
    mic_names = [d.name for d in listing.microphones]
    speaker_names = [d.name for d in listing.speakers]
    assert "pulse" in mic_names and "default" in mic_names
    assert "pulse" in speaker_names and "default" in speaker_names
    assert sum(d.default for d in listing.microphones) == 1
    assert listing.errors == ()
    as_dict = listing.to_dict()
    assert {d["name"] for d in as_dict["microphones"]} >= {"pulse", "default"}  # type: ignore[index, union-attr]


async def test_microphone_by_name_and_index(pulse: dict[str, str]) -> None:
    listing = list_devices()
    pulse_mic = next(d for d in listing.microphones if d.name == "pulse")
    for device in ("pulse", int(pulse_mic.id)):
        mic = Microphone(device)
        await mic.start()
        assert mic.device_name == "pulse"
        await mic.recv()
        await mic.stop()


async def test_microphone_raises_device_gone_when_blocks_stop(pulse: dict[str, str]) -> None:
    """A stream whose blocks stop arriving (server gone, device unplugged) is reported, not waited on."""
    mic = Microphone(read_timeout=0.5)
    await mic.start()
    await mic.recv()
    mic._stream.stop()  # the device stops delivering while the source thinks it runs
    with pytest.raises(DeviceGone):
        for _ in range(100):
            await mic.recv()
    assert not mic.running
    assert our_source_outputs() == []


async def test_microphone_queue_drops_the_oldest_when_not_read(pulse: dict[str, str]) -> None:
    mic = Microphone(queue_size=5)
    await mic.start()
    first = await mic.recv()
    await asyncio.sleep(0.4)  # ~20 blocks arrive; 5 are kept
    kept = [await mic.recv() for _ in range(5)]
    await mic.stop()
    assert mic.dropped_frames >= 10
    assert kept[0].pts - first.pts >= 10 * 960  # the oldest were dropped, the newest kept
    assert [b.pts - a.pts for a, b in itertools.pairwise(kept)] == [960] * 4


async def test_speaker_applies_back_pressure_without_dropping(pulse: dict[str, str]) -> None:
    block = np.zeros((960, 1), np.int16)
    speaker = Speaker(max_buffer=0.1)
    await speaker.start()
    t0 = asyncio.get_running_loop().time()
    for _ in range(25):  # 0.5 s of audio offered as fast as play() accepts it
        await speaker.play(AudioFrame(block.copy()))
    elapsed = asyncio.get_running_loop().time() - t0
    await speaker.stop()
    assert elapsed > 0.25  # play() waited for the device instead of queueing everything
    assert speaker.dropped_samples == 0
    assert not speaker.running


@pytest.fixture
def private_pulse(pulse: dict[str, str], tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A second PulseAudio daemon of our own (so the test may kill it), with its own vsink/vmic."""
    runtime = Path(tempfile.mkdtemp(prefix="callrt-pa-"))  # short: unix socket paths are limited
    script = tmp_path / "private.pa"
    script.write_text(
        f"load-module module-native-protocol-unix socket={runtime}/native auth-anonymous=1\n"
        "load-module module-null-sink sink_name=vsink rate=48000\n"
        "load-module module-remap-source master=vsink.monitor source_name=vmic\n"
        "set-default-source vmic\n"
    )
    env = {**os.environ, "PULSE_RUNTIME_PATH": str(runtime), "HOME": str(tmp_path)}
    daemon = subprocess.Popen(
        ["pulseaudio", "-n", f"--file={script}", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not (runtime / "native").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield runtime, daemon
    daemon.kill()
    daemon.wait(5)
    shutil.rmtree(runtime, ignore_errors=True)


def test_microphone_whose_sound_server_dies_raises_device_gone(
    private_pulse: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    """A real PulseAudio killed mid-capture: recv() raises DeviceGone (no hang), stop() still works."""
    runtime, daemon = private_pulse
    code = textwrap.dedent(
        f"""
        import asyncio, os, signal, time
        from devices import DeviceGone, Microphone

        async def main():
            mic = Microphone(read_timeout=1.0)
            await mic.start()
            await mic.recv()
            os.kill({daemon.pid}, signal.SIGKILL)
            t0 = time.monotonic()
            try:
                while True:
                    await mic.recv()
            except DeviceGone as exc:
                print("gone", round(time.monotonic() - t0, 2), exc.code)
            await mic.stop()
            print("running", mic.running)

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PULSE_SERVER": f"unix:{runtime}/native", "PULSE_RUNTIME_PATH": str(runtime)}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    gone, running = out.stdout.split("\n")[:2]
    assert gone.startswith("gone") and gone.endswith("device_gone") and float(gone.split()[1]) < 3
    assert running == "running False"
