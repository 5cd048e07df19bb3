"""``Microphone``: audio input through sounddevice (PortAudio), 48 kHz, 20 ms int16 blocks.

PortAudio's callback thread is the device thread. The callback only copies the block and
hands it to the event loop (``call_soon_threadsafe``) into a bounded queue that drops the
oldest block (``dropped_frames`` counts them). ``recv()`` raises ``DeviceGone`` when no
block arrives within ``read_timeout`` (sound server died, device unplugged).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np

from devices import _portaudio
from devices._threads import run_in_thread
from devices.errors import DeviceGone, DeviceUnavailable
from media.frames import AUDIO_SAMPLE_RATE, AudioFrame
from media.source import AudioSource, SourceEnded

logger = logging.getLogger("devices")

_STOPPED = object()


class Microphone(AudioSource):
    """Audio from an input device, by index, name (substring) or ``None`` for the default."""

    def __init__(
        self,
        device: int | str | None = None,
        *,
        sample_rate: int = AUDIO_SAMPLE_RATE,
        channels: int = 1,
        block_ms: int = 20,
        queue_size: int = 50,
        open_timeout: float = 5.0,
        read_timeout: float = 2.0,
    ) -> None:
        if channels < 1 or sample_rate <= 0 or block_ms <= 0:
            raise ValueError("channels, sample_rate and block_ms must be positive")
        self.device = device
        """Index, name substring, or ``None`` for the system default input."""
        self.sample_rate = sample_rate
        self.channels = channels
        self.block_size = sample_rate * block_ms // 1000
        """Samples per frame (960 at 48 kHz, 20 ms)."""
        self.queue_size = queue_size
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.device_name: str | None = None
        """The resolved device's name, once started."""
        self._name = _portaudio.label(device, "input")
        self._stream: Any = None
        self._queue: asyncio.Queue[object] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gen = 0
        self._pts = 0
        self._dropped = 0
        self._overflows = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def running(self) -> bool:
        return self._stream is not None

    @property
    def dropped_frames(self) -> int:
        """Blocks dropped because the consumer did not keep up."""
        return self._dropped

    @property
    def overflows(self) -> int:
        """Blocks PortAudio reported as overflowed (samples lost before they reached us)."""
        return self._overflows

    async def start(self) -> None:
        """Open and start the input stream. Raises a ``DeviceError`` (never hangs past ``open_timeout``)."""
        if self._stream is not None:
            return
        _portaudio.load()
        self._loop = asyncio.get_running_loop()
        self._gen += 1
        self._pts = 0
        self._queue = asyncio.Queue()
        try:
            stream = await run_in_thread(
                self._open, self._gen, timeout=self.open_timeout, on_late=_portaudio.close_stream
            )
        except TimeoutError:
            raise DeviceUnavailable(
                self._name, f"did not open within {self.open_timeout:g} s", _portaudio.NO_AUDIO_FIX
            ) from None
        self._stream = stream
        logger.info("%s: started (%s, %d Hz, %d ch)", self._name, self.device_name, self.sample_rate, self.channels)

    def _open(self, gen: int) -> Any:
        """Blocking: resolve the device, open and start the stream (executor thread)."""
        sd = _portaudio.load()
        info = _portaudio.resolve(self.device, "input")
        self.device_name = str(info["name"])
        if self.device is not None:
            self._name = f"microphone {info['name']!r}"
        try:
            stream = sd.InputStream(
                device=info["index"],
                samplerate=self.sample_rate,
                blocksize=self.block_size,
                channels=self.channels,
                dtype="int16",
                callback=lambda indata, frames, t, status: self._callback(gen, indata, frames, status),
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

    def _callback(self, gen: int, indata: np.ndarray, frames: int, status: Any) -> None:
        """PortAudio thread: copy the block and hand it to the loop. Nothing else."""
        if status.input_overflow:
            self._overflows += 1
        block = indata.copy()
        t = time.time() - frames / self.sample_rate
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._push, gen, block, t)
        except RuntimeError:  # the loop closed under a running stream
            sd = _portaudio.load()
            raise sd.CallbackStop from None

    def _push(self, gen: int, block: np.ndarray, t: float) -> None:
        """On the loop: wrap the block in a frame, enqueue it, dropping the oldest when full."""
        q = self._queue
        if gen != self._gen or q is None or self._stream is None:
            return
        frame = AudioFrame(samples=block, sample_rate=self.sample_rate, pts=self._pts, capture_time=t)
        self._pts += len(block)
        while q.qsize() >= self.queue_size:
            q.get_nowait()
            self._dropped += 1
        q.put_nowait(frame)

    async def recv(self) -> AudioFrame:
        """The next 20 ms block. ``SourceEnded`` once stopped; ``DeviceGone`` if blocks stop coming."""
        q = self._queue
        if self._stream is None or q is None:
            raise SourceEnded(f"{self._name} is not running")
        # The first block may take longer: some servers start a new stream at a coarse latency.
        timeout = self.read_timeout if self._pts else self.read_timeout + self.open_timeout
        try:
            async with asyncio.timeout(timeout):  # not wait_for: it can swallow a cancel (3.11)
                item = await q.get()
        except TimeoutError:
            await self.stop()
            raise DeviceGone(
                self._name,
                f"no audio for {timeout:g} s (sound server stopped or device unplugged)",
                _portaudio.NO_AUDIO_FIX,
            ) from None
        if item is _STOPPED:
            q.put_nowait(_STOPPED)
            raise SourceEnded(f"{self._name} stopped")
        assert isinstance(item, AudioFrame)
        return item

    async def stop(self) -> None:
        """Stop and close the stream (the OS device is released). Idempotent."""
        stream, self._stream = self._stream, None
        self._gen += 1
        if self._queue is not None:
            self._queue.put_nowait(_STOPPED)
        if stream is None:
            return
        try:
            await run_in_thread(_portaudio.close_stream, stream, timeout=5.0)
        except TimeoutError:
            logger.warning("%s: closing the stream takes more than 5 s; it continues in the background", self._name)
        logger.info("%s: stopped", self._name)
