"""Per-stage costs of the frame pipeline, each next to its baseline timed in the same loop.

Every pair (callrt's stage, its baseline) runs interleaved, alternating which goes first, on
the same inputs, so both see the same CPU weather; a figure is the median over the iterations
(robust to the time slices other processes take on a shared machine).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import av
import numpy as np
from aiortc.codecs.vpx import Vp8Encoder

from benchmarks._report import Progress, Record
from devices._video import I420Converter
from media._opencv import cv2
from media.avframes import AvFrameCache, from_av, to_av
from media.codecs import (
    OPUS_TIME_BASE,
    AudioDecoder,
    AudioEncoder,
    VideoCodecName,
    VideoDecoder,
    VideoEncoder,
    VideoEncoderSettings,
)
from media.convert import Converter
from media.frames import AudioFrame, VideoFrame
from media.testing import draw_index, render_pattern
from media.vp8_packetize import Vp8Packetizer

AIORTC_DEFAULT = "aiortc default path"
RAW_CALL = "raw PyAV codec call"
MEMCPY = "memcpy of one I420 frame"


def median_ms(samples_ns: Sequence[int]) -> float:
    return statistics.median(samples_ns) / 1e6


def time_pair(ours: Callable[[int], object], base: Callable[[int], object], iters: int,
              warmup: int = 2, before: Callable[[int], object] | None = None,
              clock: Callable[[], int] = time.perf_counter_ns) -> tuple[float, float]:
    """Median ms of ``ours(i)`` and ``base(i)``, interleaved; ``before(i)`` runs untimed first.

    ``clock`` is wall time by default; ``time.process_time_ns`` counts the CPU of every thread
    of the process instead (for calls that start threads of their own).
    """
    a: list[int] = []
    b: list[int] = []
    pc = clock
    for i in range(warmup + iters):
        if before is not None:
            before(i)
        order = ((ours, a), (base, b)) if i % 2 == 0 else ((base, b), (ours, a))
        for fn, acc in order:
            t = pc()
            fn(i)
            dt = pc() - t
            if i >= warmup:
                acc.append(dt)
    return median_ms(a), median_ms(b)


def _livekit_rtc() -> Any:
    """livekit-rtc's ``rtc`` module where the optional benchmark extra is installed, else None."""
    try:
        from livekit import rtc  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    return rtc


def _frames(width: int, height: int, count: int) -> tuple[list[VideoFrame], list[np.ndarray]]:
    arrays = render_pattern(width, height, count)
    frames = []
    for i, a in enumerate(arrays):
        f = VideoFrame(a, pts=i * 3000)
        draw_index(f, i)
        frames.append(f)
    bgr = [cv2.cvtColor(f.data, cv2.COLOR_YUV2BGR_I420) for f in frames]
    return frames, bgr


