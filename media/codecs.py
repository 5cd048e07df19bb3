"""VP8, H264 and Opus encoders and decoders over PyAV, configured from settings.

The wrappers are thin on purpose (the benchmark holds them to <= 1.05x the raw PyAV call):
callrt frames go in and out through the zero-copy views of ``media.avframes``, packets come
out with a pts in the RTP clock (1/90000 for video, 1/48000 for Opus) so aiortc's packetizers
use them as they are.

Bitrate changes (``set_bitrate``) are applied at the next ``encode`` call:

* H264 (libx264): in place, no rebuild. The encoder is opened in CBR mode (VBV max rate =
  bitrate = ``max_bitrate``) and then steered: libx264 keeps a CBR stream CBR and moves its
  VBV rate with each new bitrate.
* VP8 (libvpx): FFmpeg's libvpx wrapper cannot reconfigure rate control on an open encoder, so
  the encoder is rebuilt, but only when the target moved by more than ``rebuild_threshold``
  (default 15 %) and at most once per ``rebuild_interval`` seconds (default 2 s); a rebuild
  starts with a keyframe. (aiortc rebuilds on every 10 % move.)
* Opus: rebuilt (cheap: microseconds, no keyframe concept).

All encode/decode methods block; run them on the owner's ``media._boundary.Worker`` thread,
never on the event loop.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Literal, cast

import av
import numpy as np

from media._boundary import translate
from media.avframes import AvFrameCache, from_av
from media.errors import CodecUnavailable, DecodeError, EncodeError, UnsupportedFormat
from media.frames import (
    AUDIO_SAMPLE_RATE,
    VIDEO_TIME_BASE,
    AudioFrame,
    LazyAudioFrame,
    PlanarVideoFrame,
    VideoFrame,
)
from media.loss_concealment import MAX_GAP_MS, OpusConcealment

logger = logging.getLogger(__name__)

VideoCodecName = Literal["vp8", "h264"]
"""Video codecs the pipeline encodes and decodes (the ones aiortc negotiates)."""

MIME_TYPES: dict[str, str] = {"vp8": "video/VP8", "h264": "video/H264", "opus": "audio/opus"}
"""RTP mime type of each codec name, as aiortc spells it."""

_ENCODERS = {"vp8": "libvpx", "h264": "libx264"}
_PICT_I = av.video.frame.PictureType.I
_PICT_NONE = av.video.frame.PictureType.NONE
_DECODERS = {"vp8": "vp8", "h264": "h264"}
OPUS_TIME_BASE = Fraction(1, AUDIO_SAMPLE_RATE)


@dataclass
class VideoEncoderSettings:
    """How to encode one video stream."""

    codec: VideoCodecName = "vp8"
    """``"vp8"`` (libvpx) or ``"h264"`` (libx264, constrained baseline)."""
    bitrate: int = 1_000_000
    """Initial target in bits per second."""
    min_bitrate: int = 100_000
    """``set_bitrate`` never goes below this."""
    max_bitrate: int = 2_500_000
    """``set_bitrate`` never goes above this (and H264 is opened at this rate, see module doc)."""
    fps: float = 30.0
    """Nominal frame rate, for rate control (frames may still arrive with any timing)."""
    keyframe_interval: int = 3000
    """Frames between periodic keyframes; WebRTC relies on PLI/FIR instead, hence the long default."""
    preset: str = "ultrafast"
    """libx264 preset (``ultrafast`` ... ``medium``); ignored by VP8."""
    cpu_used: int = -6
    """libvpx speed setting (aiortc's value, so comparisons are like for like); ignored by H264."""
    threads: int = 0
    """Encoder threads; 0 picks: 1 up to 1280x720, else up to 4 but at most half the CPUs."""
    rebuild_threshold: float = 0.15
    """VP8: relative bitrate change that justifies rebuilding the encoder."""
    rebuild_interval: float = 2.0
    """VP8: minimum seconds between two rebuilds."""
    options: dict[str, str] = field(default_factory=dict)
    """Extra FFmpeg encoder options, applied last."""


@dataclass
class AudioEncoderSettings:
    """How to encode one Opus stream."""

    bitrate: int = 48_000
    """Target in bits per second."""
    channels: int = 2
    """1 or 2; input frames must have this many channels."""
    sample_rate: int = AUDIO_SAMPLE_RATE
    """Opus runs at 48 kHz; resample before (``media.audio.Resampler``)."""
    frame_ms: int = 20
    """Packet duration; 20 ms is what WebRTC peers expect."""
    application: str = "voip"
    """libopus application: ``voip``, ``audio`` or ``lowdelay``."""


def _auto_threads(width: int, height: int) -> int:
    """One thread up to 720p; above that up to 4, but never more than half the CPUs.

    Extra encoder threads cut latency, not CPU: libvpx's row threads spin while they wait, which
    costs about 50 % more CPU per frame at 720p on a 2-core machine.
    """
    if width * height <= 1280 * 720:
        return 1
    return max(1, min(4, (os.cpu_count() or 1) // 2))


def _h264_level(width: int, height: int, fps: float) -> str:
    mbps = (width + 15) // 16 * ((height + 15) // 16) * fps
    for level, limit in (("3.1", 108_000), ("4.0", 245_760), ("4.2", 522_240)):
        if mbps <= limit:
            return level
    return "5.1"


class VideoEncoder:
    """One VP8 or H264 encoder: frames in, ``av.Packet``s (pts in 1/90000) out.

    ``force_keyframe()`` may be called from any thread; the next ``encode`` produces a keyframe.
    ``encodes`` counts frames encoded, ``keyframes`` keyframe packets, ``rebuilds`` encoder rebuilds.
    """

    def __init__(self, settings: VideoEncoderSettings | None = None, **overrides: object) -> None:
        s = settings or VideoEncoderSettings()
        if overrides:
            s = replace(s, **overrides)  # type: ignore[arg-type]
        if s.codec not in _ENCODERS:
            raise UnsupportedFormat(f"video codec {s.codec!r} is not one of {sorted(_ENCODERS)}")
        if not 0 < s.min_bitrate <= s.max_bitrate:
            raise ValueError("need 0 < min_bitrate <= max_bitrate")
        self.settings = s
        self._target = self._clamp(s.bitrate)
        self._applied = self._target
        self._ctx: Any = None  # av.video.codeccontext.VideoCodecContext once open
        self._size = (0, 0)
        self._last_pts = -1
        self._last_rebuild = 0.0
        self._kf_requested = 0
        self._kf_served = 0
        self._lock = threading.Lock()
        self._wrappers = AvFrameCache()
        self.encodes = 0
        self.keyframes = 0
        self.rebuilds = 0

    @property
    def codec(self) -> VideoCodecName:
        return self.settings.codec

    @property
    def bitrate(self) -> int:
        """The target bitrate (bps) the next frames are encoded at."""
        return self._target

    @property
    def codec_context(self) -> av.video.codeccontext.VideoCodecContext | None:
        """The open PyAV context (for benchmarks comparing against the raw call)."""
        return self._ctx

    def set_bitrate(self, bps: int) -> int:
        """Set the target (clamped to ``[min_bitrate, max_bitrate]``); returns the clamped value."""
        self._target = self._clamp(bps)
        return self._target

    def force_keyframe(self) -> None:
        """Make the next encoded frame a keyframe (thread-safe)."""
        with self._lock:
            self._kf_requested += 1

    def encode(self, frame: VideoFrame | av.VideoFrame, keyframe: bool = False, *,
               pts: int | None = None) -> list[av.Packet]:
        """Encode one frame; returns 0 or more packets (libvpx/x264 with zero latency: 1).

        A callrt frame is wrapped without a copy (and the wrapper reused when its array comes
        back, see ``AvFrameCache``); an ``av.VideoFrame`` is used as is (its pts, time base and
        picture type are overwritten). ``pts`` (in 1/90000) replaces the frame's own. A new size
        reopens the encoder (keyframe).
        """
        # The hot path: every step here runs once per frame right after the codec has evicted the
        # caches, where each Python step costs several times its cost in a loop of its own.
        avf = frame if isinstance(frame, av.VideoFrame) else self._wrappers.get(frame)
        tb: Fraction | None
        if pts is not None:
            tb = VIDEO_TIME_BASE
        elif avf is frame:
            pts, tb = avf.pts, avf.time_base
        else:
            pts, tb = frame.pts, frame.time_base
        size = (avf.width, avf.height)
        if size != self._size or self._ctx is None:
            self._open(size)
        elif self._target != self._applied:
            self._apply_bitrate()
        if self._kf_requested != self._kf_served:  # an int read needs no lock; the update does
            with self._lock:
                self._kf_served = self._kf_requested
            keyframe = True
        if tb is not VIDEO_TIME_BASE:
            pts = _rescale(pts, tb, VIDEO_TIME_BASE)
        elif pts is None:
            pts = 0
        if pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        avf.pts = pts
        avf.time_base = VIDEO_TIME_BASE
        avf.pict_type = _PICT_I if keyframe else _PICT_NONE
        try:  # inline rather than translate(): this is the hot path
            packets = self._ctx.encode(avf)  # packets come in the context's time base (1/90000)
        except av.FFmpegError as exc:
            raise EncodeError(f"{self.codec} encode: {exc}") from exc
        self.encodes += 1
        for p in packets:
            if p.is_keyframe:
                self.keyframes += 1
        return packets

    def close(self) -> None:
        """Release the codec context (idempotent)."""
        self._ctx = None
        self._wrappers.clear()

    def _clamp(self, bps: int) -> int:
        return int(max(self.settings.min_bitrate, min(int(bps), self.settings.max_bitrate)))

    def _apply_bitrate(self) -> None:
        target = self._target
        if target == self._applied:
            return
        if self.codec == "h264":
            self._ctx.bit_rate = target
            self._applied = target
            return
        moved = abs(target - self._applied) / self._applied
        if moved > self.settings.rebuild_threshold and time.monotonic() - self._last_rebuild >= (
            self.settings.rebuild_interval
        ):
            logger.debug("VP8 bitrate %d -> %d bps: rebuilding the encoder", self._applied, target)
            self._open(self._size)

    def _open(self, size: tuple[int, int]) -> None:
        s = self.settings
        w, h = size
        name = _ENCODERS[s.codec]
        try:
            ctx: Any = av.CodecContext.create(name, "w")
        except (av.FFmpegError, ValueError) as exc:
            raise CodecUnavailable(f"encoder {name} is not available in this FFmpeg build") from exc
        ctx.width, ctx.height = w, h
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = VIDEO_TIME_BASE
        ctx.framerate = Fraction(s.fps).limit_denominator(1001)
        ctx.gop_size = s.keyframe_interval
        ctx.thread_count = s.threads or _auto_threads(w, h)
        target = self._target
        if s.codec == "vp8":
            ctx.bit_rate = target
            ctx.qmin, ctx.qmax = 2, 56
            opts = {
                "deadline": "realtime",
                "cpu-used": str(s.cpu_used),
                "lag-in-frames": "0",
                "minrate": str(target),
                "maxrate": str(target),
                "bufsize": str(target),  # rc_buf_sz = bufsize * 1000 / bit_rate = 1000 ms
                "static-thresh": "1",
                "undershoot-pct": "100",
                "overshoot-pct": "15",
                "partitions": "0",
            }
        else:
            ctx.bit_rate = s.max_bitrate  # opened CBR at the ceiling, then steered (module doc)
            ctx.max_b_frames = 0
            opts = {
                "preset": s.preset,
                "tune": "zerolatency",
                "profile": "baseline",
                "level": _h264_level(w, h, s.fps),
                "maxrate": str(s.max_bitrate),
                "bufsize": str(s.max_bitrate),
                "forced-idr": "1",
            }
        opts.update(s.options)
        ctx.options = opts
        with translate(EncodeError, f"open {name} {w}x{h}"):
            ctx.open()
        if s.codec == "h264" and target != s.max_bitrate:
            ctx.bit_rate = target
        if self._ctx is not None:
            self.rebuilds += 1
        self._ctx = ctx
        self._size = size
        self._applied = target
        self._last_rebuild = time.monotonic()


class VideoDecoder:
    """One VP8 or H264 decoder: encoded bytes in, ``PlanarVideoFrame`` views out (no copy)."""

    def __init__(self, codec: VideoCodecName = "vp8") -> None:
        if codec not in _DECODERS:
            raise UnsupportedFormat(f"video codec {codec!r} is not one of {sorted(_DECODERS)}")
        self.codec = codec
        try:
            self._ctx: Any = av.CodecContext.create(_DECODERS[codec], "r")
        except (av.FFmpegError, ValueError) as exc:
            raise CodecUnavailable(f"decoder {codec} is not available") from exc
        self.decodes = 0

    @property
    def codec_context(self) -> av.video.codeccontext.VideoCodecContext:
        """The open PyAV context (for benchmarks comparing against the raw call)."""
        return self._ctx

    def decode(self, data: bytes | av.Packet, pts: int | None = None) -> list[PlanarVideoFrame]:
        """Decode one encoded frame (a full VP8 frame or H264 access unit)."""
        packet = data if isinstance(data, av.Packet) else av.Packet(data)
        if pts is not None:
            packet.pts = pts
            packet.time_base = VIDEO_TIME_BASE
        try:
            frames = self._ctx.decode(packet)
        except av.FFmpegError as exc:
            raise DecodeError(f"{self.codec} decode: {exc}") from exc
        self.decodes += 1
        return [from_av(f) for f in frames]

    def close(self) -> None:
        self._ctx = None


class AudioEncoder:
    """An Opus encoder taking ``AudioFrame``s of any length and emitting 20 ms packets.

    Input is buffered in a preallocated int16 array; each full packet's worth is encoded with a
    pts (1/48000) equal to the pts of its first sample.
    """

    def __init__(self, settings: AudioEncoderSettings | None = None, **overrides: object) -> None:
        s = settings or AudioEncoderSettings()
        if overrides:
            s = replace(s, **overrides)  # type: ignore[arg-type]
        if s.channels not in (1, 2):
            raise UnsupportedFormat("Opus wrapper supports mono or stereo")
        if s.sample_rate != AUDIO_SAMPLE_RATE:
            raise UnsupportedFormat("Opus runs at 48 kHz; resample first")
        self.settings = s
        self.frame_samples = s.sample_rate * s.frame_ms // 1000
        self._channels = s.channels
        self._pending = np.zeros((self.frame_samples * 4, s.channels), dtype=np.int16)
        self._fill = 0
        self._next_pts: int | None = None
        self._target = s.bitrate
        self._ctx: av.CodecContext | None = None
        self.encodes = 0
        self._open()

    @property
    def bitrate(self) -> int:
        return self._target

    @property
    def codec_context(self) -> av.CodecContext | None:
        return self._ctx

    def set_bitrate(self, bps: int) -> int:
        """New target (6 kbps .. 510 kbps); the encoder is rebuilt at the next packet boundary."""
        self._target = int(max(6_000, min(int(bps), 510_000)))
        return self._target

    def encode(self, frame: AudioFrame) -> list[av.Packet]:
        """Buffer ``frame`` and encode every complete packet; returns 0 or more packets."""
        samples = frame.samples
        if samples.shape[1] != self._channels or frame.sample_rate != AUDIO_SAMPLE_RATE:
            raise UnsupportedFormat(
                f"encoder wants {self.settings.channels} ch at {self.settings.sample_rate} Hz, "
                f"got {frame.channels} ch at {frame.sample_rate} Hz"
            )
        if self._target != self._applied:
            self._open()
        if self._next_pts is None or self._fill == 0:
            self._next_pts = frame.pts
        n = len(samples)
        fs = self.frame_samples
        if n == fs and self._fill == 0:  # one whole packet (the usual 20 ms frame): no staging copy
            return self._encode_block(samples)
        out: list[av.Packet] = []
        pos = 0
        while pos < n:
            take = min(n - pos, fs - self._fill)
            self._pending[self._fill : self._fill + take] = samples[pos : pos + take]
            self._fill += take
            pos += take
            if self._fill == fs:
                out += self._encode_block(self._pending[:fs])
                self._fill = 0
                self._next_pts = frame.pts + pos
        return out

    @property
    def pending_samples(self) -> int:
        """Samples per channel buffered towards the next packet (0: at a packet boundary)."""
        return self._fill

    def encode_block(self, block: np.ndarray, pts: int) -> list[av.Packet]:
        """Encode exactly one packet's worth of interleaved int16 samples (no buffering)."""
        self._next_pts = pts
        return self._encode_block(block)

    def _encode_block(self, block: np.ndarray) -> list[av.Packet]:
        # One reused PyAV frame: libopus consumes it inside encode(), so refilling it is safe.
        np.copyto(self._frame_samples, block)
        avf = self._frame
        avf.pts = self._next_pts
        try:
            packets = self._ctx.encode(avf)  # type: ignore[union-attr]
        except av.FFmpegError as exc:
            raise EncodeError(f"opus encode: {exc}") from exc
        self.encodes += 1
        for p in packets:  # in the context's time base (1/48000); libopus' own pts lag by its lookahead
            p.pts = self._next_pts
        return packets

    def _open(self) -> None:
        s = self.settings
        try:
            ctx = av.CodecContext.create("libopus", "w")
        except (av.FFmpegError, ValueError) as exc:
            raise CodecUnavailable("libopus is not available in this FFmpeg build") from exc
        ctx.bit_rate = self._target
        ctx.sample_rate = s.sample_rate
        ctx.format = "s16"
        ctx.layout = "stereo" if s.channels == 2 else "mono"
        ctx.time_base = OPUS_TIME_BASE
        ctx.options = {"application": s.application, "frame_duration": str(s.frame_ms)}
        with translate(EncodeError, "open libopus"):
            ctx.open()
        self._ctx = ctx
        self._applied = self._target
        frame = av.AudioFrame(format="s16", layout=ctx.layout.name, samples=self.frame_samples)
        frame.sample_rate = s.sample_rate
        frame.time_base = OPUS_TIME_BASE
        self._frame = frame
        n = self.frame_samples * s.channels
        self._frame_samples = np.frombuffer(cast(Any, frame.planes[0]), dtype=np.int16, count=n).reshape(-1, s.channels)

    def close(self) -> None:
        self._ctx = None


class AudioDecoder:
    """An Opus decoder: packets in, int16 interleaved ``AudioFrame``s (views) out.

    Packets decoded with a pts (RTP's 48 kHz clock) that skips ahead of where the previous one
    ended by at most ``conceal_ms`` are preceded by libopus' concealment of what is missing
    (``media.loss_concealment``); ``conceal_ms=0`` turns that off. ``concealment.stats()`` counts it.
    """

    def __init__(self, channels: int = 2, conceal_ms: int = MAX_GAP_MS) -> None:
        try:
            ctx = av.CodecContext.create("libopus", "r")
        except (av.FFmpegError, ValueError) as exc:
            raise CodecUnavailable("libopus decoder is not available") from exc
        ctx.format = "s16"
        ctx.layout = "stereo" if channels == 2 else "mono"
        ctx.sample_rate = AUDIO_SAMPLE_RATE
        self._ctx = ctx
        self.channels = channels
        self.decodes = 0
        self.concealment = OpusConcealment(conceal_ms) if conceal_ms > 0 else None

    @property
    def codec_context(self) -> av.audio.codeccontext.AudioCodecContext:
        """The open PyAV context (for benchmarks comparing against the raw call)."""
        return self._ctx

    def decode(self, data: bytes | av.Packet, pts: int | None = None) -> list[AudioFrame]:
        """Decode one Opus packet (after concealing a gap before it, see the class doc)."""
        packet = data if isinstance(data, av.Packet) else av.Packet(data)
        if pts is not None:
            packet.pts = pts
            packet.time_base = OPUS_TIME_BASE
        frames = self.decode_av(packet)
        # The context was opened for packed s16 with our channel count at 48 kHz, and libopus
        # decodes to that, so the frames are that: hand out lazy views (made on first access to
        # ``samples``).
        ch = self.channels
        now = time.time()
        if len(frames) == 1:  # the usual case, without a comprehension's extra frame
            f = frames[0]
            return [LazyAudioFrame(_s16_view, f, f.samples, ch, AUDIO_SAMPLE_RATE, f.pts or 0, now)]
        return [LazyAudioFrame(_s16_view, f, f.samples, ch, AUDIO_SAMPLE_RATE, f.pts or 0, now) for f in frames]

    def decode_av(self, packet: av.Packet) -> list[av.AudioFrame]:
        """Decode one Opus packet into PyAV frames, concealment of a gap before it first."""
        at = packet.pts
        c = self.concealment
        frames: list[av.AudioFrame] = []
        if c is not None and at is not None and at != c.expected and c.expected is not None and packet.size:
            for filler, filler_pts in c.plan(at, memoryview(packet)[0]):
                guess = av.Packet(filler)
                guess.pts, guess.time_base = filler_pts, OPUS_TIME_BASE
                try:
                    frames += self._ctx.decode(guess)
                except av.FFmpegError:
                    pass  # a failed guess stays a hole
        try:
            real = self._ctx.decode(packet)
        except av.FFmpegError as exc:
            raise DecodeError(f"opus decode: {exc}") from exc
        self.decodes += 1
        if c is not None and at is not None and real:
            n = real[0].samples if len(real) == 1 else sum(f.samples for f in real)
            if at == c.expected:
                c.expected = at + n  # in order: the common case, inline
            else:
                c.done(at, n)
        return frames + real if frames else real

    def close(self) -> None:
        self._ctx = None  # type: ignore[assignment]


def _s16_view(frame: Any, n: int, channels: int) -> np.ndarray:
    return np.frombuffer(frame.planes[0], dtype=np.int16, count=n * channels).reshape(n, channels)


def _rescale(pts: int | None, src: Fraction | None, dst: Fraction) -> int:
    if pts is None:
        return 0
    if src is None or src == dst:
        return int(pts)
    return round(pts * Fraction(src) / dst)
