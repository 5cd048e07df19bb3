"""NumPy frame types that every callrt stage passes around.

``VideoFrame``: I420 in one contiguous ``uint8`` array of shape ``(h*3//2, w)``; the Y, U
and V planes are zero-copy views into it. ``AudioFrame``: interleaved ``int16`` samples
of shape ``(samples, channels)``. Both carry a pts, a time base and the wall-clock
capture time, so receivers can measure capture-to-receipt latency.
"""

from __future__ import annotations

import time
from collections.abc import Callable
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
        # Through the flat view: when h % 4 == 2 the chroma planes do not start on a row boundary.
        return self.data.reshape(-1)[h * w : h * w + h * w // 4].reshape(h // 2, w // 2)

    @property
    def v(self) -> np.ndarray:
        """Cr plane view, shape ``(h/2, w/2)``."""
        h, w = self.height, self.width
        return self.data.reshape(-1)[h * w + h * w // 4 :].reshape(h // 2, w // 2)

    @property
    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(y, u, v)`` views."""
        return self.y, self.u, self.v

    @property
    def is_packed(self) -> bool:
        """True when ``data`` exists without a copy (always, for a plain ``VideoFrame``)."""
        return True

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


@dataclass(slots=True)
class OpusAudioFrame(AudioFrame):
    """An ``AudioFrame`` that also carries its Opus packet, encoded ahead of time.

    A source that replays audio it (or someone) encoded before (synthetic bot media, a recording)
    hands these out: ``media.fanout.EncodedAudioFanout`` sends ``opus`` as it is, without encoding
    the samples again, when the frame is exactly one packet long at 48 kHz. The samples stay the
    truth for everything else: peers that negotiated another codec, playout, levels.
    """

    opus: bytes = b""
    """One Opus packet holding exactly these samples (empty: encode the samples as usual)."""
    level: int | None = None
    """Audio level in -dBov (0 loudest, -127 silence) for the RFC 6464 extension; None: computed."""


_DATA_SLOT = VideoFrame.__dict__["data"]  # the dataclass slot under PlanarVideoFrame's lazy property


def _check_planes(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    h, w = y.shape if y.ndim == 2 else (-1, -1)
    if w <= 0 or h <= 0 or w % 2 or h % 2:
        raise ValueError(f"I420 needs positive even width and height; got Y plane shape {y.shape}")
    half = (h // 2, w // 2)
    if u.shape != half or v.shape != half:
        raise ValueError(f"chroma planes must be {half}, got {u.shape} and {v.shape}")
    if not (y.dtype == u.dtype == v.dtype == np.uint8) or (y.strides[1], u.strides[1], v.strides[1]) != (1, 1, 1):
        raise ValueError("planes must be uint8 with contiguous rows")


class PlanarVideoFrame(VideoFrame):
    """A ``VideoFrame`` whose Y/U/V planes are separate (possibly row-padded) views.

    Decoders hand out planes in separate buffers whose rows are padded to ``line_size``; this
    type exposes them as zero-copy views instead of packing them. ``data`` (the contiguous
    ``(h*3//2, w)`` array of the base type) is packed on first access: a copy, made only when
    someone asks for it. ``owner`` keeps the object that owns the memory (an ``av.VideoFrame``)
    alive and lets ``media.avframes.to_av`` hand it back without a copy.
    """

    __slots__ = ("_h", "_make", "_owner", "_u", "_v", "_w", "_y")
    _make: Callable[[object, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] | None

    def __init__(
        self,
        y: np.ndarray,
        u: np.ndarray,
        v: np.ndarray,
        pts: int = 0,
        time_base: Fraction = VIDEO_TIME_BASE,
        capture_time: float | None = None,
        owner: object | None = None,
    ) -> None:
        _check_planes(y, u, v)
        _DATA_SLOT.__set__(self, None)
        self.pts = pts
        self.time_base = time_base
        self.capture_time = time.time() if capture_time is None else capture_time
        self._y, self._u, self._v, self._owner, self._make = y, u, v, owner, None
        self._h, self._w = y.shape

    @classmethod
    def lazy(
        cls,
        width: int,
        height: int,
        make_planes: Callable[[object, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]],
        owner: object,
        pts: int = 0,
        time_base: Fraction = VIDEO_TIME_BASE,
        capture_time: float | None = None,
    ) -> PlanarVideoFrame:
        """A frame whose plane views are made by ``make_planes(owner, width, height)`` on first use.

        Receivers that only count, forward or drop frames then never pay for the views.
        """
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"I420 needs positive even width and height; got {width}x{height}")
        self = cls.__new__(cls)
        _DATA_SLOT.__set__(self, None)
        self.pts = pts
        self.time_base = time_base
        self.capture_time = time.time() if capture_time is None else capture_time
        self._y = self._u = self._v = None  # type: ignore[assignment]
        self._owner, self._make, self._w, self._h = owner, make_planes, width, height
        return self

    def _views(self) -> None:
        if self._make is not None:
            y, u, v = self._make(self._owner, self._w, self._h)
            _check_planes(y, u, v)
            self._y, self._u, self._v, self._make = y, u, v, None

    @property
    def data(self) -> np.ndarray:
        """The packed I420 array; packed (copied) from the planes on first access."""
        d = _DATA_SLOT.__get__(self)
        if d is None:
            self._views()
            h, w = self._h, self._w
            d = np.empty((h * 3 // 2, w), dtype=np.uint8)
            flat = d.reshape(-1)
            flat[: h * w].reshape(h, w)[:] = self._y
            flat[h * w : h * w + h * w // 4].reshape(h // 2, w // 2)[:] = self._u
            flat[h * w + h * w // 4 :].reshape(h // 2, w // 2)[:] = self._v
            _DATA_SLOT.__set__(self, d)
        return d

    @data.setter
    def data(self, value: np.ndarray) -> None:
        frame = VideoFrame(value)  # validates
        _DATA_SLOT.__set__(self, value)
        self._y, self._u, self._v, self._owner, self._make = frame.y, frame.u, frame.v, None, None
        self._h, self._w = frame.height, frame.width

    @property
    def width(self) -> int:
        return self._w

    @property
    def height(self) -> int:
        return self._h

    @property
    def y(self) -> np.ndarray:
        self._views()
        return self._y

    @property
    def u(self) -> np.ndarray:
        self._views()
        return self._u

    @property
    def v(self) -> np.ndarray:
        self._views()
        return self._v

    @property
    def owner(self) -> object | None:
        """The object owning the plane memory (an ``av.VideoFrame`` for decoded frames), if any."""
        return self._owner

    @property
    def is_packed(self) -> bool:
        return _DATA_SLOT.__get__(self) is not None

    def __repr__(self) -> str:
        return f"PlanarVideoFrame({self.width}x{self.height}, pts={self.pts}, time_base={self.time_base})"


class EncodedVideoFrame(PlanarVideoFrame):
    """A video frame that also carries its encoded packet, made ahead of time.

    A source that replays video encoded before (synthetic bot media, a recording) hands these out:
    ``media.fanout.EncodedVideoFanout`` sends ``packet`` as it is, without encoding the pixels
    again, when ``codec`` is the fan-out's codec. The pixels are made by ``render()`` only when
    someone reads them (a peer that negotiated another codec, a local preview), so a replay
    holds packets, not decoded frames. Create one with ``EncodedVideoFrame.replay``.
    """

    __slots__ = ("codec", "keyframe", "packet")
    packet: bytes
    """One encoded frame (VP8 frame, or H.264 access unit in Annex B) holding exactly these pixels."""
    codec: str
    """``vp8`` or ``h264``."""
    keyframe: bool
    """Whether ``packet`` decodes on its own."""

    @classmethod
    def replay(cls, packet: bytes, codec: str, keyframe: bool, width: int, height: int,
               render: Callable[[], VideoFrame], pts: int = 0, time_base: Fraction = VIDEO_TIME_BASE,
               capture_time: float | None = None) -> EncodedVideoFrame:
        """A frame of ``width`` x ``height`` whose pixels ``render()`` makes on first use."""
        self = cls.lazy(width, height, _rendered_planes, render, pts=pts, time_base=time_base,
                        capture_time=capture_time)
        assert isinstance(self, EncodedVideoFrame)
        self.packet, self.codec, self.keyframe = packet, codec, keyframe
        return self

    def __repr__(self) -> str:
        kind = "key" if self.keyframe else "delta"
        return (f"EncodedVideoFrame({self.width}x{self.height} {self.codec} {kind} {len(self.packet)} B, "
                f"pts={self.pts})")


def _rendered_planes(render: object, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frame = render()  # type: ignore[operator]
    if frame.width != width or frame.height != height:
        raise ValueError(f"render() gave {frame.width}x{frame.height}, expected {width}x{height}")
    return frame.y, frame.u, frame.v


_SAMPLES_SLOT = AudioFrame.__dict__["samples"]


class LazyAudioFrame(AudioFrame):
    """An ``AudioFrame`` whose ``samples`` view is made from its owner (a decoded ``av.AudioFrame``) on first use.

    The receive path creates one per 20 ms packet; consumers that only count, forward or drop
    frames never pay for the NumPy view. Reading ``samples`` returns the same zero-copy view
    ``media.avframes.audio_from_av`` would.
    """

    __slots__ = ("_ch", "_make", "_n", "_owner")
    _make: Callable[[object, int, int], np.ndarray] | None

    def __init__(self, make_samples: Callable[[object, int, int], np.ndarray], owner: object, num_samples: int,
                 channels: int, sample_rate: int = AUDIO_SAMPLE_RATE, pts: int = 0,
                 capture_time: float | None = None) -> None:
        # one per received 20 ms packet, right after the decoder ran: as few steps as possible
        # (the samples slot stays unset until ``samples`` is read)
        self.sample_rate = sample_rate
        self.pts = pts
        self.capture_time = time.time() if capture_time is None else capture_time
        self._make = make_samples
        self._owner = owner
        self._n = num_samples
        self._ch = channels

    @property
    def samples(self) -> np.ndarray:
        make = self._make
        if make is not None:
            _SAMPLES_SLOT.__set__(self, make(self._owner, self._n, self._ch))
            self._make = None
        return _SAMPLES_SLOT.__get__(self)

    @samples.setter
    def samples(self, value: np.ndarray) -> None:
        AudioFrame(value)  # validates
        _SAMPLES_SLOT.__set__(self, value)
        self._make, self._n, self._ch = None, int(value.shape[0]), int(value.shape[1])

    @property
    def channels(self) -> int:
        return self._ch

    @property
    def num_samples(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"LazyAudioFrame({self._n}x{self._ch} @ {self.sample_rate} Hz, pts={self.pts})"
