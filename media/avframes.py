"""Zero-copy interop between callrt frames and PyAV frames.

Video, callrt → PyAV: ``av.VideoFrame.from_numpy_buffer`` over the I420 array; the PyAV
frame points into the NumPy memory (no copy) and keeps the array alive. Two cases copy,
both forced by PyAV: a height that is ``2 (mod 4)`` (PyAV derives the height from the array
shape and gets it wrong), and a ``PlanarVideoFrame`` whose planes are not one array and that
did not come from PyAV in the first place.

Video, PyAV → callrt: a ``PlanarVideoFrame`` whose planes are views of the PyAV planes,
honouring ``line_size`` padding (decoders pad rows to 32/64 bytes), so no copy. Odd widths or
heights are cropped to the even size below (I420 needs even sizes; the lost row/column is the
one the chroma subsampling cannot represent anyway). Formats other than yuv420p are converted
by libswscale (a copy, logged once per format).

Audio: PyAV → callrt is a view of the packed ``s16`` plane; callrt → PyAV copies the samples
once (PyAV has no numpy-buffer constructor for audio; 20 ms of stereo is 3.8 KB).
"""

from __future__ import annotations

import logging
import weakref
from fractions import Fraction
from typing import Any, cast

import av
import numpy as np
from numpy.lib.stride_tricks import as_strided

from media._boundary import translate
from media.errors import ConversionError, UnsupportedFormat
from media.frames import VIDEO_TIME_BASE, AudioFrame, PlanarVideoFrame, VideoFrame

logger = logging.getLogger(__name__)

_I420_FORMATS = frozenset({"yuv420p", "yuvj420p"})
SWS_THREADS = 1
"""libswscale threads for every ``reformat`` callrt makes (here and in ``devices``' FFmpeg
sources). PyAV 18 defaults to automatic (one per CPU), and ``frame.reformat()`` makes a new
scaler for every new frame, so each converted frame started and ended a thread pool: 0.66 ms of
CPU per 640x480 YUYV frame here against 0.17 ms with one scaler kept for the source on one
thread, and 6.6 against 3.3 ms per 1080p yuvj422p frame (``benchmarks/pipeline.py``, "FFmpeg
source frame"). Conversions run beside the codec threads, so CPU is what counts."""
_warned_formats: set[str] = set()


def to_av(frame: VideoFrame) -> av.VideoFrame:
    """An ``av.VideoFrame`` (yuv420p) sharing ``frame``'s memory; pts and time base carried over."""
    if isinstance(frame, PlanarVideoFrame) and not frame.is_packed:
        owner = frame.owner
        if isinstance(owner, av.VideoFrame) and owner.format.name in _I420_FORMATS and (
            owner.width == frame.width and owner.height == frame.height
        ):
            out = owner
        else:
            out = _copy_planes_to_av(frame)
    elif frame.height % 4:
        out = _copy_planes_to_av(frame)
    else:
        with translate(ConversionError, "wrap I420 array"):
            out = av.VideoFrame.from_numpy_buffer(frame.data, format="yuv420p")
    out.pts = frame.pts
    out.time_base = frame.time_base
    return out


class AvFrameCache:
    """Reuses the ``av.VideoFrame`` made for an I420 array when the same array comes back.

    Sources that fill a ring of buffers (``Converter``, capture rings, a looped clip) hand the
    same arrays over again and again; wrapping one costs ``from_numpy_buffer`` each time, which
    is 3 µs in a loop of its own but 50-70 µs next to a codec that has just evicted the caches.
    A hit costs one dict lookup. The wrapper points at the array's memory, so it shows whatever
    the array holds now.

    An array is cached the second time it is seen alive (remembered weakly the first time), so a
    source that makes a new array per frame gets a plain wrapper each time and nothing of it is
    kept; at most ``size`` returning arrays are held (each wrapper keeps its array alive).

    ``get`` leaves pts and time base to the caller. One cache per consumer; not thread-safe.
    """

    __slots__ = ("_seen", "_size", "_slots")

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._slots: dict[int, tuple[np.ndarray, tuple[int, ...], av.VideoFrame]] = {}
        self._seen: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()

    def get(self, frame: VideoFrame) -> av.VideoFrame:
        """The wrapper for ``frame`` (as ``to_av`` would make it, but its time fields unset)."""
        if type(frame) is not VideoFrame:  # decoded planes hand back their owner; subclasses as to_av
            return to_av(frame)
        data = frame.data
        key = id(data)
        hit = self._slots.get(key)
        if hit is not None and hit[0] is data and hit[1] == data.shape:
            return hit[2]
        out = to_av(frame)
        if self._seen.get(key) is not data:  # first sighting (or an earlier array's id, now free)
            if len(self._seen) >= 8 * self._size:
                self._seen.clear()
            self._seen[key] = data
        elif out.planes[0].buffer_ptr == data.ctypes.data:  # back again, and a view, not a copy
            slots = self._slots
            slots.pop(key, None)
            if len(slots) >= self._size:
                del slots[next(iter(slots))]
            slots[key] = (data, data.shape, out)
        return out

    def clear(self) -> None:
        self._slots.clear()
        self._seen.clear()


