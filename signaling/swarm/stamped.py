"""Synthetic sources whose content and capture time survive the codec, for receivers in other processes.

Every worker of a swarm runs on one machine clock (or on machines whose clocks agree), so the
capture time can travel inside the media:

* ``StampedTestPattern``: ``devices.TestPattern`` (frame index in the top band, read by
  ``read_index``, ``devices.read_frame_index`` in one NumPy gather) plus a second band at the
  bottom with the capture wall-clock time in milliseconds modulo ``VIDEO_CYCLE_MS`` (10 s), in
  the same cell layout: two sync cells, 24 value bits, a 6-bit check. ``read_capture_ms`` decodes
  it by sampling 3x3 points in the middle of each cell (one NumPy gather, ~10 us at 640x480), so
  blur and ringing at the cell edges do not matter. Frame ``k`` of the wall-clock grid (slot
  ``k``) carries index ``(k + shift) mod (fps * 10)`` (``shift`` follows the source's phase) and
  the time of its slot, so the video repeats every 10 s; with ``preencode=True`` one such cycle
  is encoded before the run and replayed (``EncodedVideoFrame``s), as a load-testing tool
  replaying a recording does. Receivers compare indices and stamps modulo the cycle
  (``VideoCheck``); latency stays unambiguous as long as two
  consecutive frames received are less than 5 s of capture time apart.
* ``MarkedTone``: a mono 48 kHz sine (its frequency tells the sender apart) with timing marks:
  each second of the sender's wall clock (shifted by its phase) opens with two silent 20 ms blocks,
  and a second pair of silent blocks follows ``4 + (second mod 16)`` blocks after the first. A
  receiver that sees two silent runs that far apart (with no RTP gap between them) knows which
  second they mark modulo 16, hence the capture time of the first run, unambiguous up to 16 s of
  latency. ``ToneMarks`` does that detection: one latency sample per second per stream, to the
  20 ms block (Opus' look-ahead decides which received block is the first fully silent one; the
  detector assumes it, as libopus does, and would read 20 ms low otherwise). The marks take 80 ms
  of each second; the tone's frequency (verified by FFT) is untouched.

Both sources are paced on the wall-clock grid of their period (plus a phase, so that a worker's
sources do not all fire at once) by ``GridClock``: one timer and one future per frame, no task
per frame. A source that falls more than a second behind skips ahead to the current frame (an
overrun, as a device would have); the frame indices / RTP timestamps then jump, which receivers
count as loss.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from functools import lru_cache, partial
from typing import Any

import numpy as np

from devices import TestPattern
from devices.pattern import _check as _index_check  # TestPattern's check value (see read_index)
from media.codecs import AudioEncoder, AudioEncoderSettings, VideoCodecName, VideoEncoder, VideoEncoderSettings
from media.errors import EncodeError
from media.fanout import audio_level_dbov
from media.frames import AUDIO_SAMPLE_RATE, AudioFrame, EncodedVideoFrame, OpusAudioFrame, VideoFrame
from media.source import AudioSource, SourceEnded, VideoSource

logger = logging.getLogger(__name__)

STAMP_BITS = 24
VIDEO_CYCLE_S = 10
"""The stamped pattern repeats after this many seconds (``fps * VIDEO_CYCLE_S`` frames)."""
VIDEO_CYCLE_MS = VIDEO_CYCLE_S * 1000
"""Capture stamps count milliseconds modulo this."""
REPLAY_GOP_S = 0.5
"""A replayed cycle has a keyframe this often: a new subscriber or a PLI waits at most this long."""
_CHECK_BITS = 6
_COLS, _ROWS = 16, 2
_BLACK, _WHITE = 16, 235
MAX_LAG_S = 1.0
"""A source this far behind its schedule skips ahead (an overrun)."""

BLOCK_MS = 20
BLOCK = AUDIO_SAMPLE_RATE * BLOCK_MS // 1000
MARK_BLOCKS = 2
"""Silent blocks per mark."""
MARK_GAP_BASE = 4
"""The second mark starts ``MARK_GAP_BASE + (second mod MARK_MODULUS)`` blocks after the first."""
MARK_MODULUS = 16
"""Audio latency is unambiguous up to this many seconds."""
EARLY_S = 0.5
"""A video stamp or a tone mark may read up to this much before its capture time and still be
a (small, negative) latency rather than one a whole cycle long: with no receive buffer in front,
latency is ~1 ms, and the millisecond stamps and the sender's pacing are that coarse."""


