"""Frame types: plane views, the h % 4 == 2 layout, PlanarVideoFrame, and the package's exports."""

from __future__ import annotations

import numpy as np
import pytest

import media
from media.frames import PlanarVideoFrame, VideoFrame


@pytest.mark.parametrize(("w", "h"), [(640, 480), (480, 270), (2, 2), (6, 10)])
def test_plane_views_are_views_with_the_right_layout(w: int, h: int) -> None:
    f = VideoFrame.allocate(w, h)
    flat = f.data.reshape(-1)
    flat[:] = np.arange(flat.size) % 251
    assert f.y.shape == (h, w) and f.u.shape == (h // 2, w // 2) and f.v.shape == (h // 2, w // 2)
    for plane in f.planes:
        assert np.shares_memory(plane, f.data)
    # I420: Y, then the whole U plane, then the whole V plane, back to back.
    np.testing.assert_array_equal(f.u.reshape(-1), flat[w * h : w * h + w * h // 4])
    np.testing.assert_array_equal(f.v.reshape(-1), flat[w * h + w * h // 4 :])


def test_planar_frame_packs_only_when_asked() -> None:
    src = VideoFrame.allocate(64, 48)
    src.data[:] = 77
    y, u, v = (np.pad(p, ((0, 0), (0, 16)))[:, : p.shape[1]] for p in src.planes)  # padded rows
    f = PlanarVideoFrame(y, u, v, pts=9)
    assert isinstance(f, VideoFrame) and not f.is_packed
    assert f.width == 64 and f.height == 48 and np.shares_memory(f.y, y)
    packed = f.data
    assert f.is_packed and packed.shape == (72, 64) and packed.flags.c_contiguous
    np.testing.assert_array_equal(packed, src.data)
    assert f.data is packed  # packed once


def test_planar_frame_rejects_bad_planes() -> None:
    y = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError):
        PlanarVideoFrame(y, np.zeros((2, 3), np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError):
        PlanarVideoFrame(np.zeros((3, 4), np.uint8), np.zeros((1, 2), np.uint8), np.zeros((1, 2), np.uint8))


def test_exports_are_sorted_and_exist() -> None:
    names = media.__all__
    kind = lambda n: 0 if n.isupper() else 1 if n[0].isupper() else 2  # noqa: E731 (isort-style, as RUF022)
    assert names == sorted(names, key=lambda n: (kind(n), n))
    for n in names:
        assert hasattr(media, n), n


def test_media_errors_have_stable_codes() -> None:
    codes = {cls.code for cls in (media.MediaError, media.UnsupportedFormat, media.ConversionError,
                                  media.CodecError, media.CodecUnavailable, media.EncodeError,
                                  media.DecodeError, media.PipelineClosed)}
    assert len(codes) == 8 and all(c.isidentifier() and c == c.lower() for c in codes)
    assert issubclass(media.UnsupportedFormat, ValueError) and issubclass(media.MediaError, media.CallrtError)


def test_lazy_frames_make_their_views_once_on_first_access() -> None:
    src = VideoFrame.allocate(32, 16)
    src.y[:] = 50
    calls: list[int] = []

    def make(owner: object, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        calls.append(w)
        return owner.planes  # type: ignore[attr-defined,no-any-return]

    f = PlanarVideoFrame.lazy(32, 16, make, src, pts=5)
    assert (f.width, f.height, f.pts) == (32, 16, 5) and calls == []
    assert np.shares_memory(f.y, src.data) and f.y.mean() == 50
    _ = f.u, f.v, f.planes
    assert calls == [32]

    samples = np.arange(20, dtype=np.int16).reshape(10, 2)
    made: list[int] = []

    def make_samples(owner: object, n: int, ch: int) -> np.ndarray:
        made.append(n)
        return samples

    a = media.frames.LazyAudioFrame(make_samples, None, 10, 2, pts=480)
    assert isinstance(a, media.AudioFrame) and (a.num_samples, a.channels, a.pts) == (10, 2, 480) and made == []
    assert a.samples is samples and a.samples is samples and made == [10]