def _copy_planes_to_av(frame: VideoFrame) -> av.VideoFrame:
    out = av.VideoFrame(frame.width, frame.height, "yuv420p")
    for plane, src in zip(out.planes, frame.planes, strict=True):
        h, w = src.shape
        _plane_view(plane, w, h)[:] = src
    return out


def _plane_view(plane: av.video.plane.VideoPlane, width: int, height: int) -> np.ndarray:
    """A ``(height, width)`` uint8 view of one plane, skipping the ``line_size`` padding."""
    stride = plane.line_size
    if stride < width:
        raise UnsupportedFormat(f"plane line_size {stride} < width {width} (flipped frames are not supported)")
    flat = np.frombuffer(cast(Any, plane), dtype=np.uint8)
    if flat.size >= stride * height:  # the usual layout: whole padded rows
        return flat[: stride * height].reshape(height, stride)[:, :width]
    if flat.size < stride * (height - 1) + width:
        raise ConversionError(f"plane buffer of {flat.size} bytes is too small for {width}x{height}/{stride}")
    return as_strided(flat, shape=(height, width), strides=(stride, 1), writeable=flat.flags.writeable)


def from_av(frame: av.VideoFrame, *, capture_time: float | None = None) -> PlanarVideoFrame:
    """A ``PlanarVideoFrame`` viewing ``frame``'s planes (no copy for yuv420p input).

    The views are made on first access to ``y``/``u``/``v`` (a few microseconds, paid only by
    consumers that look at pixels). The returned frame keeps ``frame`` alive; its pts/time base
    are ``frame``'s (90 kHz when unset).
    """
    fmt = frame.format.name
    if fmt not in _I420_FORMATS:
        if fmt not in _warned_formats:
            _warned_formats.add(fmt)
            logger.info("converting %s frames to yuv420p (a copy per frame)", fmt)
        with translate(ConversionError, f"convert {fmt} to yuv420p"):
            frame = frame.reformat(format="yuv420p", threads=SWS_THREADS)
    w, h = frame.width & ~1, frame.height & ~1
    if w == 0 or h == 0:
        raise UnsupportedFormat(f"frame of {frame.width}x{frame.height} is too small for I420")
    pts = frame.pts
    time_base = frame.time_base
    return PlanarVideoFrame.lazy(w, h, _planes_of, frame, pts=0 if pts is None else pts,
                                 time_base=VIDEO_TIME_BASE if time_base is None else time_base,
                                 capture_time=capture_time)


def _planes_of(frame: Any, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y_plane, u_plane, v_plane = frame.planes
    return _plane_view(y_plane, w, h), _plane_view(u_plane, w // 2, h // 2), _plane_view(v_plane, w // 2, h // 2)


def audio_to_av(frame: AudioFrame) -> av.AudioFrame:
    """An ``av.AudioFrame`` (packed s16) holding a copy of ``frame``'s samples."""
    layout = _layout(frame.channels)
    with translate(ConversionError, "wrap audio samples"):
        out = av.AudioFrame.from_ndarray(frame.samples.reshape(1, -1), format="s16", layout=layout)
    out.sample_rate = frame.sample_rate
    out.pts = frame.pts
    out.time_base = Fraction(1, frame.sample_rate)
    return out


def audio_from_av(frame: av.AudioFrame, *, capture_time: float | None = None) -> AudioFrame:
    """An ``AudioFrame`` viewing a packed-s16 ``frame`` (no copy); other formats are converted."""
    channels = frame.layout.nb_channels
    n = frame.samples
    if frame.format.name == "s16":
        plane = cast(Any, frame.planes[0])
        samples = np.frombuffer(plane, dtype=np.int16, count=n * channels).reshape(n, channels)
    else:
        with translate(ConversionError, f"convert {frame.format.name} audio"):
            arr = frame.to_ndarray()
        if frame.format.is_planar:
            arr = arr.T
        arr = arr.reshape(n, channels)
        if arr.dtype.kind == "f":
            arr = np.clip(arr * 32768.0, -32768, 32767)
        samples = np.ascontiguousarray(arr.astype(np.int16, copy=False))
    pts = frame.pts if frame.pts is not None else 0
    kwargs = {} if capture_time is None else {"capture_time": capture_time}
    return AudioFrame(samples=samples, sample_rate=frame.sample_rate, pts=pts, **kwargs)


def _layout(channels: int) -> str:
    if channels == 1:
        return "mono"
    if channels == 2:
        return "stereo"
    raise UnsupportedFormat(f"{channels}-channel audio is not supported (mono or stereo)")
