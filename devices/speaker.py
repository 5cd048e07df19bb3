"""``Speaker``: plays a remote participant's audio on an output device through sounddevice.

``play(frame)`` appends to a bounded ring buffer that PortAudio's callback drains. When more
than ``max_buffer`` seconds are queued, ``play()`` waits (back-pressure); if the ring still
overflows (several producers), the oldest samples are dropped and counted. The callback
plays silence on underrun (nothing to play is silence, and it is counted) and waits for
``prebuffer`` seconds of audio before it starts or resumes, to ride out network jitter.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import numpy as np

from devices import _portaudio
from devices._threads import run_in_thread
from devices.errors import DeviceGone, DeviceUnavailable
from media.frames import AUDIO_SAMPLE_RATE, AudioFrame

logger = logging.getLogger("devices")


class _Ring:
    """A fixed-size int16 sample ring shared by ``play()`` (loop) and the audio callback."""

    def __init__(self, capacity: int, channels: int) -> None:
        self.buf = np.zeros((capacity, channels), np.int16)
        self.capacity = capacity
        self.start = 0
        self.size = 0
        self.dropped = 0
        self.lock = threading.Lock()

    def write(self, samples: np.ndarray) -> None:
        with self.lock:
            n = len(samples)
            if n > self.capacity:
                self.dropped += n - self.capacity
                samples, n = samples[-self.capacity :], self.capacity
            overflow = self.size + n - self.capacity
            if overflow > 0:  # drop the oldest
                self.start = (self.start + overflow) % self.capacity
                self.size -= overflow
                self.dropped += overflow
            end = (self.start + self.size) % self.capacity
            first = min(n, self.capacity - end)
            self.buf[end : end + first] = samples[:first]
            self.buf[: n - first] = samples[first:]
            self.size += n

    def read_into(self, out: np.ndarray) -> int:
        with self.lock:
            n = min(len(out), self.size)
            first = min(n, self.capacity - self.start)
            out[:first] = self.buf[self.start : self.start + first]
            out[first:n] = self.buf[: n - first]
            self.start = (self.start + n) % self.capacity
            self.size -= n
            return n

    def clear(self) -> None:
        with self.lock:
            self.start = self.size = 0


class Speaker:
    """An output device by index, name (substring) or ``None`` for the default."""

    def __init__(
        self,
        device: int | str | None = None,
        *,
        sample_rate: int = AUDIO_SAMPLE_RATE,
        channels: int = 2,
        max_buffer: float = 0.2,
        prebuffer: float = 0.04,
        open_timeout: float = 5.0,
        stall_timeout: float = 2.0,
    ) -> None:
        if channels < 1 or sample_rate <= 0 or max_buffer <= 0 or prebuffer < 0:
            raise ValueError("channels, sample_rate and max_buffer must be positive")
        self.device = device
        """Index, name substring, or ``None`` for the system default output."""
        self.sample_rate = sample_rate
        self.channels = channels
        self.max_buffer = max_buffer
        """Seconds queued before ``play()`` waits."""
        self.prebuffer = prebuffer
        """Seconds buffered before playback starts or resumes after an underrun."""
        self.open_timeout = open_timeout
        self.stall_timeout = stall_timeout
        """Seconds without a callback (device stalled) before ``play()`` raises ``DeviceGone``."""
        self.device_name: str | None = None
        """The resolved device's name, once started."""
        self._name = _portaudio.label(device, "output")
        self._ring = _Ring(int(sample_rate * max_buffer * 4), channels)
        self._stream: Any = None
        self._primed = False
        self._underruns = 0
        self._last_callback = 0.0

    @property
    def name(self) -> str:
        return self._name

    @property
    def running(self) -> bool:
        return self._stream is not None

    @property
    def underruns(self) -> int:
        """Callbacks that found less audio than they needed (played silence instead)."""
        return self._underruns

    @property
    def dropped_samples(self) -> int:
        """Samples dropped because more was queued than the ring holds."""
        return self._ring.dropped

    @property
    def buffered(self) -> float:
        """Seconds of audio queued and not yet handed to the device."""
        return self._ring.size / self.sample_rate

    async def start(self) -> None:
        """Open and start the output stream. Raises a ``DeviceError``."""
        if self._stream is not None:
            return
        _portaudio.load()
        self._ring.clear()
        self._primed = False
        try:
            stream = await run_in_thread(self._open, timeout=self.open_timeout, on_late=_portaudio.close_stream)
        except TimeoutError:
            raise DeviceUnavailable(
                self._name, f"did not open within {self.open_timeout:g} s", _portaudio.NO_AUDIO_FIX
            ) from None
        self._last_callback = time.monotonic()
        self._stream = stream
        logger.info("%s: started (%s, %d Hz, %d ch)", self._name, self.device_name, self.sample_rate, self.channels)

    def _open(self) -> Any:
        sd = _portaudio.load()
        info = _portaudio.resolve(self.device, "output")
        self.device_name = str(info["name"])
        if self.device is not None:
            self._name = f"speaker {info['name']!r}"
        try:
            stream = sd.OutputStream(
                device=info["index"],
                samplerate=self.sample_rate,
                blocksize=self.sample_rate // 100,
                channels=self.channels,
                dtype="int16",
                callback=self._callback,
            )
        except (sd.PortAudioError, ValueError) as exc:
            raise _portaudio.stream_error(exc, self._name, self.sample_rate, self.channels) from exc
        _portaudio.opened()
        try:
            stream.start()
        except sd.PortAudioError as exc:
            _portaudio.close_stream(stream)
            raise _portaudio.stream_error(exc, self._name, self.sample_rate, self.channels) from exc
        return stream

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio thread: copy queued samples out; silence when there are not enough."""
        self._last_callback = time.monotonic()
        if not self._primed:
            if self._ring.size < self.prebuffer * self.sample_rate:
                outdata.fill(0)
                return
            self._primed = True
        n = self._ring.read_into(outdata)
        if n < frames:
            outdata[n:] = 0
            self._underruns += 1
            self._primed = False

    async def play(self, frame: AudioFrame) -> None:
        """Queue ``frame`` for playback; waits while more than ``max_buffer`` s are queued.

        Mono is duplicated to every channel; more channels than the speaker's are averaged.
        Raises ``DeviceGone`` when the device stopped consuming audio.
        """
        if self._stream is None:
            raise RuntimeError(f"{self._name} is not started; call start() first")
        if frame.sample_rate != self.sample_rate:
            raise ValueError(f"{self._name} plays {self.sample_rate} Hz audio, got a {frame.sample_rate} Hz frame")
        self._ring.write(self._adapt(frame.samples))
        while self._ring.size > self.max_buffer * self.sample_rate:
            if time.monotonic() - self._last_callback > self.stall_timeout or not self._stream.active:
                await self.stop()
                raise DeviceGone(
                    self._name,
                    f"stopped consuming audio for {self.stall_timeout:g} s",
                    "check the sound server is running; " + _portaudio.NO_AUDIO_FIX,
                )
            excess = self._ring.size / self.sample_rate - self.max_buffer
            await asyncio.sleep(max(excess, 0.005))
            if self._stream is None:
                return

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until everything queued has been handed to the device."""
        deadline = time.monotonic() + timeout
        while self._stream is not None and self._ring.size and time.monotonic() < deadline:
            if not self._primed:
                self._primed = True  # play out a tail shorter than the prebuffer
            await asyncio.sleep(0.01)

    def _adapt(self, samples: np.ndarray) -> np.ndarray:
        ch = samples.shape[1]
        if ch == self.channels:
            return samples
        if ch == 1:
            return np.repeat(samples, self.channels, axis=1)
        mono = samples.mean(axis=1, dtype=np.float32).round().astype(np.int16)[:, None]
        return np.repeat(mono, self.channels, axis=1) if self.channels > 1 else mono

    async def stop(self) -> None:
        """Stop playback and close the stream. Idempotent."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            await run_in_thread(_portaudio.close_stream, stream, timeout=5.0)
        except TimeoutError:
            logger.warning("%s: closing the stream takes more than 5 s; it continues in the background", self._name)
        self._ring.clear()
        logger.info("%s: stopped", self._name)

    async def __aenter__(self) -> Speaker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
