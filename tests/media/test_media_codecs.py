"""Encode -> decode round trips with the content checked, keyframes, bitrate changes, Opus tone."""

from __future__ import annotations

import av
import numpy as np
import pytest

from media.codecs import AudioDecoder, AudioEncoder, VideoDecoder, VideoEncoder
from media.errors import DecodeError, UnsupportedFormat
from media.frames import AudioFrame, VideoFrame
from media.testing import dominant_frequency, draw_index, read_index, render_pattern

W, H = 320, 240


def _frames(n: int) -> list[VideoFrame]:
    pattern = render_pattern(W, H, 10)
    out = []
    for i in range(n):
        f = VideoFrame(pattern[i % 10].copy(), pts=i * 3000)
        draw_index(f, 1000 + i)
        out.append(f)
    return out


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_round_trip_preserves_content(codec: str) -> None:
    enc = VideoEncoder(codec=codec, bitrate=300_000)  # type: ignore[arg-type]
    dec = VideoDecoder(codec)  # type: ignore[arg-type]
    frames = _frames(20)
    got = []
    for f in frames:
        packets = enc.encode(f)
        for p in packets:
            assert p.time_base == f.time_base
            got += dec.decode(p)
    assert enc.encodes == 20 and len(got) == 20
    assert [read_index(g) for g in got] == [1000 + i for i in range(20)]
    last, src = got[-1], frames[-1]
    assert (last.width, last.height) == (W, H)
    assert np.abs(last.y.astype(int) - src.y).mean() < 8  # lossy, but the picture


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_ring_buffers_encode_what_they_hold_now(codec: str) -> None:
    """A source refilling two buffers: the reused wrappers must carry each new picture."""
    enc, dec = VideoEncoder(codec=codec, bitrate=300_000), VideoDecoder(codec)  # type: ignore[arg-type]
    ring = [f.data for f in _frames(2)]
    pattern = render_pattern(W, H, 10)
    got, pts = [], []
    for i in range(12):
        buf = ring[i % 2]
        buf[:] = pattern[i % 10]
        frame = VideoFrame(buf)
        draw_index(frame, 2000 + i)
        for p in enc.encode(frame, pts=5000 + 3000 * i):  # pts replaces the frame's own (0)
            pts.append(p.pts)
            got += dec.decode(p)
    assert [read_index(g) for g in got] == [2000 + i for i in range(12)]
    assert pts == [5000 + 3000 * i for i in range(12)]


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_grey_level_survives(codec: str) -> None:
    enc, dec = VideoEncoder(codec=codec), VideoDecoder(codec)  # type: ignore[arg-type]
    frame = VideoFrame.allocate(W, H)
    frame.y[:] = 150
    decoded = [d for i in range(3) for p in enc.encode(VideoFrame(frame.data, pts=i)) for d in dec.decode(p)]
    assert abs(float(decoded[-1].y.mean()) - 150) < 1.5
    assert abs(float(decoded[-1].u.mean()) - 128) < 1.5


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_force_keyframe_and_keyframe_argument(codec: str) -> None:
    enc = VideoEncoder(codec=codec)  # type: ignore[arg-type]
    frames = _frames(8)
    kinds = []
    for i, f in enumerate(frames):
        if i == 3:
            enc.force_keyframe()
        kinds.append(any(p.is_keyframe for p in enc.encode(f, keyframe=(i == 6))))
    assert kinds == [True, False, False, True, False, False, True, False]
    assert enc.keyframes == 3


def test_h264_bitrate_changes_without_rebuild() -> None:
    enc = VideoEncoder(codec="h264", bitrate=1_500_000, min_bitrate=100_000, max_bitrate=1_500_000)
    frames = _frames(120)
    sizes = []
    for i, f in enumerate(frames):
        if i == 60:
            assert enc.set_bitrate(150_000) == 150_000
        sizes.append(sum(p.size for p in enc.encode(f)))
    assert enc.rebuilds == 0 and enc.keyframes == 1
    assert np.mean(sizes[90:]) < 0.5 * np.mean(sizes[20:60])


def test_vp8_rebuilds_only_past_threshold() -> None:
    enc = VideoEncoder(codec="vp8", bitrate=1_000_000, rebuild_interval=0.0)
    frames = _frames(6)
    enc.encode(frames[0])
    enc.set_bitrate(1_050_000)  # 5 %: below the 15 % threshold
    enc.encode(frames[1])
    assert enc.rebuilds == 0
    enc.set_bitrate(400_000)
    packets = enc.encode(frames[2])
    assert enc.rebuilds == 1 and packets[0].is_keyframe
    assert enc.set_bitrate(10) == enc.settings.min_bitrate


def test_frame_rate_and_bitrate_come_from_settings() -> None:
    enc = VideoEncoder(codec="vp8", bitrate=700_000, fps=15)
    enc.encode(_frames(1)[0])
    ctx = enc.codec_context
    assert ctx is not None and ctx.bit_rate == 700_000 and ctx.framerate == 15


def test_errors_are_translated() -> None:
    with pytest.raises(UnsupportedFormat):
        VideoEncoder(codec="vp9")  # type: ignore[arg-type]
    dec = VideoDecoder("h264")
    with pytest.raises(DecodeError) as info:
        for _ in range(3):
            dec.decode(b"\x00\x00\x00\x01\x65" + bytes(range(256)) * 4)
    assert isinstance(info.value.__cause__, av.FFmpegError)
    assert info.value.code == "decode_failed"


def test_opus_tone_round_trip() -> None:
    enc, dec = AudioEncoder(bitrate=64_000), AudioDecoder()
    t = np.arange(48_000) / 48_000
    tone = (np.sin(2 * np.pi * 880 * t) * 10_000).astype(np.int16)
    stereo = np.ascontiguousarray(np.stack([tone, tone], 1))
    out = []
    for start in range(0, len(stereo), 480):  # 10 ms quanta in, 20 ms packets out
        for p in enc.encode(AudioFrame(np.ascontiguousarray(stereo[start : start + 480]), pts=start)):
            assert p.pts % 960 == 0
            out += dec.decode(p)
    assert len(out) == 50 and all(f.samples.shape == (960, 2) for f in out)
    pcm = np.concatenate([f.samples for f in out])[4800:]
    assert abs(dominant_frequency(pcm, 48_000) - 880) < 5
    rms = float(np.sqrt(np.mean(pcm[:, 0].astype(np.float64) ** 2)))
    assert 5000 < rms < 9000  # about 10000 / sqrt(2)


def test_opus_bitrate_change_rebuilds_and_keeps_working() -> None:
    enc, dec = AudioEncoder(bitrate=96_000), AudioDecoder()
    block = np.ascontiguousarray(
        (np.random.default_rng(0).normal(0, 3000, (960 * 40, 2))).astype(np.int16))
    sizes = []
    for i in range(40):
        if i == 20:
            enc.set_bitrate(12_000)
        for p in enc.encode(AudioFrame(np.ascontiguousarray(block[i * 960 : (i + 1) * 960]), pts=i * 960)):
            sizes.append(p.size)
            assert dec.decode(p)
    assert np.mean(sizes[25:]) < 0.5 * np.mean(sizes[5:20])
