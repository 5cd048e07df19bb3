"""NumPy frame types that every callrt stage passes around.

``VideoFrame``: I420 in one contiguous ``uint8`` array of shape ``(h*3//2, w)``; the Y, U
and V planes are zero-copy views into it. ``AudioFrame``: interleaved ``int16`` samples
of shape ``(samples, channels)``. Both carry a pts, a time base and the wall-clock
capture time, so receivers can measure capture-to-receipt latency.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

VIDEO_TIME_BASE = Fraction(1, 90_000)
"""RTP video clock: pts of video frames count 1/90000 s."""

AUDIO_SAMPLE_RATE = 48_000
"""The internal audio rate (Opus' native rate)."""


@dataclass(slots=True)
class VideoFrame:
    """One I420 video frame backed by a single contiguous ``uint8`` array."""

    data: np.ndarray
    """``uint8`` array of shape ``(height * 3 // 2, width)``: Y rows, then U, then V packed."""
    pts: int = 0
    """Presentation timestamp in ``time_base`` units."""
    time_base: Fraction = VIDEO_TIME_BASE
    """Unit of ``pts``."""
    capture_time: float = field(default_factory=time.time)
    """Wall-clock time (``time.time()``) at capture, for latency measurement."""

    def __post_init__(self) -> None:
        d = self.data
        if d.dtype != np.uint8 or d.ndim != 2 or not d.flags.c_contiguous:
            raise ValueError("VideoFrame.data must be a C-contiguous 2-D uint8 array")
        rows, width = d.shape
        if rows % 3 or width % 2 or (rows * 2 // 3) % 2:
            raise ValueError(f"I420 needs even width and height; got array shape {d.shape}")

    @classmethod
    def allocate(cls, width: int, height: int, pts: int = 0) -> VideoFrame:
        """A new video-range black frame (Y=16, U=V=128)."""
        if width % 2 or height % 2 or width <= 0 or height <= 0:
            raise ValueError(f"I420 needs positive even width and height; got {width}x{height}")
        data = np.empty((height * 3 // 2, width), dtype=np.uint8)
        data[:height] = 16
        data[height:] = 128
        return cls(data=data, pts=pts)

    @property
    def width(self) -> int:
        return int(self.data.shape[1])

    @property
    def height(self) -> int:
        return int(self.data.shape[0] * 2 // 3)

    @property
    def y(self) -> np.ndarray:
        """Luma plane view, shape ``(h, w)``."""
        return self.data[: self.height]

    @property
    def u(self) -> np.ndarray:
        """Cb plane view, shape ``(h/2, w/2)``."""
        h, w = self.height, self.width
        return self.data[h : h + h // 4].reshape(h // 2, w // 2)

    @property
    def v(self) -> np.ndarray:
        """Cr plane view, shape ``(h/2, w/2)``."""
        h, w = self.height, self.width
        return self.data[h + h // 4 :].reshape(h // 2, w // 2)

    @property
    def time(self) -> float:
        """pts in seconds."""
        return float(self.pts * self.time_base)


@dataclass(slots=True)
class AudioFrame:
    """A block of interleaved ``int16`` PCM samples."""

    samples: np.ndarray
    """``int16`` array of shape ``(n_samples, channels)``, C-contiguous (interleaved)."""
    sample_rate: int = AUDIO_SAMPLE_RATE
    """Samples per second per channel."""
    pts: int = 0
    """Timestamp of the first sample, in samples (time base ``1/sample_rate``)."""
    capture_time: float = field(default_factory=time.time)
    """Wall-clock time (``time.time()``) at capture, for latency measurement."""

    def __post_init__(self) -> None:
        s = self.samples
        if s.dtype != np.int16 or s.ndim != 2 or not s.flags.c_contiguous:
            raise ValueError("AudioFrame.samples must be a C-contiguous int16 array (samples, channels)")

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_samples / self.sample_rate

    @property
    def time_base(self) -> Fraction:
        return Fraction(1, self.sample_rate)
