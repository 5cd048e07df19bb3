"""Colour conversion and scaling between packed RGB-family / NV12 images and I420, via OpenCV.

Every function writes into a caller-supplied (or ``Converter``-owned) buffer, so the hot path
allocates nothing. OpenCV's SIMD kernels implement BT.601 limited range ("studio swing",
Y in 16..235, chroma 16..240), the matrix WebRTC stacks assume for I420:

    Y  =  16 + ( 65.481 R + 128.553 G +  24.966 B) / 255
    Cb = 128 + (-37.797 R -  74.203 G + 112.000 B) / 255
    Cr = 128 + (112.000 R -  93.786 G -  18.214 B) / 255

Chroma is sited on the top-left pixel of each 2x2 block (OpenCV samples, it does not average).
``tests/media/test_convert.py`` checks every conversion against a NumPy reference of exactly
this definition within 1 LSB (forward) and 2 LSB (inverse, integer rounding on both sides).

Odd widths or heights are cropped to the even size below (a view, no copy): I420 needs even
sizes.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from media._boundary import translate
from media.errors import ConversionError, UnsupportedFormat
from media.frames import PlanarVideoFrame, VideoFrame

PixelFormat = Literal["bgr24", "rgb24", "bgra", "rgba", "nv12"]
"""Packed formats the pipeline converts to and from I420 (names as in FFmpeg)."""

PIXEL_FORMATS: tuple[PixelFormat, ...] = ("bgr24", "rgb24", "bgra", "rgba", "nv12")

_TO_I420 = {
    "bgr24": (cv2.COLOR_BGR2YUV_I420, 3),
    "rgb24": (cv2.COLOR_RGB2YUV_I420, 3),
    "bgra": (cv2.COLOR_BGRA2YUV_I420, 4),
    "rgba": (cv2.COLOR_RGBA2YUV_I420, 4),
}
_FROM_I420 = {
    "bgr24": (cv2.COLOR_YUV2BGR_I420, 3),
    "rgb24": (cv2.COLOR_YUV2RGB_I420, 3),
    "bgra": (cv2.COLOR_YUV2BGRA_I420, 4),
    "rgba": (cv2.COLOR_YUV2RGBA_I420, 4),
}


def image_size(image: np.ndarray, fmt: PixelFormat) -> tuple[int, int]:
    """``(width, height)`` of a packed image in ``fmt`` (NV12 arrays are ``(h*3//2, w)``)."""
    if fmt == "nv12":
        _check(image.ndim == 2 and image.shape[0] % 3 == 0, f"nv12 wants (h*3//2, w) uint8, got {image.shape}")
        return int(image.shape[1]), int(image.shape[0] * 2 // 3)
    if fmt not in _TO_I420:
        raise UnsupportedFormat(f"pixel format {fmt!r} is not one of {PIXEL_FORMATS}")
    channels = _TO_I420[fmt][1]
    _check(
        image.ndim == 3 and image.shape[2] == channels,
        f"{fmt} wants (h, w, {channels}) uint8, got {image.shape}",
    )
    return int(image.shape[1]), int(image.shape[0])


def i420_shape(width: int, height: int) -> tuple[int, int]:
    """Shape of the I420 array for an even ``width`` x ``height``."""
    return height * 3 // 2, width


def to_i420(image: np.ndarray, fmt: PixelFormat = "bgr24", out: np.ndarray | None = None) -> np.ndarray:
    """Convert ``image`` to I420 into ``out`` (allocated when ``None``) and return ``out``."""
    _check(image.dtype == np.uint8, f"images must be uint8, got {image.dtype}")
    w, h = image_size(image, fmt)
    w, h = w & ~1, h & ~1
    _check(w > 0 and h > 0, "image too small for I420")
    if out is None:
        out = np.empty(i420_shape(w, h), dtype=np.uint8)
    _check_out(out, i420_shape(w, h))
    if fmt == "nv12":
        src = VideoFrame(out)  # views of the destination planes
        rows = image.shape[0] * 2 // 3
        np.copyto(src.y, image[:h, :w])
        uv = image[rows : rows + h // 2, :w].reshape(h // 2, w // 2, 2)
        np.copyto(src.u, uv[..., 0])
        np.copyto(src.v, uv[..., 1])
        return out
    if image.shape[0] != h or image.shape[1] != w:
        image = image[:h, :w]
    code = _TO_I420[fmt][0]
    with translate(ConversionError, f"{fmt} -> I420"):
        result = cv2.cvtColor(image, code, dst=out)
    _check_written(result, out)
    return out


def from_i420(frame: VideoFrame, fmt: PixelFormat = "bgr24", out: np.ndarray | None = None,
              *, scratch: np.ndarray | None = None) -> np.ndarray:
    """Convert an I420 frame to ``fmt`` into ``out`` (allocated when ``None``) and return ``out``.

    A ``PlanarVideoFrame`` whose planes are not one array is first packed into ``scratch``
    (an I420-shaped buffer the caller may reuse) because OpenCV takes I420 as one array.
    """
    w, h = frame.width, frame.height
    if fmt == "nv12":
        if out is None:
            out = np.empty(i420_shape(w, h), dtype=np.uint8)
        _check_out(out, i420_shape(w, h))
        np.copyto(out[:h], frame.y)
        uv = out[h:].reshape(h // 2, w // 2, 2)
        np.copyto(uv[..., 0], frame.u)
        np.copyto(uv[..., 1], frame.v)
        return out
    if fmt not in _FROM_I420:
        raise UnsupportedFormat(f"pixel format {fmt!r} is not one of {PIXEL_FORMATS}")
    code, channels = _FROM_I420[fmt]
    if out is None:
        out = np.empty((h, w, channels), dtype=np.uint8)
    _check_out(out, (h, w, channels))
    src = packed_i420(frame, scratch)
    with translate(ConversionError, f"I420 -> {fmt}"):
        result = cv2.cvtColor(src, code, dst=out)
    _check_written(result, out)
    return out


def packed_i420(frame: VideoFrame, scratch: np.ndarray | None = None) -> np.ndarray:
    """``frame`` as one I420 array: its own ``data`` when it has one, else packed into ``scratch``."""
    if not isinstance(frame, PlanarVideoFrame) or frame.is_packed:
        return frame.data
    shape = i420_shape(frame.width, frame.height)
    if scratch is None:
        scratch = np.empty(shape, dtype=np.uint8)
    _check_out(scratch, shape)
    dst = VideoFrame(scratch)
    np.copyto(dst.y, frame.y)
    np.copyto(dst.u, frame.u)
    np.copyto(dst.v, frame.v)
    return scratch


def resize_i420(frame: VideoFrame, width: int, height: int, out: np.ndarray | None = None,
                interpolation: int | None = None) -> np.ndarray:
    """Scale each plane of ``frame`` to ``width`` x ``height`` (even) into ``out``; return ``out``.

    ``interpolation`` defaults to ``INTER_AREA`` when shrinking and ``INTER_LINEAR`` otherwise.
    """
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise UnsupportedFormat(f"I420 needs positive even sizes; got {width}x{height}")
    if out is None:
        out = np.empty(i420_shape(width, height), dtype=np.uint8)
    _check_out(out, i420_shape(width, height))
    if interpolation is None:
        shrinking = width * height < frame.width * frame.height
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    dst = VideoFrame(out)
    with translate(ConversionError, "resize I420"):
        for s, d in zip(frame.planes, dst.planes, strict=True):
            result = cv2.resize(s, (d.shape[1], d.shape[0]), dst=d, interpolation=interpolation)
            _check_written(result, d)
    return out


class _Ring:
    """A few same-shaped buffers handed out in turn, so a returned frame stays valid for a while."""

    __slots__ = ("_buffers", "_next", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._buffers: dict[tuple[int, ...], list[np.ndarray]] = {}
        self._next: dict[tuple[int, ...], int] = {}

    def get(self, shape: tuple[int, ...]) -> np.ndarray:
        bufs = self._buffers.get(shape)
        if bufs is None:
            if len(self._buffers) >= 4:  # sizes changed: drop the old ones
                self._buffers.clear()
                self._next.clear()
            bufs = self._buffers[shape] = []
            self._next[shape] = 0
        i = self._next[shape]
        self._next[shape] = (i + 1) % self.size
        if i == len(bufs):
            bufs.append(np.empty(shape, dtype=np.uint8))
        return bufs[i]


class Converter:
    """Converts and scales frames into buffers it keeps and reuses.

    Each output comes from a ring of ``ring`` buffers per shape: a returned frame or image stays
    valid until ``ring`` more outputs of the same shape were produced. One ``Converter`` per
    stream (it is not thread-safe); pass ``ring=1`` when every output is consumed before the
    next call.
    """

    def __init__(self, ring: int = 4) -> None:
        if ring < 1:
            raise ValueError("ring must be >= 1")
        self._frames = _Ring(ring)
        self._images = _Ring(ring)
        self._scratch = _Ring(1)

    def to_frame(self, image: np.ndarray, fmt: PixelFormat = "bgr24", *, pts: int = 0,
                 capture_time: float | None = None) -> VideoFrame:
        """A ``VideoFrame`` holding ``image`` converted to I420 (in a reused buffer)."""
        w, h = image_size(image, fmt)
        out = self._frames.get(i420_shape(w & ~1, h & ~1))
        to_i420(image, fmt, out)
        if capture_time is None:
            return VideoFrame(out, pts=pts)
        return VideoFrame(out, pts=pts, capture_time=capture_time)

    def to_image(self, frame: VideoFrame, fmt: PixelFormat = "bgr24") -> np.ndarray:
        """``frame`` converted to ``fmt`` (in a reused buffer)."""
        w, h = frame.width, frame.height
        if fmt == "nv12":
            shape: tuple[int, ...] = i420_shape(w, h)
        elif fmt in _FROM_I420:
            shape = (h, w, _FROM_I420[fmt][1])
        else:
            raise UnsupportedFormat(f"pixel format {fmt!r} is not one of {PIXEL_FORMATS}")
        scratch = None
        if isinstance(frame, PlanarVideoFrame) and not frame.is_packed:
            scratch = self._scratch.get(i420_shape(w, h))
        return from_i420(frame, fmt, self._images.get(shape), scratch=scratch)

    def resize(self, frame: VideoFrame, width: int, height: int) -> VideoFrame:
        """``frame`` scaled to ``width`` x ``height`` (in a reused buffer); pts and capture time kept."""
        out = self._frames.get(i420_shape(width, height))
        resize_i420(frame, width, height, out)
        return VideoFrame(out, pts=frame.pts, time_base=frame.time_base, capture_time=frame.capture_time)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise UnsupportedFormat(message)


def _check_out(out: np.ndarray, shape: tuple[int, ...]) -> None:
    if out.dtype != np.uint8 or out.shape != shape or not out.flags.c_contiguous:
        raise UnsupportedFormat(f"output buffer must be C-contiguous uint8 {shape}, got {out.dtype} {out.shape}")


def _check_written(result: np.ndarray, out: np.ndarray) -> None:
    # OpenCV silently allocates a new array when dst does not fit; that would lose the output.
    if result is not out and not np.shares_memory(result, out):
        raise ConversionError("OpenCV did not write into the supplied buffer")