def video_stages(width: int, height: int, iters: int, codec_frames: int, progress: Progress) -> list[Record]:
    res = f"{width}x{height}"
    frames, bgrs = _frames(width, height, 8)
    n = len(frames)
    conv = Converter()
    records: list[Record] = []

    # 1. BGR -> encoder-ready frame: what an encoder is handed, the converter's ring buffer wrapped
    # for PyAV through the encoder's wrapper cache (``VideoEncoder.encode`` does exactly this). A
    # fresh wrap of every frame (``to_av``) is recorded beside it.
    wrappers = AvFrameCache()

    def ours_bgr(i: int) -> object:
        return wrappers.get(conv.to_frame(bgrs[i % n]))

    def aiortc_bgr(i: int) -> object:
        return av.VideoFrame.from_ndarray(bgrs[i % n], format="bgr24").reformat(format="yuv420p")

    out = np.empty((height * 3 // 2, width), np.uint8)
    ours, base = time_pair(ours_bgr, aiortc_bgr, iters)
    # Interleaved with aiortc's path (which allocates a new frame each time) our ring buffers are
    # cache-cold; back to back (a capture loop doing nothing else) they are not. Both are recorded.
    alone, _ = time_pair(ours_bgr, lambda i: None, iters)
    fresh_wrap, _ = time_pair(lambda i: to_av(conv.to_frame(bgrs[i % n])), lambda i: None, iters)
    cv_only, _ = time_pair(lambda i: cv2.cvtColor(bgrs[i % n], cv2.COLOR_BGR2YUV_I420, dst=out),
                           lambda i: None, iters)
    records.append(Record("BGR->I420 convert+wrap (encoder-ready)", ours, "ms", res, AIORTC_DEFAULT
                          + " (from_ndarray(bgr24)+reformat)", base,
                          extra={"opencv_convert_only_ms": cv_only, "back_to_back_ms": alone,
                                 "back_to_back_fresh_wrap_ms": fresh_wrap}))
    progress.step(f"{res} convert")

    rtc = _livekit_rtc()
    if rtc is not None:
        rgbas = [cv2.cvtColor(b, cv2.COLOR_BGR2RGBA) for b in bgrs]
        lk = [rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, r.tobytes()) for r in rgbas]
        ours, base = time_pair(lambda i: wrappers.get(conv.to_frame(rgbas[i % n], "rgba")),
                               lambda i: lk[i % n].convert(rtc.VideoBufferType.I420), iters)
        records.append(Record("RGBA->I420 convert+wrap", ours, "ms", res,
                              "livekit-rtc VideoFrame.convert (libyuv)", base))

    records.append(_ffmpeg_source_stage(width, height, bgrs[0], iters))
    progress.step(f"{res} source frame")

    # 2. Wrap an I420 array for PyAV.
    dst = np.empty_like(frames[0].data)
    ours, base = time_pair(lambda i: to_av(frames[i % n]), lambda i: np.copyto(dst, frames[i % n].data), iters)
    copy_ms, _ = time_pair(lambda i: av.VideoFrame.from_ndarray(frames[i % n].data, format="yuv420p"),
                           lambda i: None, iters)
    records.append(Record("wrap I420 -> av.VideoFrame (zero-copy)", ours, "ms", res, MEMCPY, base,
                          extra={"from_ndarray_copy_ms": copy_ms}))
    progress.step(f"{res} wrap")

    # 3. Encode and decode, wrapper vs raw PyAV call on identically configured contexts.
    codecs: tuple[VideoCodecName, ...] = ("vp8", "h264")
    for codec in codecs:
        records += _codec_stages(codec, frames, res, codec_frames, iters, conv, progress)
    return records


def _ffmpeg_source_stage(width: int, height: int, bgr: np.ndarray, iters: int) -> Record:
    """A frame an FFmpeg-backed source decoded (an MJPEG file or V4L2 camera gives yuvj422p) to the
    I420 array the source hands on (``VideoFile``, ``FFmpegSource``).

    Every decoded frame is a new PyAV frame, so each side gets a fresh one, made untimed just
    before it. The baseline is what PyAV code writes; PyAV 18 makes a new scaler with a thread per
    CPU for every new frame. callrt's converter (``devices._video.I420Converter``) keeps one
    scaler per source, on one thread. The figure is CPU of the whole process (the baseline's
    threads included); wall time is in ``extra``.
    """
    template = av.VideoFrame.from_ndarray(bgr, format="bgr24")
    fresh: list[av.VideoFrame] = []

    def make_frames(i: int) -> None:
        fresh[:] = [template.reformat(format="yuvj422p", threads=1) for _ in range(2)]

    conv = I420Converter()

    def ours(i: int) -> object:
        return conv.from_av(fresh[0])

    def base(i: int) -> object:
        return fresh[1].to_ndarray(format="yuv420p")

    cpu_ours, cpu_base = time_pair(ours, base, iters, before=make_frames, clock=time.process_time_ns)
    wall_ours, wall_base = time_pair(ours, base, iters, before=make_frames)
    return Record("FFmpeg source frame (yuvj422p) -> I420 array, CPU", cpu_ours, "ms", f"{width}x{height}",
                  "PyAV to_ndarray(format='yuv420p') (its default scaler)", cpu_base,
                  extra={"wall_ms": wall_ours, "baseline_wall_ms": wall_base})


def _codec_stages(codec: VideoCodecName, frames: list[VideoFrame], res: str, codec_frames: int, iters: int,
                  conv: Converter, progress: Progress) -> list[Record]:
    records: list[Record] = []
    n = len(frames)
    settings = VideoEncoderSettings(codec=codec, bitrate=1_000_000, min_bitrate=1_000_000,
                                    max_bitrate=1_000_000, fps=30)
    wrapped, raw_owner = VideoEncoder(settings), VideoEncoder(settings)
    # Open both the same way, with the same first (key)frame, so that their rate control is in the
    # same state when timing starts (the raw one's also starts the decoders' input). Opened with
    # different first frames the two had their keyframes at different places and rows read up to
    # 1.09x from rate control alone.
    list(wrapped.encode(VideoFrame(frames[0].data.copy(), pts=0)))
    raw_packets = list(raw_owner.encode(VideoFrame(frames[0].data.copy(), pts=0)))
    raw_ctx = raw_owner.codec_context
    seq = [VideoFrame(frames[i % n].data, pts=(i + 1) * 3000) for i in range(codec_frames + 2)]
    # The raw call encodes an av.VideoFrame made just before it (untimed), from its own copy of the
    # pictures, as any PyAV caller makes one frame per picture. Against frames made long before,
    # the same raw call read 4-9 % slower when its frame was new (raw against raw, interleaved),
    # which had the wrapper's rows at 1.04-1.16x with bit-identical output and equal CPU in blocks.
    copies = [f.data.copy() for f in frames]
    fresh: list[av.VideoFrame] = []

    def make_raw_frame(i: int) -> None:
        fresh[:] = [to_av(VideoFrame(copies[i % n], pts=(i + 1) * 3000))]

    our_packets: list[av.Packet] = []
    # Both sides keep their packets the same way, so neither pays for it alone.
    ours, base = time_pair(lambda i: our_packets.extend(wrapped.encode(seq[i])),
                           lambda i: raw_packets.extend(raw_ctx.encode(fresh[0])),  # type: ignore[union-attr]
                           codec_frames, before=make_raw_frame)
    packets = [bytes(p) for p in raw_packets]
    records.append(Record(f"{codec.upper()} encode (wrapper)", ours, "ms", res,
                          f"{RAW_CALL} ({_ENC_NAMES[codec]})", base))
    progress.step(f"{res} {codec} encode")

    wrapped_dec, raw_dec = VideoDecoder(codec), VideoDecoder(codec)
    raw_dctx = raw_dec.codec_context
    p_ours = [av.Packet(p) for p in packets]
    p_raw = [av.Packet(p) for p in packets]
    # Neither side keeps its frames (holding them would starve the decoder's buffer pool).
    ours, base = time_pair(lambda i: wrapped_dec.decode(p_ours[i]), lambda i: raw_dctx.decode(p_raw[i]),
                           len(packets) - 2)
    records.append(Record(f"{codec.upper()} decode (wrapper)", ours, "ms", res,
                          f"{RAW_CALL} ({_DEC_NAMES[codec]})", base))
    progress.step(f"{res} {codec} decode")

    if codec == "vp8":
        # RTP payloads of each encoded frame: once per frame for all peers (media.tracks.SharedPacketizer)
        ours_packer, aiortc_packer = Vp8Packetizer(), Vp8Encoder()
        n_enc = len(our_packets)
        ours, base = time_pair(lambda i: ours_packer.pack(our_packets[i % n_enc]),
                               lambda i: aiortc_packer.pack(our_packets[i % n_enc]), iters)
        records.append(Record("VP8 frame -> RTP payloads", ours, "ms", res,
                              AIORTC_DEFAULT + " (Vp8Encoder.pack)", base))
        fresh_ctx = VideoDecoder(codec).codec_context
        decoded = [f for p in packets[:8] for f in fresh_ctx.decode(av.Packet(p))]
        m = len(decoded)
        ours, base = time_pair(lambda i: from_av(decoded[i % m]), lambda i: decoded[i % m].to_ndarray(), iters)
        records.append(Record("decoded frame -> NumPy (plane views)", ours, "ms", res,
                              "PyAV to_ndarray() (copy)", base))
        planar = [from_av(d) for d in decoded]
        ours, base = time_pair(lambda i: conv.to_image(planar[i % m]),
                               lambda i: decoded[i % m].to_ndarray(format="bgr24"), iters)
        records.append(Record("decoded frame -> BGR (reused buffer)", ours, "ms", res,
                              AIORTC_DEFAULT + " (to_ndarray(bgr24))", base))
        progress.step(f"{res} to-numpy")
    return records


_ENC_NAMES = {"vp8": "libvpx", "h264": "libx264 ultrafast"}
_DEC_NAMES = {"vp8": "FFmpeg vp8", "h264": "FFmpeg h264"}


def audio_stages(iters: int, progress: Progress) -> list[Record]:
    t = np.arange(960 * (iters + 4)) / 48_000
    mono = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    stereo = np.ascontiguousarray(np.repeat(mono[:, None], 2, axis=1))
    blocks = [np.ascontiguousarray(stereo[i * 960 : (i + 1) * 960]) for i in range(iters + 4)]
    wrapped, raw_owner = AudioEncoder(), AudioEncoder()
    raw_ctx = raw_owner.codec_context
    frames = [AudioFrame(b, pts=i * 960) for i, b in enumerate(blocks)]
    fresh: list[av.AudioFrame] = []

    def make_raw_frame(i: int) -> None:  # made just before the raw call, untimed (see _codec_stages)
        a = av.AudioFrame.from_ndarray(blocks[i].reshape(1, -1), format="s16", layout="stereo")
        a.sample_rate, a.pts = 48_000, i * 960
        fresh[:] = [a]

    packets: list[bytes] = []

    def raw_enc(i: int) -> object:
        out = raw_ctx.encode(fresh[0])  # type: ignore[union-attr]
        packets.extend(bytes(p) for p in out)
        return out

    ours, base = time_pair(lambda i: wrapped.encode(frames[i]), raw_enc, iters, before=make_raw_frame)
    records = [Record("Opus encode 20 ms stereo (wrapper)", ours, "ms", "", f"{RAW_CALL} (libopus)", base)]
    wrapped_dec, raw_dec = AudioDecoder(), AudioDecoder()
    # With timestamps, so the wrapper's row includes its loss-concealment bookkeeping.
    p_ours = [_opus_packet(p, i * 960) for i, p in enumerate(packets)]
    p_raw = [_opus_packet(p, i * 960) for i, p in enumerate(packets)]
    raw_dctx = raw_dec.codec_context
    ours, base = time_pair(lambda i: wrapped_dec.decode(p_ours[i]), lambda i: raw_dctx.decode(p_raw[i]),
                           len(packets) - 2)
    records.append(Record("Opus decode 20 ms stereo (wrapper)", ours, "ms", "", f"{RAW_CALL} (libopus)", base))
    progress.step("opus")
    return records


def _opus_packet(data: bytes, pts: int) -> av.Packet:
    packet = av.Packet(data)
    packet.pts, packet.time_base = pts, OPUS_TIME_BASE
    return packet