class GridClock:
    """Paces frame ``n`` of a source at ``anchor + n * period`` on the wall clock, anchor on the period grid + phase."""

    def __init__(self, period: float, phase: float = 0.0) -> None:
        self.period = period
        self.phase = phase % 1.0
        self.wall0 = 0.0
        """Wall-clock time of frame 0 (on the grid of ``period`` shifted by ``phase * period``)."""
        self._loop0 = 0.0
        self._waiter: asyncio.Future[bool] | None = None
        self._stopped = True

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        now_wall, now_loop = time.time(), loop.time()
        offset = self.phase * self.period
        self.wall0 = (math.floor((now_wall - offset) / self.period) + 1) * self.period + offset
        self._loop0 = now_loop + (self.wall0 - now_wall)
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True
        w, self._waiter = self._waiter, None
        if w is not None and not w.done():
            w.set_result(False)

    def wall_time(self, n: int) -> float:
        return self.wall0 + n * self.period

    def frame_now(self) -> int:
        """The frame whose slot contains the current time."""
        return max(0, int((asyncio.get_running_loop().time() - self._loop0) / self.period))

    async def wait(self, n: int) -> bool:
        """Sleep until frame ``n`` is due; False if stopped meanwhile."""
        if self._stopped:
            return False
        loop = asyncio.get_running_loop()
        due = self._loop0 + n * self.period
        if due <= loop.time():
            return True
        fut: asyncio.Future[bool] = loop.create_future()
        self._waiter = fut
        handle = loop.call_at(due, _resolve, fut)
        try:
            return await fut
        finally:
            handle.cancel()
            if self._waiter is fut:
                self._waiter = None


