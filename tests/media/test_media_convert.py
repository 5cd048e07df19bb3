"""Colour conversion against a NumPy reference of BT.601 limited range, buffers reused, sizes handled.

Tolerances: 1 LSB forward (RGB -> I420: OpenCV's fixed-point rounding against float64), 2 LSB
inverse (I420 -> RGB: rounding on both sides of the 1.164 luma gain).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.convert import Converter, from_i420, resize_i420, to_i420
from media.errors import UnsupportedFormat
from media.frames import VideoFrame

FORWARD_TOL = 1
INVERSE_TOL = 2


def ref_rgb_to_i420(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited range; chroma taken at the top-left pixel of each 2x2 block."""
    h, w = rgb.shape[:2]
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    cb = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    cr = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    out = np.empty(h * w * 3 // 2)
    out[: h * w] = y.reshape(-1)
    out[h * w : h * w * 5 // 4] = cb[::2, ::2].reshape(-1)
    out[h * w * 5 // 4 :] = cr[::2, ::2].reshape(-1)
    return np.clip(np.rint(out), 0, 255).reshape(h * 3 // 2, w)


def ref_i420_to_rgb(i420: np.ndarray) -> np.ndarray:
    f = VideoFrame(i420)
    y = f.y.astype(np.float64) - 16
    cb = np.repeat(np.repeat(f.u.astype(np.float64) - 128, 2, 0), 2, 1)
    cr = np.repeat(np.repeat(f.v.astype(np.float64) - 128, 2, 0), 2, 1)
    r = 1.164383 * y + 1.596027 * cr
    g = 1.164383 * y - 0.391762 * cb - 0.812968 * cr
    b = 1.164383 * y + 2.017232 * cb
    return np.clip(np.rint(np.stack([r, g, b], -1)), 0, 255)


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _as(fmt: str, rgb: np.ndarray) -> np.ndarray:
    return {
        "rgb24": rgb,
        "bgr24": rgb[..., ::-1],
        "rgba": np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),
        "bgra": np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 255, np.uint8)]),
    }[fmt].copy()


@pytest.mark.parametrize("fmt", ["bgr24", "rgb24", "bgra", "rgba"])
def test_to_i420_matches_bt601_reference(fmt: str) -> None:
    rgb = _rgb(120, 160)
    out = to_i420(_as(fmt, rgb), fmt)  # type: ignore[arg-type]
    assert np.abs(out.astype(int) - ref_rgb_to_i420(rgb)).max() <= FORWARD_TOL


@pytest.mark.parametrize("fmt", ["bgr24", "rgb24", "bgra", "rgba"])
def test_from_i420_matches_bt601_reference(fmt: str) -> None:
    rng = np.random.default_rng(1)
    i420 = np.empty((180, 160), np.uint8)
    i420[:120] = rng.integers(16, 236, (120, 160))
    i420[120:] = rng.integers(16, 241, (60, 160))
    out = from_i420(VideoFrame(i420), fmt)  # type: ignore[arg-type]
    rgb = out[..., :3] if fmt.startswith("rgb") else out[..., 2::-1]
    assert np.abs(rgb.astype(int) - ref_i420_to_rgb(i420)).max() <= INVERSE_TOL
    if fmt in ("rgba", "bgra"):
        assert (out[..., 3] == 255).all()


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**31))
def test_forward_reference_holds_for_any_even_size(hw: int, ww: int, seed: int) -> None:
    rgb = _rgb(hw * 2, ww * 2, seed)
    assert np.abs(to_i420(rgb, "rgb24").astype(int) - ref_rgb_to_i420(rgb)).max() <= FORWARD_TOL


def test_nv12_round_trip_is_exact() -> None:
    frame = VideoFrame(to_i420(_rgb(48, 64)))
    nv12 = from_i420(frame, "nv12")
    assert nv12.shape == frame.data.shape
    np.testing.assert_array_equal(nv12[48:].reshape(24, 32, 2)[..., 0], frame.u)  # interleaved UV
    np.testing.assert_array_equal(to_i420(nv12, "nv12"), frame.data)


def test_outputs_land_in_the_supplied_buffers() -> None:
    bgr = _as("bgr24", _rgb(48, 64))
    out = np.empty((72, 64), np.uint8)
    assert to_i420(bgr, "bgr24", out) is out
    back = np.empty((48, 64, 3), np.uint8)
    assert from_i420(VideoFrame(out), "bgr24", back) is back
    with pytest.raises(UnsupportedFormat):
        to_i420(bgr, "bgr24", np.empty((70, 64), np.uint8))


def test_converter_reuses_a_ring_of_buffers() -> None:
    conv = Converter(ring=2)
    bgr = _as("bgr24", _rgb(48, 64))
    a, b, c = (conv.to_frame(bgr, pts=i) for i in range(3))
    assert not np.shares_memory(a.data, b.data)
    assert np.shares_memory(a.data, c.data)  # the ring came round
    assert c.pts == 2
    i1, i2, i3 = (conv.to_image(a) for _ in range(3))
    assert np.shares_memory(i1, i3) and not np.shares_memory(i1, i2)


def test_odd_sizes_are_cropped_to_even() -> None:
    rgb = _rgb(49, 65)
    frame = Converter().to_frame(rgb[..., ::-1].copy())
    assert (frame.width, frame.height) == (64, 48)
    assert np.abs(frame.data.astype(int) - ref_rgb_to_i420(rgb[:48, :64])).max() <= FORWARD_TOL


def test_resize_scales_every_plane() -> None:
    rgb = np.zeros((96, 128, 3), np.uint8)
    rgb[:, :64] = (200, 30, 30)
    rgb[:, 64:] = (20, 180, 90)
    frame = VideoFrame(to_i420(rgb, "rgb24"))
    small = Converter().resize(frame, 64, 48)
    assert (small.width, small.height) == (64, 48)
    expected = cv2.resize(frame.y, (64, 48), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(small.y, expected)
    # Flat colour regions keep their colour through the scale.
    assert abs(int(small.u[5, 5]) - int(frame.u[10, 10])) <= 1
    assert abs(int(small.v[5, 28]) - int(frame.v[10, 60])) <= 1
    big = resize_i420(frame, 256, 192)
    assert big.shape == (288, 256)
    with pytest.raises(UnsupportedFormat):
        resize_i420(frame, 63, 48)


def test_bad_inputs_raise_unsupported_format() -> None:
    with pytest.raises(UnsupportedFormat):
        to_i420(np.zeros((4, 4, 3), np.uint8), "yuyv")  # type: ignore[arg-type]
    with pytest.raises(UnsupportedFormat):
        to_i420(np.zeros((4, 4, 4), np.uint8), "bgr24")
    with pytest.raises(UnsupportedFormat):
        to_i420(np.zeros((4, 4, 3), np.float32), "bgr24")


def test_opencv_is_loaded_with_its_workers_told_not_to_spin() -> None:
    """Whichever callrt module loads OpenCV first, its pool's active waits are off unless the user set them."""
    import os
    import subprocess
    import sys
    import textwrap

    # what the environment held at the moment cv2 started loading (a finder that only watches)
    probe = textwrap.dedent("""
        import os, sys
        seen = []
        class Watch:
            def find_spec(self, name, path=None, target=None):
                if name == "cv2":
                    e = os.environ
                    seen.append((e.get("OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER"),
                                 e.get("OPENCV_THREAD_POOL_ACTIVE_WAIT_MAIN")))
        sys.meta_path.insert(0, Watch())
        import devices
        print(*seen[0])
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_THREAD_POOL_")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "0"]
    env["OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER"] = "2000"  # the user's choice wins
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2000", "0"]
