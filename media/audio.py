"""Audio plumbing: sample-format helpers, stateful resampling, a 10 ms quantum, jitter and playout buffers.

Internally audio moves in 10 ms quanta (480 samples at 48 kHz) of interleaved int16; Opus
packets are 20 ms (``media.codecs.AudioEncoder`` packs two quanta into one packet).
sounddevice speaks float32 in [-1, 1]; ``float_to_int16`` / ``int16_to_float`` convert into
caller-supplied buffers.

``JitterBuffer`` reorders received frames by pts and releases them at a fixed depth,
concealing (silence) what did not arrive in time. ``PlayoutBuffer`` sits between the
receive path and a speaker callback that runs on the audio thread: ``write()`` from the loop,
``read()`` from the device thread, ``wait_for_playout()`` to await the end of what was
written, ``clear()`` to drop it (barge-in).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

import av
import numpy as np

from media._boundary import translate
from media.avframes import audio_from_av, audio_to_av
from media.errors import ConversionError, UnsupportedFormat
from media.frames import AUDIO_SAMPLE_RATE, AudioFrame

logger = logging.getLogger(__name__)

QUANTUM_MS = 10
"""The internal audio block."""
OPUS_PACKET_MS = 20
"""The Opus packet duration sent to peers."""


def quantum_samples(sample_rate: int = AUDIO_SAMPLE_RATE) -> int:
    """Samples per channel in one 10 ms quantum."""
    return sample_rate * QUANTUM_MS // 1000


def float_to_int16(block: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 samples in [-1, 1] (sounddevice) to int16, clipped, into ``out``."""
    if out is None:
        out = np.empty(block.shape, dtype=np.int16)
    scaled = np.multiply(block, 32767.0, dtype=np.float32)
    np.clip(scaled, -32768.0, 32767.0, out=scaled)
    np.rint(scaled, out=scaled)
    out[...] = scaled
    return out


def int16_to_float(samples: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """int16 samples to float32 in [-1, 1) (sounddevice), into ``out``."""
    if out is None:
        out = np.empty(samples.shape, dtype=np.float32)
    np.multiply(samples, np.float32(1.0 / 32768.0), out=out, dtype=np.float32)
    return out


class Resampler:
    """Stateful conversion of any int16 rate/channel count to ``rate``/``channels`` (libswresample).

    Keeps the filter state between calls (no clicks at block edges) and outputs a continuous pts.
    """

    def __init__(self, rate: int = AUDIO_SAMPLE_RATE, channels: int = 2) -> None:
        self.rate, self.channels = rate, channels
        layout = "stereo" if channels == 2 else "mono"
        self._resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
        self._pts = 0

    def resample(self, frame: AudioFrame) -> list[AudioFrame]:
        """Feed one block; returns 0 or more converted blocks (copies owned by the caller)."""
        if frame.sample_rate == self.rate and frame.channels == self.channels:
            out = [AudioFrame(frame.samples, self.rate, self._pts, frame.capture_time)]
            self._pts += frame.num_samples
            return out
        src = audio_to_av(frame)
        src.pts = None
        with translate(ConversionError, "resample audio"):
            frames = self._resampler.resample(src)
        result = []
        for f in frames:
            a = audio_from_av(f, capture_time=frame.capture_time)
            result.append(AudioFrame(a.samples.copy(), self.rate, self._pts, frame.capture_time))
            self._pts += a.num_samples
        return result


class Rechunker:
    """Cuts blocks of any length into frames of exactly ``samples`` per channel (default 10 ms).

    Uses one preallocated staging buffer; each emitted frame owns its samples.
    """

    def __init__(self, samples: int | None = None, channels: int = 2, sample_rate: int = AUDIO_SAMPLE_RATE) -> None:
        self.samples = samples or quantum_samples(sample_rate)
        self.channels, self.sample_rate = channels, sample_rate
        self._stage = np.zeros((self.samples, channels), dtype=np.int16)
        self._fill = 0
        self._pts: int | None = None

    def push(self, frame: AudioFrame) -> list[AudioFrame]:
        if frame.channels != self.channels:
            raise UnsupportedFormat(f"rechunker wants {self.channels} channels, got {frame.channels}")
        out: list[AudioFrame] = []
        src = frame.samples
        if self._pts is None:
            self._pts = frame.pts
        pos = 0
        while pos < len(src):
            take = min(len(src) - pos, self.samples - self._fill)
            self._stage[self._fill : self._fill + take] = src[pos : pos + take]
            self._fill += take
            pos += take
            if self._fill == self.samples:
                out.append(AudioFrame(self._stage.copy(), self.sample_rate, self._pts, frame.capture_time))
                self._pts += self.samples
                self._fill = 0
        return out


@dataclass(frozen=True)
class JitterStats:
    received: int
    played: int
    concealed: int
    """Slots played as silence because their frame had not arrived."""
    late: int
    """Frames that arrived after their slot was played (discarded)."""
    duplicates: int
    overflows: int
    """Times the buffer was full and resynchronised."""


class JitterBuffer:
    """Reorders audio frames by pts and releases them at a fixed depth.

    ``put()`` frames as they arrive (any order, constant duration); ``pop()`` returns the next
    frame in pts order once ``depth`` frames are buffered (then one per call), a silence frame
    for a slot whose frame is missing, or ``None`` while still filling. Holds at most
    ``capacity`` frames: on overflow it drops the oldest and resynchronises.
    """

    def __init__(self, depth: int = 3, capacity: int = 50) -> None:
        if not 1 <= depth <= capacity:
            raise ValueError("need 1 <= depth <= capacity")
        self.depth, self.capacity = depth, capacity
        self._frames: dict[int, AudioFrame] = {}
        self._next: int | None = None
        self._step: int | None = None
        self._primed = False
        self._received = self._played = self._concealed = self._late = self._dups = self._overflows = 0

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: AudioFrame) -> None:
        self._received += 1
        if self._step is None:
            self._step = frame.num_samples
        if self._next is not None and frame.pts < self._next:
            self._late += 1
            return
        if frame.pts in self._frames:
            self._dups += 1
            return
        self._frames[frame.pts] = frame
        if len(self._frames) > self.capacity:
            self._overflows += 1
            oldest = min(self._frames)
            del self._frames[oldest]
            self._next = min(self._frames)

    def pop(self) -> AudioFrame | None:
        if not self._primed:
            if len(self._frames) < self.depth:
                return None
            self._primed = True
            self._next = min(self._frames)
        if self._next is None or self._step is None:
            return None
        if not self._frames:
            self._primed = False  # ran dry: refill to depth before playing again
            return None
        frame = self._frames.pop(self._next, None)
        slot = self._next
        self._next += self._step
        if frame is None:
            self._concealed += 1
            ref = next(iter(self._frames.values()))
            return AudioFrame(np.zeros((self._step, ref.channels), dtype=np.int16), ref.sample_rate, slot)
        self._played += 1
        return frame

    def stats(self) -> JitterStats:
        return JitterStats(self._received, self._played, self._concealed, self._late, self._dups, self._overflows)