def _resolve(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(True)


def _check(value: int) -> int:
    return ((value * 0x9E3779B1) & 0xFFFFFFFF) >> (32 - _CHECK_BITS)


@lru_cache(maxsize=16)
def _band(width: int, height: int) -> tuple[int, list[tuple[int, int, int, int]], np.ndarray, np.ndarray]:
    """Bottom band: its top row, the cells (y0, y1, x0, x1) and the sample rows/columns for reading."""
    band = max(2 * _ROWS, height // 8 // 2 * 2)
    top = height - band
    cells, rows, cols = [], [], []
    for r in range(_ROWS):
        y0, y1 = top + r * band // _ROWS, top + (r + 1) * band // _ROWS
        rows += [y0 + int((y1 - y0) * f) for f in (0.3, 0.5, 0.7)]
        for c in range(_COLS):
            x0, x1 = c * width // _COLS, (c + 1) * width // _COLS
            cells.append((y0, y1, x0, x1))
    for c in range(_COLS):
        x0, x1 = c * width // _COLS, (c + 1) * width // _COLS
        cols += [x0 + int((x1 - x0) * f) for f in (0.3, 0.5, 0.7)]
    return top, cells, np.array(rows, np.intp), np.array(cols, np.intp)


def _stamp_bits(value: int) -> list[int]:
    value %= VIDEO_CYCLE_MS
    bits = [1, 0]
    bits += [(value >> i) & 1 for i in range(STAMP_BITS - 1, -1, -1)]
    bits += [(_check(value) >> i) & 1 for i in range(_CHECK_BITS - 1, -1, -1)]
    return bits


def draw_capture_ms(frame: VideoFrame, ms: int) -> None:
    """Write ``ms % VIDEO_CYCLE_MS`` into the bottom band of ``frame`` (in place; chroma set neutral)."""
    w, h = frame.width, frame.height
    top, cells, _, _ = _band(w, h)
    y = frame.y
    for (y0, y1, x0, x1), bit in zip(cells, _stamp_bits(ms), strict=True):
        y[y0:y1, x0:x1] = _WHITE if bit else _BLACK
    frame.u[top // 2 :] = 128
    frame.v[top // 2 :] = 128


_WEIGHTS = 1 << np.arange(STAMP_BITS - 1, -1, -1, dtype=np.int64)
_CHECK_WEIGHTS = 1 << np.arange(_CHECK_BITS - 1, -1, -1, dtype=np.int64)


@lru_cache(maxsize=16)
def _index_band(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample rows/columns of ``TestPattern``'s index band (top eighth, 2 x 16 cells): 3 x 3 points per cell."""
    band = max(2 * _ROWS, height // 8 // 2 * 2)
    rows = [r * band // _ROWS + int(((r + 1) * band // _ROWS - r * band // _ROWS) * f)
            for r in range(_ROWS) for f in (0.3, 0.5, 0.7)]
    cols = [c * width // _COLS + int(((c + 1) * width // _COLS - c * width // _COLS) * f)
            for c in range(_COLS) for f in (0.3, 0.5, 0.7)]
    return np.array(rows, np.intp), np.array(cols, np.intp)


def _read_bits(y: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    samples = y[rows[:, None], cols[None, :]]  # (2*3, 16*3)
    means = samples.reshape(_ROWS, 3, _COLS, 3).mean(axis=(1, 3), dtype=np.float32).reshape(-1)
    return (means > 125.0).astype(np.int64)


def read_index(frame: VideoFrame) -> int | None:
    """The frame index ``TestPattern`` drew, like ``devices.read_frame_index`` but in one NumPy gather.

    Same cells, threshold, sync cells and check value; ~10 us instead of ~90 us at 640x480, which
    matters when a worker reads a thousand frames a second. (A candidate for ``devices`` itself.)
    """
    rows, cols = _index_band(frame.width, frame.height)
    bits = _read_bits(frame.y, rows, cols)
    if bits[0] != 1 or bits[1] != 0:
        return None
    index = int(bits[2 : 2 + STAMP_BITS] @ _WEIGHTS)
    check = int(bits[2 + STAMP_BITS :] @ _CHECK_WEIGHTS)
    return index if check == _index_check(index) else None


def read_capture_ms(frame: VideoFrame) -> int | None:
    """The capture time (ms modulo ``VIDEO_CYCLE_MS``) ``StampedTestPattern`` drew into ``frame``, or None."""
    w, h = frame.width, frame.height
    _, _, rows, cols = _band(w, h)
    bits = _read_bits(frame.y, rows, cols)
    if bits[0] != 1 or bits[1] != 0:
        return None
    value = int(bits[2 : 2 + STAMP_BITS] @ _WEIGHTS)
    check = int(bits[2 + STAMP_BITS :] @ _CHECK_WEIGHTS)
    return value if check == _check(value) and value < VIDEO_CYCLE_MS else None


def latency_ms(stamp_ms: int, now: float | None = None) -> float:
    """Milliseconds from a capture stamp to ``now`` (wall clock), modulo ``VIDEO_CYCLE_MS``, in
    ``[-EARLY_S, VIDEO_CYCLE_MS - EARLY_S)``: a frame that reads a millisecond early is -1 ms, not 9999."""
    now_ms = int((time.time() if now is None else now) * 1000)
    early_ms = int(EARLY_S * 1000)
    return float((now_ms - stamp_ms + early_ms) % VIDEO_CYCLE_MS - early_ms)


def cycle_frames(fps: float) -> int:
    """Frames in one cycle of the stamped pattern: indices count modulo this."""
    return max(1, round(fps * VIDEO_CYCLE_S))


class _GridSource:
    """What both stamped sources share: a ``GridClock``, running state, the next slot to produce, and
    the cycle a pre-encoding source replays.

    A source more than ``MAX_LAG_S`` behind its grid skips to the current slot (``overruns``
    counts it) rather than bursting out the frames it missed.
    """

    clock: GridClock

    @property
    def name(self) -> str:
        raise NotImplementedError

    preencode = False
    """Replay one cycle encoded at ``prepare()`` instead of encoding live (subclasses)."""
    _cycle: list[Any]

    def _grid_init(self, period: float, phase: float) -> None:
        self._cycle = []
        self.clock = GridClock(period, phase)
        self._next = 0
        self._running = False
        self.overruns = 0
        """Times the source skipped frames because it fell more than ``MAX_LAG_S`` behind."""

    @property
    def running(self) -> bool:
        return self._running

    def grid_slot(self, n: int) -> int:
        """Frame ``n``'s slot on the wall clock: slot 0 at the epoch plus the phase's offset."""
        c = self.clock
        return round((c.wall_time(n) - c.phase * c.period) / c.period)

    async def start(self) -> None:
        self._next, self._running = 0, True
        self.clock.start()
        await self.prepare()

    async def prepare(self) -> None:
        """Encode the cycle now (``preencode``; ``start()`` does it otherwise), off the event loop."""
        if self.preencode and not self._cycle:
            await asyncio.to_thread(self.prepare_blocking)

    def prepare_blocking(self) -> None:
        """``prepare()`` on the calling thread. A cycle that cannot be encoded (a codec that drops
        or delays frames) leaves the source encoding live, as it would without ``preencode``."""
        if self.preencode and not self._cycle:
            try:
                self._cycle = self._encode_cycle()
            except EncodeError as exc:
                logger.warning("%s: no replay (%s); encoding live", self.name, exc)
                self.preencode = False

    def _encode_cycle(self) -> list[Any]:
        """The encoded media of one cycle, by position (sources that can replay one)."""
        raise NotImplementedError

    async def stop(self) -> None:
        self._running = False
        self.clock.stop()

    async def _slot(self) -> int:
        """Wait for the next slot and return its number (``SourceEnded`` once stopped)."""
        if not self._running or not await self.clock.wait(self._next):
            raise SourceEnded(f"{self.name} stopped")
        n = self._next
        now = self.clock.frame_now()
        if (now - n) * self.clock.period > MAX_LAG_S:
            self.overruns += 1
            n = now
        self._next = n + 1
        return n


class StampedTestPattern(_GridSource, VideoSource):
    """``TestPattern`` frames (index in the top band) with the capture time in a bottom band (module doc).

    Slot ``k`` of the wall-clock grid shows index ``(k + shift) mod cycle_frames`` (``shift``
    follows the phase) and the stamp of its scheduled time, so the same slot always looks the
    same. With ``preencode=True`` (and a frame rate that fills the 10 s cycle with whole frames)
    the cycle is encoded once, at the first ``start()`` or ``prepare()``, with ``codec`` at
    ``bitrate`` and a keyframe every ``REPLAY_GOP_S``; ``recv()`` then hands out
    ``EncodedVideoFrame``s that the publishing fan-out
    sends without encoding (their pixels are rendered only if someone reads them).
    """

    def __init__(self, width: int = 640, height: int = 480, fps: float = 30.0, *, phase: float = 0.0,
                 preencode: bool = False, codec: VideoCodecName = "vp8", bitrate: int = 800_000) -> None:
        self.pattern = TestPattern(width, height, fps)
        self._grid_init(1.0 / fps, phase)
        self.cycle_frames = cycle_frames(fps)
        self._periodic = abs(fps * VIDEO_CYCLE_S - self.cycle_frames) < 1e-9
        self.shift = round(self.clock.phase * self.cycle_frames) % self.cycle_frames
        """Where in the pattern's cycle slot 0 is: sources with different phases are not in step,
        so the costlier stretches of the content do not hit every receiver at once."""
        self.preencode = preencode and self._periodic
        self.codec: VideoCodecName = codec
        self.bitrate = bitrate
        self._cycle: list[tuple[bytes, bool]] = []
        """(packet, keyframe) of each position of the cycle."""

    @property
    def name(self) -> str:
        return f"stamped {self.pattern.name}"

    @property
    def width(self) -> int:
        return self.pattern.width

    @property
    def height(self) -> int:
        return self.pattern.height

    @property
    def fps(self) -> float:
        return self.pattern.fps

    def stamp_ms(self, slot: int) -> int:
        """The capture stamp slot ``slot`` carries: its wall-clock time in ms modulo ``VIDEO_CYCLE_MS``."""
        c = self.clock
        if self._periodic:  # from the position in the cycle, so that it repeats exactly
            t = ((slot % self.cycle_frames) + c.phase) * c.period
        else:
            t = (slot + c.phase) * c.period
        return round(t * 1000) % VIDEO_CYCLE_MS

    def render_slot(self, slot: int) -> VideoFrame:
        """The frame of slot ``slot`` (a new array): index ``(slot + shift) mod cycle_frames``."""
        frame = VideoFrame(self.pattern.render((slot + self.shift) % self.cycle_frames))
        draw_capture_ms(frame, self.stamp_ms(slot))
        return frame

    def _encode_cycle(self) -> list[tuple[bytes, bool]]:
        """(packet, keyframe) per position (600 encodes at 640x480@30: ~0.8 s on the 2-core VM)."""
        fps = self.pattern.fps
        gop = max(1, round(fps * REPLAY_GOP_S))
        encoder = VideoEncoder(VideoEncoderSettings(codec=self.codec, bitrate=self.bitrate, fps=fps,
                                                    max_bitrate=max(self.bitrate, 2_500_000)))
        out: list[tuple[bytes, bool]] = []
        # the whole cycle once first: an encoder's first seconds give bigger frames that cost up to
        # 1.8x as much to decode (measured: 0.33 against 0.19 ms at 640x480), and the replay must
        # be the steady state, position 0 following position cycle-1 as it does when replayed
        warm = self.cycle_frames
        try:
            for k in range(-warm, self.cycle_frames):
                slot = k % self.cycle_frames
                if slot % gop == 0:
                    encoder.force_keyframe()
                frame = self.render_slot(slot)
                frame.pts = (k + warm) * 90_000 // round(fps)
                packets = encoder.encode(frame)
                if k >= 0:
                    if len(packets) != 1:
                        raise EncodeError(f"{self.codec} gave {len(packets)} packets for one frame")
                    out.append((bytes(packets[0]), bool(packets[0].is_keyframe)))
        finally:
            encoder.close()
        return out

    async def recv(self) -> VideoFrame:
        n = await self._slot()
        slot = self.grid_slot(n)
        capture = self.clock.wall_time(n)
        pts = int(n * 90_000 / self.pattern.fps)
        if self._cycle:
            packet, key = self._cycle[slot % self.cycle_frames]
            return EncodedVideoFrame.replay(packet, self.codec, key, self.width, self.height,
                                            partial(self.render_slot, slot), pts=pts, capture_time=capture)
        frame = self.render_slot(slot)
        frame.pts, frame.capture_time = pts, capture
        return frame


class MarkedTone(_GridSource, AudioSource):
    """A mono 48 kHz sine of ``frequency`` Hz with timing marks every second (module doc).

    With a frequency that is a multiple of 50 Hz every 20 ms block is the same read-only array:
    nothing is synthesised or allocated per frame. Such a tone is also periodic on the wall-clock
    grid: its blocks repeat every ``MARK_MODULUS`` seconds. With ``preencode=True`` it is encoded
    once, at the first ``start()`` (one cycle, 800 Opus packets, after a one-second warm-up so the
    cycle joins up seamlessly), and ``recv()`` hands out ``OpusAudioFrame``s that carry their
    packet: the publishing fan-out sends them without encoding anything (what a load-testing tool
    replaying recorded media does). Other frequencies are encoded live as usual.
    """

    def __init__(self, frequency: float, level: float = 0.3, *, phase: float = 0.0, preencode: bool = False) -> None:
        if not 0.0 < frequency < AUDIO_SAMPLE_RATE / 2:
            raise ValueError(f"frequency must be in (0, {AUDIO_SAMPLE_RATE // 2}) Hz")
        self.frequency = frequency
        self.level = level
        self._grid_init(BLOCK_MS / 1000, phase)
        self._cycles_per_block = frequency * BLOCK_MS / 1000
        self._fixed = abs(self._cycles_per_block - round(self._cycles_per_block)) < 1e-9
        self._tone = self._synth(0)
        self._silence = np.zeros((BLOCK, 1), np.int16)
        self._silence.flags.writeable = False
        self.preencode = preencode and self._fixed
        self._cycle: list[bytes] = []
        """Opus packet of each block of the mark cycle (index: grid slot mod ``CYCLE_BLOCKS``)."""
        self._levels = (audio_level_dbov(self._tone), audio_level_dbov(self._silence))

    def _synth(self, n: int) -> np.ndarray:
        t = np.arange(BLOCK, dtype=np.float64) + n * BLOCK
        wave = np.sin(2 * np.pi * self.frequency * t / AUDIO_SAMPLE_RATE) * (self.level * 32767.0)
        block = np.round(wave).astype(np.int16).reshape(BLOCK, 1)
        block.flags.writeable = False
        return block

    @property
    def name(self) -> str:
        return f"marked tone {self.frequency:g} Hz"

    @property
    def offset_s(self) -> float:
        """Where in each second (of the wall clock) this source's marks start."""
        return mark_offset(self.clock.phase)

    def is_silent(self, n: int) -> bool:
        """Whether block ``n`` (scheduled at ``clock.wall_time(n)``) is part of a mark."""
        return slot_is_silent(self.grid_slot(n))

    def _encode_cycle(self) -> list[bytes]:
        """The Opus packet per position (~850 encodes: 70-120 ms on the 2-core VM)."""
        encoder = AudioEncoder(AudioEncoderSettings(channels=1))
        packets: list[bytes] = []
        per_second = 1000 // BLOCK_MS
        for slot in range(-per_second, CYCLE_BLOCKS):  # the cycle's last second first: a seamless loop
            block = self._silence if slot_is_silent(slot % CYCLE_BLOCKS) else self._tone
            out = encoder.encode_block(block, (slot + per_second) * BLOCK)
            if slot >= 0:
                if len(out) != 1:
                    raise EncodeError(f"opus gave {len(out)} packets for one 20 ms block")
                packets.append(bytes(out[0]))
        return packets

    async def recv(self) -> AudioFrame:
        n = await self._slot()
        capture = self.clock.wall_time(n)
        slot = self.grid_slot(n)
        silent = slot_is_silent(slot)
        if silent:
            samples = self._silence
        else:
            samples = self._tone if self._fixed else self._synth(n)
        if self._cycle:
            return OpusAudioFrame(samples=samples, sample_rate=AUDIO_SAMPLE_RATE, pts=n * BLOCK,
                                  capture_time=capture, opus=self._cycle[slot % CYCLE_BLOCKS],
                                  level=self._levels[silent])
        return AudioFrame(samples=samples, sample_rate=AUDIO_SAMPLE_RATE, pts=n * BLOCK, capture_time=capture)


CYCLE_BLOCKS = MARK_MODULUS * 1000 // BLOCK_MS
"""Blocks in one cycle of the marks (16 s): a tone of a multiple of 50 Hz repeats after it."""


def slot_is_silent(slot: int) -> bool:
    """Whether the block in wall-clock grid slot ``slot`` (``MarkedTone.grid_slot``) is part of a mark."""
    per_second = 1000 // BLOCK_MS
    second, pos = divmod(slot, per_second)
    gap = MARK_GAP_BASE + second % MARK_MODULUS
    return pos < MARK_BLOCKS or gap <= pos < gap + MARK_BLOCKS


def mark_offset(phase: float) -> float:
    """Seconds after each whole second at which a ``MarkedTone`` started with ``phase`` puts its marks."""
    return (phase % 1.0) * BLOCK_MS / 1000


def expected_rms(level: float = 0.3) -> float:
    """RMS (int16 units) of a ``MarkedTone`` sine at ``level``."""
    return level * 32767.0 / math.sqrt(2.0)


class ToneMarks:
    """Finds a ``MarkedTone``'s marks in received 20 ms blocks and turns them into latencies.

    Feed every received block with ``push(ts, rms, arrival)`` (``ts``: RTP timestamp in samples,
    ``arrival``: wall clock). Returns a latency in milliseconds when a complete pair of marks was
    seen, else None. The decoder delays content by a few ms (Opus look-ahead), so the first fully
    silent received block is the sender's second silent block: capture = second + offset + 20 ms.
    """

    def __init__(self, offset_s: float, level: float = 0.3) -> None:
        self.offset_s = offset_s
        self.silent_below = 0.15 * expected_rms(level)
        self._prev_ts: int | None = None
        self._prev_silent = False
        self._run: tuple[int, float] | None = None
        """(ts, arrival) of the last silent run's first block, while no RTP gap followed."""

    def push(self, ts: int, rms: float, arrival: float) -> float | None:
        contiguous = self._prev_ts is not None and ts - self._prev_ts == BLOCK
        silent = rms < self.silent_below
        result = None
        if not contiguous:
            self._run = None
        if silent and contiguous and not self._prev_silent:  # a run starts after a loud block, never mid-run
            if self._run is not None:
                blocks = (ts - self._run[0]) // BLOCK
                if MARK_GAP_BASE <= blocks < MARK_GAP_BASE + MARK_MODULUS:
                    result = self._latency(blocks - MARK_GAP_BASE, self._run[1])
            self._run = (ts, arrival)
        self._prev_ts, self._prev_silent = ts, silent
        return result

    def _latency(self, second_mod: int, arrival: float) -> float | None:
        capture_offset = self.offset_s + BLOCK_MS / 1000
        # the latest second with that residue at most EARLY_S after the arrival: a mark that
        # reads a little early (the sender paced a hair ahead of the model's capture time; at ~1 ms
        # latency that shows) is a small negative latency, not one a whole 16 s cycle long
        base = math.floor(arrival - capture_offset + EARLY_S)
        second = base - ((base - second_mod) % MARK_MODULUS)
        return (arrival - (second + capture_offset)) * 1000.0
