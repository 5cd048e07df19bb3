"""Zero-copy interop with PyAV, including padded rows, odd sizes and widths that are not multiples of 32."""

from __future__ import annotations

import gc
import weakref

import av
import numpy as np
import pytest

from media.avframes import AvFrameCache, audio_from_av, audio_to_av, from_av, to_av
from media.codecs import VideoDecoder, VideoEncoder
from media.frames import AudioFrame, PlanarVideoFrame, VideoFrame


def _pattern(w: int, h: int) -> VideoFrame:
    f = VideoFrame.allocate(w, h)
    f.y[:] = (np.arange(w)[None, :] + np.arange(h)[:, None]) % 200 + 16
    f.u[:] = 90
    f.v[:] = 170
    return f


def _plane(plane: av.video.plane.VideoPlane) -> np.ndarray:
    return np.frombuffer(plane, np.uint8)


def test_to_av_shares_memory() -> None:
    f = _pattern(640, 480)
    f.pts = 1234
    out = to_av(f)
    assert out.format.name == "yuv420p" and (out.width, out.height) == (640, 480)
    assert out.pts == 1234 and out.time_base == f.time_base
    assert np.shares_memory(_plane(out.planes[0]), f.data)
    f.y[0, 0] = 3  # writes through
    assert _plane(out.planes[0])[0] == 3


def test_to_av_height_2_mod_4_copies_correctly() -> None:
    f = _pattern(480, 270)
    out = to_av(f)
    assert (out.width, out.height) == (480, 270)
    back = from_av(out)
    for a, b in zip(back.planes, f.planes, strict=True):
        np.testing.assert_array_equal(a, b)


def test_frame_cache_reuses_the_wrapper_of_a_returning_array() -> None:
    cache = AvFrameCache(size=2)
    a, b, c = (_pattern(320, 240).data for _ in range(3))
    cache.get(VideoFrame(a, pts=1))  # first sighting: remembered, not kept
    first = cache.get(VideoFrame(a, pts=2))  # back again: cached
    assert cache.get(VideoFrame(a, pts=3)) is first  # a new frame over the same array: same wrapper
    assert np.shares_memory(_plane(first.planes[0]), a)
    a[0, 0] = 5  # the wrapper shows what the array holds now
    assert _plane(first.planes[0])[0] == 5
    for arr in (b, b, c, c):  # two more returning arrays evict the oldest (size=2)
        cache.get(VideoFrame(arr))
    other = cache.get(VideoFrame(b))
    assert other is cache.get(VideoFrame(b)) and np.shares_memory(_plane(other.planes[0]), b)
    assert cache.get(VideoFrame(a)) is not first


def test_frame_cache_keeps_nothing_of_a_new_array_per_frame() -> None:
    """A source that allocates every frame: each gets a plain wrapper and none is held alive."""
    cache = AvFrameCache()
    refs = []
    for _ in range(20):
        data = _pattern(320, 240).data
        refs.append(weakref.ref(data))
        out = cache.get(VideoFrame(data))
        assert np.shares_memory(_plane(out.planes[0]), data)
        del data, out
    gc.collect()
    assert all(r() is None for r in refs)


def test_frame_cache_passes_copies_and_decoded_frames_through() -> None:
    cache = AvFrameCache()
    odd = _pattern(480, 270)  # height 2 (mod 4): PyAV needs a copy, which must not be reused
    first = cache.get(odd)
    assert cache.get(odd) is not first
    odd.y[0, 0] = 7
    assert _plane(cache.get(odd).planes[0])[0] == 7
    src = to_av(_pattern(320, 240))
    decoded = from_av(src)
    assert cache.get(decoded) is src  # planes that PyAV owns: its own frame, as to_av does


@pytest.mark.parametrize(("w", "h"), [(650, 482), (641, 481), (100, 60), (1000, 562)])
def test_from_av_views_skip_line_padding(w: int, h: int) -> None:
    src = av.VideoFrame(w, h, "yuv420p")
    assert src.planes[0].line_size != w or w % 32 == 0
    for i, plane in enumerate(src.planes):
        rows = _plane(plane)[: plane.line_size * plane.height].reshape(plane.height, plane.line_size)
        rows[:] = (np.arange(plane.line_size)[None, :] + 7 * i) % 256
    f = from_av(src)
    assert isinstance(f, PlanarVideoFrame) and not f.is_packed
    assert (f.width, f.height) == (w & ~1, h & ~1)  # odd sizes cropped to even
    for i, (view, plane) in enumerate(zip(f.planes, src.planes, strict=True)):
        assert np.shares_memory(view, _plane(plane))
        expected = (np.arange(view.shape[1]) + 7 * i) % 256
        np.testing.assert_array_equal(view, np.broadcast_to(expected, view.shape))


@pytest.mark.parametrize(("w", "h"), [(650, 482), (642, 360), (98, 66)])
def test_decoded_non32_widths_round_trip(w: int, h: int) -> None:
    """A real decoder pads rows; the views must still line up with the picture."""
    enc, dec = VideoEncoder(codec="vp8", bitrate=2_000_000, max_bitrate=2_000_000), VideoDecoder("vp8")
    frame = _pattern(w, h)
    decoded = [d for p in enc.encode(frame, keyframe=True) for d in dec.decode(p)]
    assert len(decoded) == 1
    out = decoded[0]
    assert (out.width, out.height) == (w, h)
    assert out.y.strides[0] >= w  # padded rows honoured
    assert np.abs(out.y.astype(int) - frame.y).mean() < 4
    assert np.abs(out.u.astype(int) - 90).max() <= 3 and np.abs(out.v.astype(int) - 170).max() <= 3
    # Back to PyAV without a copy: the decoder's own frame.
    assert to_av(out) is out.owner


def test_audio_from_av_is_a_view_and_to_av_copies() -> None:
    samples = (np.arange(960 * 2, dtype=np.int16).reshape(960, 2) - 500).astype(np.int16)
    af = audio_to_av(AudioFrame(samples, 48_000, pts=480))
    assert af.format.name == "s16" and af.layout.name == "stereo" and af.samples == 960 and af.pts == 480
    back = audio_from_av(af)
    assert np.shares_memory(back.samples, _plane(af.planes[0]))
    np.testing.assert_array_equal(back.samples, samples)
    assert back.sample_rate == 48_000 and back.pts == 480


def test_audio_from_av_converts_planar_float() -> None:
    data = np.stack([np.full(480, 0.5, np.float32), np.full(480, -0.25, np.float32)])
    af = av.AudioFrame.from_ndarray(data, format="fltp", layout="stereo")
    af.sample_rate = 48_000
    out = audio_from_av(af)
    assert out.samples.shape == (480, 2)
    assert abs(int(out.samples[0, 0]) - 16384) <= 1 and abs(int(out.samples[0, 1]) + 8192) <= 1
