"""``Tone``: a paced, phase-continuous sine source; ``dominant_frequency`` / ``rms_level`` to verify audio."""

from __future__ import annotations

import asyncio
import logging
import math
import time

import numpy as np

from devices._threads import sleep_unless
from media.frames import AUDIO_SAMPLE_RATE, AudioFrame
from media.source import AudioSource, SourceEnded

logger = logging.getLogger("devices")


def _mono_float(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples)
    scale = 32768.0 if x.dtype == np.int16 else 1.0
    x = x.astype(np.float64) / scale
    if x.ndim == 2:
        x = x.mean(axis=1)
    return x


FREQ_TOLERANCE_HZ = 5.0
"""How far ``dominant_frequency`` of a received tone may be from the sent one for the tone to count
as verified (the demo, the soak and the swarm all check against it)."""


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    """The strongest frequency in ``samples`` (Hz), by FFT with a Hann window.

    ``samples``: int16 (full scale 32768) or float, shape ``(n,)`` or ``(n, channels)``
    (channels are averaged). Interpolates between FFT bins, so a 1 s block resolves well
    under 1 Hz. Returns 0.0 for silence.
    """
    x = _mono_float(samples)
    if x.size < 4:
        raise ValueError("need at least 4 samples")
    x = x - x.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    k = int(np.argmax(spectrum[1:])) + 1
    if spectrum[k] <= 1e-9:
        return 0.0
    if 0 < k < spectrum.size - 1:  # parabolic interpolation on log magnitudes
        a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
        denom = a - 2 * b + c
        k_f = k + (0.5 * (a - c) / denom if denom else 0.0)
    else:
        k_f = float(k)
    return float(k_f * rate / x.size)


def rms_level(samples: np.ndarray) -> float:
    """Root-mean-square level relative to full scale (a 0.5-amplitude sine gives 0.354)."""
    x = _mono_float(samples)
    return float(np.sqrt(np.mean(x * x))) if x.size else 0.0


class Tone(AudioSource):
    """A sine of ``frequency`` Hz at peak ``level`` (fraction of full scale, 0..1), paced in real time.

    The phase carries over between blocks, so the signal has no clicks at block edges.
    """

    def __init__(
        self,
        frequency: float = 440.0,
        level: float = 0.5,
        channels: int = 1,
        *,
        sample_rate: int = AUDIO_SAMPLE_RATE,
        block_ms: int = 20,
    ) -> None:
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"level is a fraction of full scale in [0, 1], got {level}")
        if not 0.0 < frequency < sample_rate / 2:
            raise ValueError(f"frequency must be in (0, {sample_rate / 2:g}) Hz, got {frequency}")
        if channels < 1:
            raise ValueError("channels must be >= 1")
        self.frequency = frequency
        self.level = level
        self.channels = channels
        self.sample_rate = sample_rate
        self.block_size = sample_rate * block_ms // 1000
        """Samples per frame (960 at 48 kHz, 20 ms)."""
        self._running = False
        self._stopped = asyncio.Event()
        self._pts = 0
        self._phase = 0.0
        self._t0: float | None = None
        self._n = np.arange(self.block_size, dtype=np.float64)

    @property
    def name(self) -> str:
        return f"tone {self.frequency:g} Hz"

    @property
    def running(self) -> bool:
        return self._running

    async def start(self) -> None:
        """Start at phase 0, pts 0."""
        self._running, self._pts, self._phase, self._t0 = True, 0, 0.0, None
        self._stopped = asyncio.Event()

    async def stop(self) -> None:
        self._running = False
        self._stopped.set()

    async def recv(self) -> AudioFrame:
        """The next block, due at ``start + pts / sample_rate``."""
        if not self._running:
            raise SourceEnded(f"{self.name} is not running")
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        due = self._t0 + self._pts / self.sample_rate
        if due > now:
            if await sleep_unless(self._stopped, due - now):
                raise SourceEnded(f"{self.name} stopped")
        elif now - due > 1.0:
            logger.debug("%s: consumer lags %.1f s; re-anchoring", self.name, now - due)
            self._t0 = now - self._pts / self.sample_rate
        step = 2.0 * math.pi * self.frequency / self.sample_rate
        wave = np.sin(self._phase + step * self._n) * (self.level * 32767.0)
        self._phase = (self._phase + step * self.block_size) % (2.0 * math.pi)
        mono = np.round(wave).astype(np.int16)
        samples = np.repeat(mono[:, None], self.channels, axis=1) if self.channels > 1 else mono[:, None]
        frame = AudioFrame(
            samples=np.ascontiguousarray(samples), sample_rate=self.sample_rate, pts=self._pts, capture_time=time.time()
        )
        self._pts += self.block_size
        return frame
