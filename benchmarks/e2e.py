"""End-to-end benchmark: N participants in one call, next to a bare aiortc loopback pair.

``python -m benchmarks.e2e [--quick] [--participants 2,3,4] [--resolutions 640x480,1280x720]
[--codecs vp8,h264] [--seconds S] [--settle S] [--json PATH] [--markdown PATH]``

For every configuration (participants x resolution x codec) two things run back to back in
this process, the baseline first and callrt right after it, so that load from elsewhere on
the machine hits both alike:

* **Baseline, a bare aiortc loopback**: two plain ``RTCPeerConnection``s
  (``RTCConfiguration(iceServers=[])``), offer and answer handed over directly, one sending a
  ``VideoStreamTrack`` subclass that renders the same ``TestPattern`` frames at 30 fps as
  ``av.VideoFrame.from_ndarray(..., format="yuv420p")`` (aiortc's default path: its own
  encoder per sender), the other receiving and decoding. The codec is forced with
  ``transceiver.setCodecPreferences``. Measured: the offer/answer exchange (``createOffer`` to
  the answer applied), time from applying the answer to the first decoded frame, verified fps
  and capture-to-decoded latency over the window, and the process CPU (``psutil``
  ``cpu_percent`` over the window) of the whole pair (one encoder + one decoder). Video only.
* **callrt**: an ``EmbeddedCoordinator`` (started once per run, in a thread of this process)
  and N ``signaling.demo.DemoBot``s joining one call one after another (the first creates it
  with ``settings_override={"video": {"codec": ..., "target_resolution": {...}}}``), each
  publishing a ``TestPattern`` and its own ``Tone`` through the call API (encode-once fan-out,
  mesh of peer connections, bounded sinks). Measured: join time (``call.join`` wall time)
  p50/p95 over participants; time to first frame per stream (sender -> receiver), from the
  start of the later of the two joins; received fps per stream counting verified frames only
  (the TestPattern index is readable and comes in order); capture-to-received latency p95;
  process CPU over the window divided by N.

Both run on the event loop the ``callrt`` command runs bots on (``signaling.event_loop``:
uvloop when installed, ``CALLRT_LOOP`` to choose; each record's ``extra.loop`` names it).

CPU caveat: every participant, its encoder and decoder threads, and the coordinator share
this one process, so "CPU per participant" is process CPU / N. With N participants each one
encodes its video once, decodes N-1 videos and handles N-1 Opus streams each way, so the
ratio against one bare pair (one encode + one decode, no audio) is about like for like at
N = 2 and grows with N by design.

Windows: after every stream delivered its first frame, ``--settle`` seconds pass (encoder
ramp-up, first keyframes) before the ``--seconds`` window is measured. Output: a markdown
table on stdout (``benchmarks._report`` format), progress on stderr, ``--json``/``--markdown``
files; ``-v`` logs each run's phases (joins, first frames, closing). Exit status 1 if some
stream delivered no verified frame in its window or a codec other than the one asked for was
negotiated. Each join, each participant's close, and the wait for first frames are bounded
(``JOIN_TIMEOUT_S``, ``CLOSE_TIMEOUT_S``, ``FIRST_FRAME_TIMEOUT_S``), so an overloaded
configuration shows up as a failure instead of a hang.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import re
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import av
import psutil
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError

from benchmarks._report import Progress, Record, configure_logging, percentile, publish
from devices import TestPattern, read_frame_index
from media.frames import VideoFrame
from signaling import event_loop
from signaling.client import Client
from signaling.demo import DemoBot, StreamCheck
from signaling.server.config import ServerConfig
from signaling.server.embedded import EmbeddedCoordinator

logger = logging.getLogger(__name__)

FPS = 30
FIRST_FRAME_TIMEOUT_S = 20.0
"""How long every stream may take to deliver its first frame before the window starts anyway."""
JOIN_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 20.0
"""Per participant: leaving, closing its peer connections and client."""
CAPTURE_TIMES_KEPT = 4096
CODECS = ("vp8", "h264")
MIME = {"vp8": "video/VP8", "h264": "video/H264"}
DEFAULT_PARTICIPANTS = (2, 3, 4)
DEFAULT_RESOLUTIONS = ((640, 480), (1280, 720))
QUICK_RESOLUTIONS = ((320, 240),)
BASE_FIRST_FRAME = "bare aiortc pair: answer applied -> first decoded frame"
BASE_NEGOTIATE = "bare aiortc pair: createOffer -> answer applied"
CPU_NOTE = ("all participants, their codec threads and the embedded coordinator share this process: "
            "value = process CPU / participants; baseline = process CPU of one bare pair (1 encode + 1 decode, "
            "video only)")


class BenchmarkError(RuntimeError):
    """The benchmark could not run at all."""


# ---------------------------------------------------------------- plan and statistics


@dataclass(frozen=True)
class Plan:
    participants: tuple[int, ...]
    resolutions: tuple[tuple[int, int], ...]
    codecs: tuple[str, ...]
    seconds: float
    settle: float
    quick: bool = False

    @property
    def configs(self) -> list[tuple[tuple[int, int], str, int]]:
        return [(res, codec, n) for res in self.resolutions for codec in self.codecs for n in self.participants]


def _p(values: Sequence[float], q: float) -> float | None:
    return round(percentile(values, q), 2) if values else None


def sdp_video_codec(sdp: str | None) -> str | None:
    """The codec of the first payload type of the ``m=video`` section (what the answer chose)."""
    if not sdp:
        return None
    m = re.search(r"^m=video \d+ \S+ (\d+)", sdp, re.MULTILINE)
    if m is None:
        return None
    r = re.search(rf"^a=rtpmap:{m.group(1)} ([^/\s]+)/", sdp, re.MULTILINE)
    return r.group(1).lower() if r else None


async def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@dataclass
class _Snap:
    frames: int
    verified: int
    unreadable: int
    out_of_order: int
    latencies: int

    @classmethod
    def of(cls, c: StreamCheck) -> _Snap:
        return cls(c.frames, c.verified, c.unreadable, c.out_of_order, len(c.latencies_ms))


# ---------------------------------------------------------------- baseline: bare aiortc pair


class PatternTrack(VideoStreamTrack):
    """``TestPattern`` frames through aiortc's default path (``av.VideoFrame``, aiortc encodes)."""

    def __init__(self, width: int, height: int) -> None:
        super().__init__()
        self.pattern = TestPattern(width, height, fps=FPS)
        self.index = 0
        self.capture_times: dict[int, float] = {}

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        index = self.index
        self.index += 1
        frame = av.VideoFrame.from_ndarray(self.pattern.render(index), format="yuv420p")
        frame.pts, frame.time_base = pts, time_base
        self.capture_times[index] = time.time()
        if len(self.capture_times) > CAPTURE_TIMES_KEPT:
            for old in sorted(self.capture_times)[: CAPTURE_TIMES_KEPT // 4]:
                del self.capture_times[old]
        return frame


async def _consume_bare(track: MediaStreamTrack, check: StreamCheck, captures: dict[int, float]) -> None:
    """Read every decoded frame's index, like ``DemoBot`` does on the callrt side."""
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        now = time.time()
        check.frames += 1
        if check.first_frame_at is None:
            check.first_frame_at = time.perf_counter()
        if not isinstance(frame, av.VideoFrame):
            continue
        index = read_frame_index(VideoFrame(frame.to_ndarray(format="yuv420p")))
        if index is None:
            check.unreadable += 1
            continue
        if index <= check.last_index:
            check.out_of_order += 1
            continue
        check.last_index = index
        check.verified += 1
        captured = captures.get(index)
        if captured is not None:
            check.latencies_ms.append((now - captured) * 1000)


def _prefer(transceiver: RTCRtpTransceiver, codec: str) -> None:
    caps = RTCRtpSender.getCapabilities("video").codecs
    transceiver.setCodecPreferences([c for c in caps if c.mimeType.lower() == MIME[codec].lower()])


@dataclass
class BareResult:
    codec: str
    negotiated: str | None
    negotiate_ms: float
    first_frame_ms: float | None
    """From applying the answer to the first decoded frame."""
    first_frame_from_offer_ms: float | None
    fps: float
    frames_verified: int
    frames_unreadable: int
    frames_out_of_order: int
    latency_ms_p50: float | None
    latency_ms_p95: float | None
    cpu_percent: float
    window_s: float


async def run_bare(width: int, height: int, codec: str, settle: float, seconds: float) -> BareResult:
    """One bare loopback pair: negotiate, wait for the first frame, settle, measure a window."""
    proc = psutil.Process()
    pcs: list[RTCPeerConnection] = []
    tasks: list[asyncio.Task[None]] = []
    track = PatternTrack(width, height)
    check = StreamCheck()
    try:
        sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pcs.append(sender)
        receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pcs.append(receiver)

        @receiver.on("track")
        def on_track(remote: MediaStreamTrack) -> None:
            if remote.kind == "video":
                tasks.append(asyncio.ensure_future(_consume_bare(remote, check, track.capture_times)))

        t_offer = time.perf_counter()
        _prefer(sender.addTransceiver(track, direction="sendonly"), codec)
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        t_answer = time.perf_counter()
        await sender.setRemoteDescription(receiver.localDescription)
        negotiate_ms = (time.perf_counter() - t_offer) * 1000
        negotiated = sdp_video_codec(receiver.localDescription.sdp)
        await _wait_until(lambda: check.first_frame_at is not None, FIRST_FRAME_TIMEOUT_S)
        first = check.first_frame_at
        await asyncio.sleep(settle)
        before = _Snap.of(check)
        proc.cpu_percent(None)
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        cpu = proc.cpu_percent(None)
        window = time.perf_counter() - t0
        lat = check.latencies_ms[before.latencies:]
        return BareResult(
            codec=codec, negotiated=negotiated, negotiate_ms=negotiate_ms,
            first_frame_ms=(first - t_answer) * 1000 if first is not None else None,
            first_frame_from_offer_ms=(first - t_offer) * 1000 if first is not None else None,
            fps=(check.verified - before.verified) / window,
            frames_verified=check.verified - before.verified,
            frames_unreadable=check.unreadable - before.unreadable,
            frames_out_of_order=check.out_of_order - before.out_of_order,
            latency_ms_p50=_p(lat, 50), latency_ms_p95=_p(lat, 95), cpu_percent=cpu, window_s=window)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        track.stop()
        for pc in pcs:
            try:
                await pc.close()
            except Exception:
                logger.exception("closing a bare peer connection failed")


# ---------------------------------------------------------------- callrt: N participants in one call


@dataclass
class CallResult:
    participants: int
    codec: str
    negotiated: list[str]
    join_ms: list[float]
    first_frame_ms: list[float]
    """Per stream that delivered a frame: from the start of the later join of the pair."""
    fps: list[float]
    """Verified fps per expected stream (0 for a stream that delivered nothing)."""
    streams_expected: int
    streams_missing: list[str]
    frames_verified: int
    frames_unreadable: int
    frames_out_of_order: int
    frames_received: int
    """Frames the receive sinks took from aiortc in the window (verified or not, consumed or dropped)."""
    sink_dropped: int
    """Frames the bounded sinks evicted before the verifier read them, in the window."""
    latency_ms_p50: float | None
    latency_ms_p95: float | None
    audio_verified: bool
    process_cpu_percent: float
    window_s: float
    fanout: list[dict[str, Any]] = field(default_factory=list)
    loadavg: float | None = None
    """The machine's 1-minute load average at the end of the window (others' load makes figures noisy)."""

    @property
    def cpu_per_participant(self) -> float:
        return self.process_cpu_percent / self.participants


def _sink_counts(bot: DemoBot) -> tuple[int, int]:
    received = dropped = 0
    for remote in bot.call.remote_participants.values():
        if remote.video is not None:
            s = remote.video.stats()
            received += s.received
            dropped += s.dropped
    return received, dropped


def _fanout_stats(bot: DemoBot) -> dict[str, Any]:
    media = bot.call.media
    publisher = media.publishers.get("video") if media is not None else None
    if publisher is None:
        return {}
    s = publisher.fanout.stats()
    return {"user": bot.user_id, "frames_in": s.frames_in, "encodes": s.encodes, "keyframes": s.keyframes,
            "keyframe_requests": s.keyframe_requests, "bitrate": s.bitrate, "rebuilds": s.rebuilds,
            "peers": [{"mode": p.mode, "sent": p.sent, "dropped": p.dropped, "skipped": p.skipped,
                       "bandwidth": p.bandwidth} for p in s.peers]}


def _negotiated(bot: DemoBot) -> list[str]:
    media = bot.call.media
    out = []
    for link in (media.links.values() if media is not None else ()):
        answer = link.pc.remoteDescription if link.offerer else link.pc.localDescription
        out.append(sdp_video_codec(answer.sdp if answer is not None else None) or "?")
    return out


async def run_callrt(coordinator: EmbeddedCoordinator, n: int, width: int, height: int, codec: str,
                     settle: float, seconds: float, tag: str) -> CallResult:
    """N DemoBots in one call: sequential joins, wait for every stream, settle, measure a window."""
    proc = psutil.Process()
    api_key = coordinator.config.api_key
    call_id = f"e2e-{tag}"
    bots: list[DemoBot] = []
    try:
        for i in range(n):
            client = Client(coordinator.url, api_key=api_key, token=coordinator.user_token(f"{tag}-p{i}"))
            bots.append(DemoBot(i, client, call_id, width, height))
        registry = {b.user_id: b for b in bots}
        for b in bots:
            b.registry = registry
        t_start = time.perf_counter()
        for i, b in enumerate(bots):
            await asyncio.wait_for(b.join(create=(i == 0), codec=codec, width=width, height=height), JOIN_TIMEOUT_S)
        pairs = [(r, s) for r in bots for s in bots if r is not s]

        def all_flowing() -> bool:
            return all(s.user_id in r.checks and r.checks[s.user_id].first_frame_at is not None for r, s in pairs)

        t_joined = time.perf_counter()
        flowing = await _wait_until(all_flowing, FIRST_FRAME_TIMEOUT_S)
        logger.info("%s: %d joins in %.2f s, every stream %s after %.2f s more", call_id, n, t_joined - t_start,
                    "flowing" if flowing else "NOT flowing", time.perf_counter() - t_joined)
        await asyncio.sleep(settle)
        before = {(r.user_id, s.user_id): _Snap.of(r.checks.setdefault(s.user_id, StreamCheck())) for r, s in pairs}
        sinks_before = [_sink_counts(b) for b in bots]
        proc.cpu_percent(None)
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        cpu = proc.cpu_percent(None)
        window = time.perf_counter() - t0
        sinks_after = [_sink_counts(b) for b in bots]

        first_ms, fps, lat, missing = [], [], [], []
        verified = unreadable = out_of_order = 0
        for r, s in pairs:
            c, b0 = r.checks[s.user_id], before[(r.user_id, s.user_id)]
            if c.first_frame_at is not None:
                first_ms.append((c.first_frame_at - max(r.t_join, s.t_join)) * 1000)
            got = c.verified - b0.verified
            if got <= 0:
                missing.append(f"{s.user_id}->{r.user_id}")
            fps.append(got / window)
            verified += got
            unreadable += c.unreadable - b0.unreadable
            out_of_order += c.out_of_order - b0.out_of_order
            lat += c.latencies_ms[b0.latencies:]
        audio_ok = all(b.result(window, cpu / n).audio_verified for b in bots)
        return CallResult(
            participants=n, codec=codec, negotiated=sorted({c for b in bots for c in _negotiated(b)}),
            join_ms=[b.join_ms for b in bots], first_frame_ms=first_ms, fps=fps, streams_expected=len(pairs),
            streams_missing=missing, frames_verified=verified, frames_unreadable=unreadable,
            frames_out_of_order=out_of_order,
            frames_received=sum(a[0] - b[0] for a, b in zip(sinks_after, sinks_before, strict=True)),
            sink_dropped=sum(a[1] - b[1] for a, b in zip(sinks_after, sinks_before, strict=True)),
            latency_ms_p50=_p(lat, 50), latency_ms_p95=_p(lat, 95), audio_verified=audio_ok,
            process_cpu_percent=cpu, window_s=window, fanout=[_fanout_stats(b) for b in bots],
            loadavg=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None)
    finally:
        t_close = time.perf_counter()
        for b in bots:
            try:
                await asyncio.wait_for(b.aclose(), CLOSE_TIMEOUT_S)
            except Exception:
                logger.exception("closing %s failed", b.user_id)
        logger.info("%s: closed %d participants in %.2f s", call_id, len(bots), time.perf_counter() - t_close)


# ---------------------------------------------------------------- records


def config_records(call: CallResult, bare: BareResult, width: int, height: int, plan: Plan) -> list[Record]:
    n, codec = call.participants, call.codec
    res = f"{width}x{height}"
    bare_d = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(bare).items()}
    extra: dict[str, object] = {
        "participants": n, "codec": codec, "negotiated": call.negotiated, "window_s": round(call.window_s, 2),
        "settle_s": plan.settle, "quick": plan.quick,
        "join_ms": [round(x, 1) for x in call.join_ms],
        "first_frame_ms_per_stream": [round(x, 1) for x in call.first_frame_ms],
        "fps_per_stream": [round(x, 1) for x in call.fps],
        "streams_expected": call.streams_expected, "streams_missing": call.streams_missing,
        "frames_verified": call.frames_verified, "frames_unreadable": call.frames_unreadable,
        "frames_out_of_order": call.frames_out_of_order, "frames_received": call.frames_received,
        "sink_dropped": call.sink_dropped, "latency_ms_p50": call.latency_ms_p50,
        "audio_verified": call.audio_verified, "process_cpu_percent": round(call.process_cpu_percent, 1),
        "loadavg_1m": call.loadavg, "cpu_note": CPU_NOTE, "fanout": call.fanout, "bare": bare_d,
        "loop": event_loop.running_loop_name(),
        "baseline_frames_verified": bare.frames_verified,
        "notes": "joins are sequential; callrt first frame is timed from the start of the later join of each "
                 "pair (join + media socket + offer/answer + ICE/DTLS + keyframe); callrt also sends Opus audio",
    }
    label = f"{codec}, {n} participants"
    records: list[Record] = []

    def add(name: str, value: float | None, unit: str, baseline: str, baseline_value: float | None) -> None:
        if value is None or baseline_value is None:
            logger.warning("%s %s: no value for %s (value %s, baseline %s)", label, res, name, value, baseline_value)
            return
        records.append(Record(name=f"{label}: {name}", resolution=res, value=float(value), unit=unit,
                              baseline=baseline, baseline_value=float(baseline_value), extra=extra))

    add("join time p50", percentile(call.join_ms, 50), "ms", BASE_NEGOTIATE, bare.negotiate_ms)
    add("join time p95", percentile(call.join_ms, 95), "ms", BASE_NEGOTIATE, bare.negotiate_ms)
    ff = percentile(call.first_frame_ms, 50) if call.first_frame_ms else None
    add("time to first frame p50 (from join start)", ff, "ms", BASE_FIRST_FRAME, bare.first_frame_ms)
    add("received fps per stream (verified)", statistics.fmean(call.fps), "fps",
        "bare aiortc pair, verified fps", bare.fps)
    add("latency p95 (capture -> received)", call.latency_ms_p95, "ms",
        "bare aiortc pair, capture -> decoded p95", bare.latency_ms_p95)
    add("CPU per participant (process / N)", call.cpu_per_participant, "%cpu",
        "bare aiortc pair, process CPU", bare.cpu_percent)
    return records


