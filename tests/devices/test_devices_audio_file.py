"""AudioFile: a real file (written by PyAV at test time) as paced 48 kHz blocks with its content intact."""

from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import pytest

from devices import AudioFile, dominant_frequency
from media.source import SourceEnded


def write_wav(path: Path, frequency: float, seconds: float, rate: int, channels: int) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    mono = (0.5 * 32767 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)
    data = np.repeat(mono[:, None], channels, axis=1)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono" if channels == 1 else "stereo")
        frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format="s16", layout=stream.layout.name)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


async def test_audio_file_resampled_paced_and_ends(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "tone.wav", 440, 0.5, rate=44_100, channels=2)
    source = AudioFile(path)
    await source.start()
    t0 = time.monotonic()
    frames = []
    with pytest.raises(SourceEnded):
        while True:
            frames.append(await source.recv())
    elapsed = time.monotonic() - t0
    await source.stop()
    assert len(frames) == 25  # 0.5 s in 20 ms blocks
    assert all(f.samples.shape == (960, 2) and f.sample_rate == 48_000 for f in frames)
    assert [f.pts for f in frames] == [i * 960 for i in range(25)]
    assert 0.35 < elapsed < 0.9
    x = np.concatenate([f.samples for f in frames])
    assert dominant_frequency(x, 48_000) == pytest.approx(440, abs=1)


async def test_audio_file_loops_and_downmixes(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "short.wav", 1000, 0.1, rate=48_000, channels=2)
    source = AudioFile(path, loop=True, channels=1)
    await source.start()
    frames = [await source.recv() for _ in range(12)]  # 0.24 s from a 0.1 s file
    await source.stop()
    assert all(f.samples.shape == (960, 1) for f in frames)
    x = np.concatenate([f.samples for f in frames])
    assert dominant_frequency(x, 48_000) == pytest.approx(1000, abs=2)
    assert np.abs(x[-960:]).max() > 10_000  # still playing after the loop
