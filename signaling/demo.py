"""``callrt demo``, the main job: an embedded coordinator and N bots in one call, media verified.

Each bot publishes a ``TestPattern`` (frame index drawn into the pixels) and its own tone.
Every bot receives every other bot and checks, per frame, that the index can be read and
comes in order, how long after capture it arrived (all bots share this process, so the
sender's capture time of each index is known), and by FFT that the tone is the sender's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import psutil

from devices import TestPattern, Tone, dominant_frequency, read_frame_index
from devices.tone import FREQ_TOLERANCE_HZ
from media.errors import CallrtError
from media.frames import VideoFrame
from media.source import VideoSource
from signaling.call import Call
from signaling.cli_args import parse_resolution
from signaling.client import Client
from signaling.errors import InvalidRequest
from signaling.event_loop import running_loop_name
from signaling.rtc.remote import RemoteParticipant, RemoteTrack
from signaling.server.config import ServerConfig
from signaling.server.embedded import EmbeddedCoordinator
from signaling.tables import table

logger = logging.getLogger(__name__)

TONE_BASE_HZ = 440.0
TONE_STEP_HZ = 110.0


class StampedPattern(VideoSource):
    """A ``TestPattern`` that remembers when each frame index was captured (for latency)."""

    def __init__(self, pattern: TestPattern) -> None:
        self.pattern = pattern
        self.capture_times: dict[int, float] = {}

    @property
    def name(self) -> str:
        return self.pattern.name

    @property
    def running(self) -> bool:
        return self.pattern.running

    async def start(self) -> None:
        await self.pattern.start()

    async def stop(self) -> None:
        await self.pattern.stop()

    async def recv(self) -> VideoFrame:
        index = self.pattern.frame_index
        frame = await self.pattern.recv()
        self.capture_times[index] = frame.capture_time
        if len(self.capture_times) > 4096:
            for old in sorted(self.capture_times)[:1024]:
                del self.capture_times[old]
        return frame


@dataclass
class StreamCheck:
    """What one bot verified about one remote bot's media."""

    frames: int = 0
    verified: int = 0
    unreadable: int = 0
    out_of_order: int = 0
    last_index: int = -1
    first_frame_at: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    audio: list[np.ndarray] = field(default_factory=list)
    audio_rate: int = 48_000


@dataclass
class BotResult:
    user_id: str
    join_ms: float
    first_frame_ms: float | None
    video_fps: float
    frames_verified: int
    frames_unreadable: int
    frames_out_of_order: int
    audio_verified: bool
    audio_hz: dict[str, float]
    latency_ms_p50: float | None
    latency_ms_p95: float | None
    latency_ms_trend: float | None
    """p50 latency of the last third minus the first third: growing latency means falling behind."""
    cpu_percent: float


