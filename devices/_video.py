"""Shared pieces of the video sources: target size, conversion to I420, pacing, fps limiting.

Everything here runs in a reader thread.
"""

from __future__ import annotations

import threading
import time

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from media._opencv import cv2
from media.avframes import SWS_THREADS
from media.frames import VIDEO_TIME_BASE

_BGR_FORMATS = {"bgr0": 4, "bgra": 4, "bgr24": 3}
_VIDEO_CLOCK = VIDEO_TIME_BASE.denominator


def even(n: float) -> int:
    """Round down to an even number >= 2 (I420 needs even sizes)."""
    return max(2, int(n) // 2 * 2)


def target_size(src_w: int, src_h: int, width: int | None, height: int | None) -> tuple[int, int]:
    """The output size: the requested one, the other side by aspect ratio, or the source's (even)."""
    if width and height:
        return even(width), even(height)
    if width:
        return even(width), even(round(src_h * width / src_w))
    if height:
        return even(round(src_w * height / src_h)), even(height)
    return even(src_w), even(src_h)


def check_size(width: int | None, height: int | None, fps: float | None) -> None:
    """Validate the target parameters a video source was given."""
    for label, v in (("width", width), ("height", height)):
        if v is not None and (v < 2 or v % 2):
            raise ValueError(f"{label} must be an even number >= 2, got {v}")
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")


def to_pts(seconds: float) -> int:
    """Seconds to the 1/90000 video clock."""
    return round(seconds * _VIDEO_CLOCK)


class I420Converter:
    """Scale (when needed) and convert BGR/BGRA images or PyAV frames into fresh I420 arrays.

    Each call returns a new ``(h*3//2, w)`` array (frames are handed to other tasks, so the
    output cannot be reused); the resize intermediate is preallocated and reused, and so is the
    libswscale scaler for PyAV frames (``SWS_THREADS``). One converter per source thread.
    """

    def __init__(self, width: int | None = None, height: int | None = None) -> None:
        self._req = (width, height)
        self.size: tuple[int, int] | None = None
        """Output ``(width, height)``, fixed by the first frame."""
        self._scaled: np.ndarray | None = None
        self._reformatter = VideoReformatter()

    def _size_for(self, w: int, h: int) -> tuple[int, int]:
        if self.size is None:
            self.size = target_size(w, h, *self._req)
        return self.size

    def from_bgr(self, img: np.ndarray) -> np.ndarray:
        """BGR (h, w, 3) or BGRA/BGR0 (h, w, 4) to I420, scaled to the target size."""
        h, w = img.shape[:2]
        tw, th = self._size_for(w, h)
        if (w, h) != (tw, th):
            if self._scaled is None or self._scaled.shape != (th, tw, img.shape[2]):
                self._scaled = np.empty((th, tw, img.shape[2]), np.uint8)
            interp = cv2.INTER_AREA if tw < w else cv2.INTER_LINEAR
            cv2.resize(img, (tw, th), dst=self._scaled, interpolation=interp)
            img = self._scaled
        out = np.empty((th * 3 // 2, tw), np.uint8)
        cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420 if img.shape[2] == 3 else cv2.COLOR_BGRA2YUV_I420, dst=out)
        return out

    def from_av(self, frame: av.VideoFrame) -> np.ndarray:
        """A decoded PyAV frame to I420 (OpenCV for BGR formats, libswscale for the rest)."""
        fmt = frame.format.name
        w, h = frame.width, frame.height
        tw, th = self._size_for(w, h)
        channels = _BGR_FORMATS.get(fmt)
        if channels is not None:
            plane = frame.planes[0]
            rows = np.frombuffer(plane, np.uint8).reshape(h, plane.line_size)  # type: ignore[call-overload]
            return self.from_bgr(rows[:, : w * channels].reshape(h, w, channels))
        if fmt != "yuv420p" or (w, h) != (tw, th):
            frame = self._reformatter.reformat(frame, width=tw, height=th, format="yuv420p", threads=SWS_THREADS)
        return np.ascontiguousarray(frame.to_ndarray())


class Pacer:
    """Sleeps until each media timestamp's wall-clock due time; wakes early when stopped.

    A source that falls more than ``max_lag`` behind, or whose timestamps jump ahead by
    more than ``max_ahead``, is re-anchored instead of bursting or stalling.
    """

    def __init__(self, stop: threading.Event, max_lag: float = 1.0, max_ahead: float = 1.0) -> None:
        self._stop = stop
        self._base: float | None = None
        self.max_lag = max_lag
        self.max_ahead = max_ahead

    def wait(self, t: float) -> bool:
        """Wait until media time ``t`` (seconds) is due. False when stopped meanwhile."""
        now = time.monotonic()
        if self._base is None:
            self._base = now - t
        delay = self._base + t - now
        if delay > self.max_ahead or delay < -self.max_lag:
            self._base = now - t
            delay = 0.0
        if delay > 0:
            return not self._stop.wait(delay)
        return not self._stop.is_set()


class FrameRateGate:
    """Lets through at most ``fps`` frames per second of media time (drops the excess evenly)."""

    def __init__(self, fps: float | None) -> None:
        self.interval = 1.0 / fps if fps else 0.0
        self._next: float | None = None

    def accept(self, t: float) -> bool:
        """True when the frame at media time ``t`` (seconds) should be delivered."""
        if not self.interval:
            return True
        if self._next is not None and t < self._next - 0.25 * self.interval:
            return False
        if self._next is None or t - self._next > self.interval:
            self._next = t
        self._next += self.interval
        return True
