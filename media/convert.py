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

import numpy as np

from media._boundary import translate
from media._opencv import cv2
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

_FROM_NV12 = {
    "bgr24": cv2.COLOR_YUV2BGR_NV12,
    "rgb24": cv2.COLOR_YUV2RGB_NV12,
    "bgra": cv2.COLOR_YUV2BGRA_NV12,
    "rgba": cv2.COLOR_YUV2RGBA_NV12,
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

    A ``PlanarVideoFrame`` whose planes are not one array (a decoded frame) goes through
    ``scratch``, a buffer the caller may reuse (shape from ``planar_scratch_shape``). With
    unpadded chroma rows only the chroma is interleaved into it and the frame is converted as NV12
    straight from its Y plane (a third of the copying; the same pixels: OpenCV's NV12 and I420
    kernels share the math); with padded rows OpenCV's interleave is slow, so the frame is packed
    into one I420 array instead (the faster of the two there, measured at 642x362 and 960x540).
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
    if isinstance(frame, PlanarVideoFrame) and not frame.is_packed:
        shape = planar_scratch_shape(frame)
        if scratch is None:
            scratch = np.empty(shape, dtype=np.uint8)
        _check_out(scratch, shape)
        with translate(ConversionError, f"I420 -> {fmt}"):
            if len(shape) == 3:
                cv2.merge([frame.u, frame.v], dst=scratch)
                result = cv2.cvtColorTwoPlane(frame.y, scratch, _FROM_NV12[fmt], dst=out)
            else:
                packed = VideoFrame(scratch)
                np.copyto(packed.y, frame.y)
                np.copyto(packed.u, frame.u)
                np.copyto(packed.v, frame.v)
                result = cv2.cvtColor(scratch, code, dst=out)
    else:
        with translate(ConversionError, f"I420 -> {fmt}"):
            result = cv2.cvtColor(frame.data, code, dst=out)
    _check_written(result, out)
    return out


def planar_scratch_shape(frame: VideoFrame) -> tuple[int, ...]:
    """Shape of the scratch buffer ``from_i420`` uses for ``frame`` (see there why two kinds)."""
    w, h = frame.width, frame.height
    if frame.u.flags.c_contiguous and frame.v.flags.c_contiguous:
        return (h // 2, w // 2, 2)
    return i420_shape(w, h)


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
        self._validated: dict[tuple[object, ...], tuple[int, tuple[int, int]]] = {}

    def to_frame(self, image: np.ndarray, fmt: PixelFormat = "bgr24", *, pts: int = 0,
                 capture_time: float | None = None) -> VideoFrame:
        """A ``VideoFrame`` holding ``image`` converted to I420 (in a reused buffer)."""
        key = (fmt, image.shape, image.strides, image.dtype)
        fast = self._validated.get(key)
        if fast is not None:
            # Same layout as an image already checked: go straight to the kernel (the checks in
            # ``to_i420`` cost ~10 us per 720p frame, 4 % of the conversion itself).
            code, shape = fast
            out = self._frames.get(shape)
            try:
                result = cv2.cvtColor(image, code, dst=out)
            except cv2.error as exc:
                raise ConversionError(f"{fmt} -> I420: {exc}") from exc
            if result is not out:
                _check_written(result, out)
        else:
            w, h = image_size(image, fmt)
            shape = i420_shape(w & ~1, h & ~1)
            out = self._frames.get(shape)
            to_i420(image, fmt, out)
            if fmt != "nv12" and (w, h) == (w & ~1, h & ~1) and image.dtype == np.uint8:
                if len(self._validated) >= 8:
                    self._validated.clear()
                self._validated[key] = (_TO_I420[fmt][0], shape)
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
            scratch = self._scratch.get(planar_scratch_shape(frame))
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