class DemoBot:
    """One participant of the demo and its receive-side checks."""

    def __init__(self, index: int, client: Client, call_id: str, width: int, height: int) -> None:
        self.index = index
        self.client = client
        self.user_id = client.user_id or f"bot{index}"
        self.call: Call = client.call("default", call_id)
        self.source = StampedPattern(TestPattern(width, height, fps=30))
        self.frequency = TONE_BASE_HZ + TONE_STEP_HZ * index
        self.checks: dict[str, StreamCheck] = {}
        self.join_ms = 0.0
        self.t_join = 0.0
        self.registry: dict[str, DemoBot] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self.call.on("track.added", self._on_track)

    async def join(self, create: bool, codec: str, width: int, height: int) -> None:
        await self.call.camera.select(self.source)
        await self.call.microphone.select(Tone(self.frequency, level=0.4))
        self.t_join = time.perf_counter()
        data = {"settings_override": {"video": {"codec": codec,
                                                "target_resolution": {"width": width, "height": height}}}}
        await self.call.join(create=create, data=data if create else None)
        self.join_ms = (time.perf_counter() - self.t_join) * 1000

    def _on_track(self, track: RemoteTrack) -> None:
        sender = track.participant.user_id
        check = self.checks.setdefault(sender, StreamCheck())
        consume = self._consume_video if track.kind == "video" else self._consume_audio
        self._tasks.append(asyncio.ensure_future(consume(track.participant, check)))

    async def _consume_video(self, remote: RemoteParticipant, check: StreamCheck) -> None:
        assert remote.video is not None
        sender = self.registry.get(remote.user_id)
        async for frame in remote.video:
            now = time.time()
            check.frames += 1
            if check.first_frame_at is None:
                check.first_frame_at = time.perf_counter()
            index = read_frame_index(frame)
            if index is None:
                check.unreadable += 1
                continue
            if index <= check.last_index:
                check.out_of_order += 1
                continue
            check.last_index = index
            check.verified += 1
            captured = sender.source.capture_times.get(index) if sender else None
            if captured is not None:
                check.latencies_ms.append((now - captured) * 1000)

    async def _consume_audio(self, remote: RemoteParticipant, check: StreamCheck) -> None:
        assert remote.audio is not None
        async for frame in remote.audio:
            check.audio_rate = frame.sample_rate
            check.audio.append(frame.samples.copy())
            if len(check.audio) > 100:  # keep the last 2 s
                del check.audio[:-100]

    def result(self, seconds: float, cpu_share: float) -> BotResult:
        firsts = [c.first_frame_at for c in self.checks.values() if c.first_frame_at is not None]
        lat = sorted(x for c in self.checks.values() for x in c.latencies_ms)
        hz = {}
        for user, c in self.checks.items():
            if c.audio:
                hz[user] = round(dominant_frequency(np.concatenate(c.audio), c.audio_rate), 1)
        expected = {b.user_id: b.frequency for b in self.registry.values() if b is not self}
        audio_ok = bool(expected) and all(abs(hz.get(u, 0.0) - f) <= FREQ_TOLERANCE_HZ for u, f in expected.items())
        trend = None
        if len(lat) >= 30:
            seq = [x for c in self.checks.values() for x in c.latencies_ms]
            third = len(seq) // 3
            trend = statistics.median(seq[-third:]) - statistics.median(seq[:third])
        senders = max(1, len(expected))
        return BotResult(
            user_id=self.user_id, join_ms=round(self.join_ms, 1),
            first_frame_ms=round((min(firsts) - self.t_join) * 1000, 1) if firsts else None,
            video_fps=round(sum(c.verified for c in self.checks.values()) / senders / seconds, 1),
            frames_verified=sum(c.verified for c in self.checks.values()),
            frames_unreadable=sum(c.unreadable for c in self.checks.values()),
            frames_out_of_order=sum(c.out_of_order for c in self.checks.values()),
            audio_verified=audio_ok, audio_hz=hz,
            latency_ms_p50=round(lat[len(lat) // 2], 1) if lat else None,
            latency_ms_p95=round(lat[int(len(lat) * 0.95)], 1) if lat else None,
            latency_ms_trend=round(trend, 1) if trend is not None else None,
            cpu_percent=round(cpu_share, 1),
        )

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()


@dataclass
class DemoReport:
    url: str
    bots: int
    seconds: float
    codec: str
    resolution: str
    process_cpu_percent: float
    participants: list[BotResult]
    ok: bool
    loop: str = "asyncio"
    """The event loop the bots ran on (``signaling.event_loop``)."""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["participants"] = [asdict(p) for p in self.participants]
        return d


def _fmt(v: Any) -> str:
    return "-" if v is None else str(v)


def render_table(report: DemoReport) -> str:
    rows = [[p.user_id, p.join_ms, _fmt(p.first_frame_ms), p.video_fps, p.frames_verified,
             "yes" if p.audio_verified else "NO", _fmt(p.latency_ms_p50), _fmt(p.latency_ms_p95),
             _fmt(p.latency_ms_trend), p.cpu_percent] for p in report.participants]
    head = ["participant", "join ms", "first frame ms", "fps", "frames verified", "audio", "latency p50",
            "p95", "trend", "CPU %"]
    verdict = "OK: every stream verified" if report.ok else "FAILED: some media was not verified"
    return (f"{report.bots} bots, {report.seconds:g}s, {report.codec} {report.resolution}, "
            f"process CPU {report.process_cpu_percent:.0f}% of one core, {report.loop} loop\n"
            + table(rows, head) + f"\n{verdict}")


async def run_demo(*, bots: int = 2, seconds: float = 10.0, codec: str = "vp8", resolution: str = "640x480",
                   snapshot: str | None = None, progress: bool = True, url: str | None = None,
                   api_key: str | None = None, api_secret: str | None = None,
                   call_id: str | None = None) -> DemoReport:
    """Run the demo against ``url`` (or an embedded coordinator) and return the verified report.

    Bad arguments raise ``InvalidRequest`` before anything starts, an unwritable ``snapshot`` included;
    a snapshot that cannot be written at the end raises ``SnapshotFailed``.
    """
    width, height = parse_resolution(resolution)
    if bots < 2:
        raise InvalidRequest(f"the demo needs at least 2 bots, got {bots}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidRequest(f"the demo runs for a number of seconds > 0, got {seconds}")
    if snapshot:
        check_snapshot_path(snapshot)
    config = ServerConfig.from_env()
    coordinator = None
    if url is None:
        coordinator = EmbeddedCoordinator(config)
        await asyncio.to_thread(coordinator.start)
        url, api_key, api_secret = coordinator.url, config.api_key, config.api_secret
    assert api_key and api_secret
    from signaling.tokens import TokenIssuer

    issuer = TokenIssuer(api_key, api_secret)
    call_id = call_id or f"demo-{int(time.time())}"
    if progress:
        sys.stderr.write(f"call default:{call_id} on {url}; watch it at {url}/call/default/{call_id}\n")
    members: list[DemoBot] = []
    proc = psutil.Process()
    try:
        for i in range(bots):
            client = Client(url, api_key=api_key, token=issuer.create_user_token(f"bot{i}"))
            members.append(DemoBot(i, client, call_id, width, height))
        registry = {b.user_id: b for b in members}
        for b in members:
            b.registry = registry
        for i, b in enumerate(members):
            await b.join(create=(i == 0), codec=codec, width=width, height=height)
        proc.cpu_percent(None)
        t0 = time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            await asyncio.sleep(min(1.0, seconds - elapsed))
            if progress:
                _progress_line(members, time.perf_counter() - t0, seconds)
        cpu = proc.cpu_percent(None)
        if progress and sys.stderr.isatty():
            sys.stderr.write("\n")
        if snapshot:
            await asyncio.to_thread(_save_snapshot, members[0], snapshot)
        results = [b.result(seconds, cpu / bots) for b in members]
        ok = all(r.audio_verified and r.frames_verified > 0 and r.frames_out_of_order == 0 for r in results)
        return DemoReport(url=url, bots=bots, seconds=seconds, codec=codec, resolution=resolution,
                          process_cpu_percent=round(cpu, 1), participants=results, ok=ok,
                          loop=running_loop_name())
    finally:
        for b in members:
            try:
                await b.aclose()
            except Exception:
                logger.exception("closing %s failed", b.user_id)
        if coordinator is not None:
            await asyncio.to_thread(coordinator.stop)


def _progress_line(members: list[DemoBot], elapsed: float, total: float) -> None:
    frames = sum(c.verified for b in members for c in b.checks.values())
    streams = sum(1 for b in members for c in b.checks.values() if c.frames)
    lat = sorted(x for b in members for c in b.checks.values() for x in c.latencies_ms[-60:])
    p95 = f"{lat[int(len(lat) * 0.95)]:.0f} ms" if lat else "-"
    fps = frames / max(elapsed, 1e-6) / max(streams, 1)
    msg = (f"\r[{elapsed:4.1f}/{total:g}s] {len(members)} bots joined, {streams} video streams, "
           f"{frames} frames verified, {fps:.1f} fps/stream, latency p95 {p95}   ")
    sys.stderr.write(msg if sys.stderr.isatty() else msg.strip("\r ") + "\n")
    sys.stderr.flush()


class SnapshotFailed(CallrtError):
    """``callrt demo --snapshot``: no frame was received, or the image could not be written."""

    code = "snapshot_failed"
    status = 500


def check_snapshot_path(path: str) -> None:
    """Raise ``InvalidRequest`` unless an image can be written at ``path``: its folder exists and is
    writable, and OpenCV has a writer for its extension (.png, .jpg, ...)."""
    from media._opencv import cv2

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InvalidRequest(f"--snapshot {path}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise InvalidRequest(f"--snapshot {path}: is a folder; name a file in it, e.g. "
                             f"{os.path.join(path, 'demo.png')}")
    if not os.access(folder, os.W_OK):
        raise InvalidRequest(f"--snapshot {path}: the folder {folder} is not writable")
    if not cv2.haveImageWriter(path):
        raise InvalidRequest(f"--snapshot {path}: OpenCV cannot write this kind of image; "
                             "end the name with .png or .jpg")


def _save_snapshot(bot: DemoBot, path: str) -> None:
    from media._opencv import cv2

    images = []
    for remote in bot.call.remote_participants.values():
        if remote.video is not None:
            bgr = remote.video.to_bgr()
            if bgr is not None:
                images.append(bgr.copy())
    if not images:
        raise SnapshotFailed(f"--snapshot {path}: no frame was received to save")
    height = min(i.shape[0] for i in images)
    try:
        written = cv2.imwrite(path, np.hstack([i[:height] for i in images]))
    except cv2.error as exc:
        raise SnapshotFailed(f"--snapshot {path}: OpenCV could not write it ({exc})") from exc
    if not written:
        raise SnapshotFailed(f"--snapshot {path}: OpenCV could not write it")


async def run_demo_cli(args: argparse.Namespace) -> int:
    remote = {}
    if args.against_url:  # bots in a call on a running coordinator (e.g. to watch it in the browser)
        remote = {"url": args.url, "api_key": args.api_key, "api_secret": args.api_secret}
        if not args.api_key or not args.api_secret:
            raise InvalidRequest("--against-url needs the API key and secret (CALLRT_API_KEY/CALLRT_API_SECRET)")
    report = await run_demo(bots=args.bots, seconds=args.seconds, codec=args.codec, resolution=args.resolution,
                            snapshot=args.snapshot, progress=not args.json, call_id=args.call_id, **remote)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(render_table(report))
        if args.snapshot:
            print(f"received frames saved to {args.snapshot}")
    return 0 if report.ok else 1