# ---------------------------------------------------------------- the run


async def run_benchmark(plan: Plan) -> tuple[list[Record], list[str]]:
    """Every configuration, baseline then callrt; returns the records and the failures found."""
    configs = plan.configs
    progress = Progress(2 * len(configs) + 1, "e2e")
    records: list[Record] = []
    failures: list[str] = []
    run_tag = secrets.token_hex(3)
    coordinator = EmbeddedCoordinator(ServerConfig.from_env(db_path=":memory:"))
    try:
        await asyncio.to_thread(coordinator.start)
    except (OSError, RuntimeError) as exc:  # TimeoutError is an OSError
        await asyncio.to_thread(coordinator.stop)
        raise BenchmarkError(f"the embedded coordinator did not start: {exc}") from exc
    try:
        progress.step(f"coordinator at {coordinator.url}")
        for k, ((w, h), codec, n) in enumerate(configs):
            res = f"{w}x{h}"
            gc.collect()
            await asyncio.sleep(0.2)  # let closed peer connections' threads wind down
            bare = await run_bare(w, h, codec, plan.settle, plan.seconds)
            if bare.negotiated != codec:
                failures.append(f"bare {codec} {res}: negotiated {bare.negotiated}")
            if bare.frames_verified <= 0:
                failures.append(f"bare {codec} {res}: no verified frame")
            progress.step(f"bare {codec} {res}: first frame {_f(bare.first_frame_ms)} ms, {bare.fps:.1f} fps, "
                          f"CPU {bare.cpu_percent:.0f}%")
            gc.collect()
            await asyncio.sleep(0.2)
            call = await run_callrt(coordinator, n, w, h, codec, plan.settle, plan.seconds, f"{run_tag}-{k}")
            if call.streams_missing:
                failures.append(f"callrt {n}p {codec} {res}: no verified frame on {', '.join(call.streams_missing)}")
            if call.negotiated != [codec]:
                failures.append(f"callrt {n}p {codec} {res}: negotiated {call.negotiated}")
            progress.step(f"callrt {n}p {codec} {res}: join p50 {percentile(call.join_ms, 50):.0f} ms, "
                          f"{statistics.fmean(call.fps):.1f} fps/stream, {call.frames_verified} frames verified, "
                          f"CPU {call.process_cpu_percent:.0f}% ({call.cpu_per_participant:.0f}%/participant)")
            records += config_records(call, bare, w, h, plan)
    finally:
        await asyncio.to_thread(coordinator.stop)
    return records, failures


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


