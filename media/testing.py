"""Synthetic sources whose content can be verified after a lossy trip, for tests and benchmarks.

``PatternVideoSource`` draws its frame index as a row of 16 black/white cells along the top of
each frame (cells large enough to survive VP8/H264 at low bitrates) over moving content that
gives the encoder real work; ``read_index()`` recovers the index from a decoded frame.
``ToneAudioSource`` produces a sine tone in 10 ms frames. Both are paced at their real rate
like a device, and drop (skip) frames rather than burst when the consumer falls behind.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from media.frames import AUDIO_SAMPLE_RATE, VIDEO_TIME_BASE, AudioFrame, VideoFrame
from media.source import AudioSource, SourceEnded, VideoSource

INDEX_BITS = 16
_DARK, _BRIGHT = 40, 216


def draw_index(frame: VideoFrame, index: int) -> None:
    """Write ``index`` (16 bits) as cells along the top of ``frame``'s luma plane, in place."""
    y = frame.y
    cell_w = frame.width // INDEX_BITS
    cell_h = max(16, frame.height // 8) & ~1
    for bit in range(INDEX_BITS):
        y[:cell_h, bit * cell_w : (bit + 1) * cell_w] = _BRIGHT if (index >> bit) & 1 else _DARK
    frame.u[: cell_h // 2] = 128
    frame.v[: cell_h // 2] = 128


def read_index(frame: VideoFrame) -> int:
    """The index ``draw_index`` wrote, read back from a (possibly lossy) decoded frame."""
    y = frame.y
    cell_w = frame.width // INDEX_BITS
    cell_h = max(16, frame.height // 8) & ~1
    value = 0
    for bit in range(INDEX_BITS):
        cell = y[cell_h // 4 : cell_h * 3 // 4, bit * cell_w + cell_w // 4 : bit * cell_w + cell_w * 3 // 4]
        if float(cell.mean()) > (_DARK + _BRIGHT) / 2:
            value |= 1 << bit
    return value


def render_pattern(width: int, height: int, count: int = 30) -> list[np.ndarray]:
    """``count`` I420 arrays of smoothly moving content (gradients and a moving box)."""
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(count):
        data = np.empty((height * 3 // 2, width), dtype=np.uint8)
        f = VideoFrame(data)
        phase = 2 * np.pi * i / count
        f.y[:] = (128 + 60 * np.sin(xx / 37.0 + phase) * np.cos(yy / 23.0 - phase)).astype(np.uint8)
        bx = int((width - width // 4) * (0.5 + 0.5 * np.sin(phase)))
        by = int((height - height // 4) * (0.5 + 0.5 * np.cos(phase)))
        f.y[by : by + height // 4, bx : bx + width // 4] = 230
        f.u[:] = (128 + 40 * np.sin(xx[::2, ::2] / 29.0 - phase)).astype(np.uint8)
        f.v[:] = (128 + 40 * np.cos(yy[::2, ::2] / 31.0 + phase)).astype(np.uint8)
        frames.append(data)
    return frames


class _Paced:
    """Real-time pacing: the n-th item is due at ``start + n * period``; late consumers skip."""

    def __init__(self, period: float) -> None:
        if period <= 0:
            raise ValueError("period must be positive")
        self.period = period
        self.start = 0.0
        self.index = 0

    def reset(self) -> None:
        self.start = time.monotonic()
        self.index = 0

    async def wait(self) -> int:
        now = time.monotonic()
        due = self.start + self.index * self.period
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > 2 * self.period:  # fell behind: skip to the current slot like a camera
            self.index = int((now - self.start) / self.period)
        i = self.index
        self.index += 1
        return i


class _PacedSource:
    """Running state and real-time pacing of the synthetic sources below."""

    _pace: _Paced
    _running = False

    @property
    def running(self) -> bool:
        return self._running

    async def start(self) -> None:
        self._running = True
        self._pace.reset()

    async def stop(self) -> None:
        self._running = False


class PatternVideoSource(_PacedSource, VideoSource):
    """A paced synthetic camera producing I420 frames carrying their index (see module doc)."""

    def __init__(self, width: int = 640, height: int = 480, fps: float = 30.0, *, frames: int | None = None,
                 label: str = "pattern") -> None:
        self.width, self.height, self.fps = width, height, fps
        self.limit = frames
        self._label = label
        self._pattern = render_pattern(width, height)
        self._pace = _Paced(1.0 / fps)
        self.produced = 0
        """Frames returned so far."""
        self.last_index = -1
        """Index drawn into the latest frame (slots skipped by a late consumer make it exceed ``produced``)."""

    @property
    def name(self) -> str:
        return f"{self._label} {self.width}x{self.height}@{self.fps:g}"

    async def recv(self) -> VideoFrame:
        if not self._running or (self.limit is not None and self.produced >= self.limit):
            raise SourceEnded(self.name)
        i = await self._pace.wait()
        if not self._running:
            raise SourceEnded(self.name)
        frame = VideoFrame(self._pattern[i % len(self._pattern)].copy(),
                           pts=int(i * 90_000 / self.fps), time_base=VIDEO_TIME_BASE)
        draw_index(frame, i & 0xFFFF)
        self.produced += 1
        self.last_index = i
        return frame


class ToneAudioSource(_PacedSource, AudioSource):
    """A paced sine tone in 10 ms int16 frames."""

    def __init__(self, frequency: float = 1000.0, *, channels: int = 2, sample_rate: int = AUDIO_SAMPLE_RATE,
                 amplitude: float = 0.3, frame_ms: int = 10) -> None:
        self.frequency, self.channels, self.sample_rate = frequency, channels, sample_rate
        self.amplitude = amplitude
        self.frame_samples = sample_rate * frame_ms // 1000
        self._pace = _Paced(frame_ms / 1000)

    @property
    def name(self) -> str:
        return f"tone {self.frequency:g} Hz"

    async def recv(self) -> AudioFrame:
        if not self._running:
            raise SourceEnded(self.name)
        i = await self._pace.wait()
        n = self.frame_samples
        t = (np.arange(n) + i * n) / self.sample_rate
        mono = (np.sin(2 * np.pi * self.frequency * t) * self.amplitude * 32767).astype(np.int16)
        samples = np.ascontiguousarray(np.repeat(mono[:, None], self.channels, axis=1))
        return AudioFrame(samples=samples, sample_rate=self.sample_rate, pts=i * n)


def dominant_frequency(samples: np.ndarray, sample_rate: int) -> float:
    """The frequency (Hz) of the largest FFT peak of the first channel of ``samples``."""
    x = samples[:, 0] if samples.ndim == 2 else samples
    x = x.astype(np.float64) * np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(x))
    spectrum[0] = 0
    return float(np.argmax(spectrum) * sample_rate / len(x))