@dataclass(frozen=True)
class PlayoutStats:
    written: int
    """Samples (per channel) written."""
    played: int
    """Samples handed to the device."""
    underruns: int
    """Device reads that found the buffer short (padded with silence) while audio was pending."""
    dropped: int
    """Samples discarded because the buffer was full."""
    buffered: int


class PlayoutBuffer:
    """A bounded sample ring between the loop (``write``) and a speaker thread (``read``).

    ``read(frames, out)`` never blocks (it pads with silence, as a device callback must).
    ``wait_for_playout()`` resolves when the buffer has run empty (everything written, including
    anything written while waiting, has been read); ``clear()`` discards pending audio and
    resolves waiters. Writing beyond ``max_ms`` drops the oldest.
    """

    def __init__(self, channels: int = 2, sample_rate: int = AUDIO_SAMPLE_RATE, max_ms: int = 2000) -> None:
        self.channels, self.sample_rate = channels, sample_rate
        self.capacity = sample_rate * max_ms // 1000
        self._ring = np.zeros((self.capacity, channels), dtype=np.int16)
        self._start = 0
        self._size = 0
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._written = self._played = self._underruns = self._dropped = 0

    @property
    def buffered(self) -> int:
        """Samples per channel waiting to be played."""
        return self._size

    def write(self, frame: AudioFrame | np.ndarray) -> None:
        samples = frame.samples if isinstance(frame, AudioFrame) else frame
        if samples.ndim != 2 or samples.shape[1] != self.channels:
            raise UnsupportedFormat(f"playout wants (n, {self.channels}) int16, got {samples.shape}")
        n = len(samples)
        with self._lock:
            self._written += n
            if n >= self.capacity:
                self._dropped += self._size + n - self.capacity
                samples = samples[n - self.capacity :]
                n = self.capacity
                self._start = self._size = 0
            overflow = self._size + n - self.capacity
            if overflow > 0:
                self._dropped += overflow
                self._start = (self._start + overflow) % self.capacity
                self._size -= overflow
            end = (self._start + self._size) % self.capacity
            first = min(n, self.capacity - end)
            self._ring[end : end + first] = samples[:first]
            self._ring[: n - first] = samples[first:]
            self._size += n

    def read(self, frames: int, out: np.ndarray | None = None) -> np.ndarray:
        """Up to ``frames`` samples per channel into ``out`` (silence-padded). Safe from any thread."""
        if out is None:
            out = np.empty((frames, self.channels), dtype=np.int16)
        with self._lock:
            n = min(frames, self._size)
            first = min(n, self.capacity - self._start)
            out[:first] = self._ring[self._start : self._start + first]
            out[first:n] = self._ring[: n - first]
            self._start = (self._start + n) % self.capacity
            self._size -= n
            self._played += n
            if 0 < n < frames:
                self._underruns += 1
            drained = self._size == 0
        out[n:] = 0
        if drained:
            self._resolve_waiters()
        return out

    def clear(self) -> int:
        """Drop pending audio (e.g. barge-in); returns the samples dropped and resolves waiters."""
        with self._lock:
            n = self._size
            self._dropped += n
            self._start = self._size = 0
        self._resolve_waiters()
        return n

    async def wait_for_playout(self) -> None:
        """Return once the buffer has run empty (or ``clear()`` was called)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._size == 0:
                return
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, fut))
        await fut

    def stats(self) -> PlayoutStats:
        return PlayoutStats(self._written, self._played, self._underruns, self._dropped, self._size)

    def _resolve_waiters(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_set_done, fut)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                logger.debug("playout waiter's loop is closed")


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