# ---------------------------------------------------------------- command line


def _ints(spec: str) -> tuple[int, ...]:
    out = tuple(int(x) for x in spec.split(",") if x.strip())
    if not out or any(x < 2 for x in out):
        raise argparse.ArgumentTypeError("participants must be integers >= 2, e.g. 2,3,4")
    return out


def _resolutions(spec: str) -> tuple[tuple[int, int], ...]:
    out = []
    for item in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)x(\d+)\s*", item.lower())
        if m is None:
            raise argparse.ArgumentTypeError(f"bad resolution {item!r}: use WxH, e.g. 640x480")
        w, h = int(m.group(1)), int(m.group(2))
        if w % 2 or h % 2 or w < 32 or h < 16:
            raise argparse.ArgumentTypeError(f"bad resolution {item!r}: even sizes, at least 32x16")
        out.append((w, h))
    return tuple(out)


def _codecs(spec: str) -> tuple[str, ...]:
    out = tuple(x.strip().lower() for x in spec.split(",") if x.strip())
    if not out or any(x not in CODECS for x in out):
        raise argparse.ArgumentTypeError(f"codecs must be among {', '.join(CODECS)}")
    return out


def _seconds(spec: str) -> float:
    value = float(spec)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.e2e", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="2 participants, 320x240, VP8, 1.5 s window (a smoke run); other flags still apply")
    p.add_argument("--participants", type=_ints, default=None, help="comma list (default 2,3,4)")
    p.add_argument("--resolutions", type=_resolutions, default=None, help="comma list (default 640x480,1280x720)")
    p.add_argument("--codecs", type=_codecs, default=None, help="comma list (default vp8,h264)")
    p.add_argument("--seconds", type=_seconds, default=None, help="measuring window per run (default 5; --quick 1.5)")
    p.add_argument("--settle", type=float, default=None,
                   help="seconds between the first frames and the window (default 1; --quick 0.3)")
    p.add_argument("--json", metavar="PATH", help="write the records as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the markdown table to this file too")
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


def make_plan(args: argparse.Namespace) -> Plan:
    q = args.quick
    return Plan(
        participants=args.participants or ((2,) if q else DEFAULT_PARTICIPANTS),
        resolutions=args.resolutions or (QUICK_RESOLUTIONS if q else DEFAULT_RESOLUTIONS),
        codecs=args.codecs or (("vp8",) if q else CODECS),
        seconds=args.seconds or (1.5 if q else 5.0),
        settle=max(0.0, args.settle if args.settle is not None else (0.3 if q else 1.0)),
        quick=q,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    plan = make_plan(args)
    t0 = time.perf_counter()
    try:
        records, failures = event_loop.run(run_benchmark(plan))  # the loop callrt's command runs bots on
    except BenchmarkError as exc:
        print(f"benchmarks.e2e: {exc}", file=sys.stderr)
        return 1
    title = (f"End to end: callrt call vs bare aiortc loopback pair ({plan.seconds:g} s windows"
             f"{', --quick' if plan.quick else ''}; CPU per participant = process CPU / N)")
    publish(records, title, args.json, args.markdown)
    for failure in failures:
        print(f"benchmarks.e2e: FAILED: {failure}", file=sys.stderr)
    print(f"benchmarks.e2e: done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
