"""``TestPattern``: a synthetic camera whose frames carry their index, and its decoder.

Layout (all proportional to the frame size, so it survives scaling):

* the top eighth of the frame is a band of 2 rows x 16 cells, each black or white:
  two sync cells (white, black), the frame index in 24 bits (MSB first), then a 6-bit
  check value derived from the index. Cells are 40x30 px at 640x480: large flat blocks
  that VP8/H.264 keep at ordinary bitrates. ``read_frame_index`` samples the middle of
  each cell, so blur and ringing at the edges do not matter;
* below it, colour bars scrolling sideways, a bouncing dark square and the index as text:
  moving content, so encoders do real work and a frozen stream is visible.

Frames are written directly in I420 (no colour conversion per frame).
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from devices._threads import sleep_unless
from devices._video import check_size, to_pts
from media._opencv import cv2
from media.frames import VideoFrame
from media.source import SourceEnded, VideoSource

logger = logging.getLogger("devices")

_COLS, _ROWS = 16, 2
_INDEX_BITS, _CHECK_BITS = 24, 6
INDEX_MODULUS = 1 << _INDEX_BITS
"""Indices wrap at 2**24 (155 hours at 30 fps)."""
_BLACK, _WHITE = 16, 235
_BARS_BGR = [(235, 235, 235), (16, 235, 235), (235, 235, 16), (16, 235, 16),
             (235, 16, 235), (16, 16, 235), (235, 16, 16), (16, 16, 16)]  # fmt: skip


def _check(index: int) -> int:
    return ((index * 0x9E3779B1) & 0xFFFFFFFF) >> (32 - _CHECK_BITS)


def _bits(index: int) -> list[int]:
    index %= INDEX_MODULUS
    bits = [1, 0]
    bits += [(index >> i) & 1 for i in range(_INDEX_BITS - 1, -1, -1)]
    bits += [(_check(index) >> i) & 1 for i in range(_CHECK_BITS - 1, -1, -1)]
    return bits


def _band_height(height: int) -> int:
    return max(2 * _ROWS, height // 8 // 2 * 2)


def _cells(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of each cell, row-major."""
    band = _band_height(height)
    out = []
    for k in range(_ROWS * _COLS):
        r, c = divmod(k, _COLS)
        out.append((r * band // _ROWS, (r + 1) * band // _ROWS, c * width // _COLS, (c + 1) * width // _COLS))
    return out


def read_frame_index(frame: VideoFrame) -> int | None:
    """The index ``TestPattern`` drew into ``frame``, or ``None`` if the frame carries none.

    Works after scaling and lossy compression; ``None`` (not a wrong number) when the
    sync cells or the check value do not match.
    """
    y = frame.y
    bits = []
    for y0, y1, x0, x1 in _cells(frame.width, frame.height):
        dy, dx = (y1 - y0) // 4, (x1 - x0) // 4
        cell = y[y0 + dy : y1 - dy, x0 + dx : x1 - dx]
        if cell.size == 0:
            return None
        bits.append(1 if float(cell.mean()) > 125.0 else 0)
    if bits[0] != 1 or bits[1] != 0:
        return None
    index = 0
    for b in bits[2 : 2 + _INDEX_BITS]:
        index = (index << 1) | b
    check = 0
    for b in bits[2 + _INDEX_BITS :]:
        check = (check << 1) | b
    return index if check == _check(index) else None


class TestPattern(VideoSource):
    """Moving synthetic frames with their index encoded in the pixels, paced at ``fps``."""

    __test__ = False  # not a pytest test class

    def __init__(self, width: int = 640, height: int = 480, fps: float = 30.0, *, speed: int = 4) -> None:
        check_size(width, height, fps)
        if height < 16 or width < _COLS * 2:
            raise ValueError(f"TestPattern needs at least {_COLS * 2}x16, got {width}x{height}")
        self.width, self.height, self.fps = width, height, fps
        self.speed = speed // 2 * 2
        """Pixels the bars scroll per frame (even, for chroma alignment)."""
        self._index = 0
        self._t0: float | None = None
        self._running = False
        self._stopped = asyncio.Event()
        self._band = _band_height(height)
        self._cells = _cells(width, height)
        bars = np.zeros((2, 2 * width, 3), np.uint8)
        for i in range(2 * width):
            bars[:, i] = _BARS_BGR[(i * len(_BARS_BGR) // width) % len(_BARS_BGR)]
        yuv = cv2.cvtColor(bars, cv2.COLOR_BGR2YUV_I420)  # (3, 2w): Y rows 0-1, then U, V packed
        self._bar_y = yuv[0].copy()
        self._bar_u = yuv[2, :width].copy()
        self._bar_v = yuv[2, width:].copy()

    @property
    def name(self) -> str:
        return f"test pattern {self.width}x{self.height}@{self.fps:g}"

    @property
    def running(self) -> bool:
        return self._running

    @property
    def frame_index(self) -> int:
        """Index of the next frame ``recv()`` returns."""
        return self._index

    async def start(self) -> None:
        """Start from frame 0."""
        self._index, self._t0, self._running = 0, None, True
        self._stopped = asyncio.Event()

    async def stop(self) -> None:
        self._running = False
        self._stopped.set()

    def render(self, index: int) -> np.ndarray:
        """The I420 array of frame ``index`` (shape ``(h*3//2, w)``)."""
        w, h, band = self.width, self.height, self._band
        frame = VideoFrame(np.empty((h * 3 // 2, w), np.uint8))
        y, u, v = frame.y, frame.u, frame.v
        off = (index * self.speed) % w
        y[band:] = self._bar_y[off : off + w]
        u[band // 2 :] = self._bar_u[off // 2 : off // 2 + w // 2]
        v[band // 2 :] = self._bar_v[off // 2 : off // 2 + w // 2]
        u[: band // 2] = 128
        v[: band // 2] = 128
        for (y0, y1, x0, x1), bit in zip(self._cells, _bits(index), strict=True):
            y[y0:y1, x0:x1] = _WHITE if bit else _BLACK
        # a dark square bouncing around below the band
        side = max(2, (h - band) // 4 // 2 * 2)
        span_x, span_y = max(1, w - side), max(1, h - band - side)
        px, py = (index * 6) % (2 * span_x), (index * 4) % (2 * span_y)
        bx = (px if px < span_x else 2 * span_x - px) // 2 * 2
        by = band + (py if py < span_y else 2 * span_y - py) // 2 * 2
        y[by : by + side, bx : bx + side] = 40
        u[by // 2 : (by + side) // 2, bx // 2 : (bx + side) // 2] = 160
        v[by // 2 : (by + side) // 2, bx // 2 : (bx + side) // 2] = 110
        scale = max(0.4, h / 480)
        org = (max(2, w // 40), band + int(36 * scale))
        cv2.putText(y, f"#{index}", org, cv2.FONT_HERSHEY_SIMPLEX, scale, 16, max(1, int(6 * scale)), cv2.LINE_8)
        cv2.putText(y, f"#{index}", org, cv2.FONT_HERSHEY_SIMPLEX, scale, 235, max(1, int(2 * scale)), cv2.LINE_8)
        return frame.data

    async def recv(self) -> VideoFrame:
        """The next frame, due at ``start + index / fps`` (re-anchored if the consumer lags > 1 s)."""
        if not self._running:
            raise SourceEnded(f"{self.name} is not running")
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        due = self._t0 + self._index / self.fps
        if due > now:
            if await sleep_unless(self._stopped, due - now):
                raise SourceEnded(f"{self.name} stopped")
        elif now - due > 1.0:
            logger.debug("%s: consumer lags %.1f s; re-anchoring", self.name, now - due)
            self._t0 = now - self._index / self.fps
        index = self._index
        self._index += 1
        return VideoFrame(data=self.render(index), pts=to_pts(index / self.fps), capture_time=time.time())
