"""Real aiortc peer connections over loopback: fan-out CPU and end-to-end CPU per frame.

Fan-out: one paced BGR camera is sent to N receiving peers. The receivers live in a child
process (spawned once, reused), so the CPU of this process is the sender's alone: the figure
is % of one core over a measuring window, for callrt's encode-once fan-out against aiortc's
per-peer encoding (one encoder per ``RTCRtpSender``; see ``BgrBroadcast`` for why not
``MediaRelay``).

End to end: sender and receiver in this process (as the issue measured), camera BGR ->
encoder -> RTP/SRTP/UDP -> jitter buffer -> decoder -> NumPy, callrt's side with the receive hook
a call installs (``media.receive_path.prepare_receiver``); CPU time of the whole process
divided by frames received, against the isolated sum of the same conversion, encode and
decode measured with the same settings in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, cast

import av
import numpy as np
import numpy.typing as npt
import psutil
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs.vpx import Vp8Encoder

from benchmarks import _threads
from benchmarks._report import Record
from media._opencv import cv2
from media.codecs import VideoEncoder, VideoEncoderSettings
from media.convert import Converter
from media.fanout import EncodedVideoFanout
from media.frames import VIDEO_TIME_BASE, VideoFrame
from media.receive_path import prepare_receiver
from media.sinks import VideoSink
from media.source import SourceEnded, VideoSource
from media.testing import draw_index, read_index, render_pattern
from signaling import event_loop

FPS = 30.0
BITRATE = 1_500_000  # aiortc's VP8 cap, which its REMB ramp reaches on loopback


def _aiortc_starts_at_our_bitrate() -> None:
    """Start aiortc's VP8 encoders at ``BITRATE`` too (its default is 500 kbps, ramping up on REMB).

    Without this the two sides would encode different amounts of data for the first seconds and
    the CPU comparison would measure bitrates, not pipelines. aiortc still clamps and rebuilds
    on REMB as it always does.
    """
    import aiortc.codecs.vpx as vpx

    vpx.DEFAULT_BITRATE = BITRATE


def _config() -> RTCConfiguration:
    return RTCConfiguration(iceServers=[])


def fixed_settings(bitrate: int = BITRATE) -> VideoEncoderSettings:
    return VideoEncoderSettings(codec="vp8", bitrate=bitrate, min_bitrate=bitrate, max_bitrate=bitrate, fps=FPS)


class BgrCamera:
    """Paced BGR frames (pre-rendered, carrying their index), like an OpenCV camera."""

    def __init__(self, width: int, height: int, fps: float = FPS) -> None:
        frames: list[npt.NDArray[np.uint8]] = []
        for i, data in enumerate(render_pattern(width, height, 30)):
            f = VideoFrame(data)
            draw_index(f, i)
            frames.append(np.ascontiguousarray(cv2.cvtColor(f.data, cv2.COLOR_YUV2BGR_I420), dtype=np.uint8))
        self.frames = frames
        self.period = 1.0 / fps
        self.t0 = time.monotonic()
        self.n = 0
        self.base = 0
        """Frames before the last pause: pts go on from there. FFmpeg's libvpx encoder refuses a pts
        that goes back, and aiortc's sender ends at that error: with pts restarting at 0 on
        resume, aiortc's stream stopped at the first pause and its later turns measured idle CPU."""
        self.running = asyncio.Event()
        self.running.set()

    async def next(self) -> tuple[np.ndarray, int]:
        if not self.running.is_set():  # paused: the peers idle while the isolated stages are measured
            await self.running.wait()
            self.t0, self.base, self.n = time.monotonic(), self.base + self.n, 0
        due = self.t0 + self.n * self.period
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > 2 * self.period:
            self.n = int((now - self.t0) / self.period)
        i = self.base + self.n
        self.n += 1
        return self.frames[i % len(self.frames)], int(i * 90_000 / FPS)


class ConvertingSource(VideoSource):
    """callrt's path: the BGR camera converted to I420 by OpenCV into reused buffers."""

    def __init__(self, camera: BgrCamera) -> None:
        self.camera = camera
        self.converter = Converter()
        self._running = True

    @property
    def name(self) -> str:
        return "bgr-camera"

    @property
    def running(self) -> bool:
        return self._running

    async def start(self) -> None:
        self._running = True

    async def stop(self) -> None:
        self._running = False

    async def recv(self) -> VideoFrame:
        if not self._running:
            raise SourceEnded(self.name)
        bgr, pts = await self.camera.next()
        return self.converter.to_frame(bgr, pts=pts)


class AiortcBgrTrack(MediaStreamTrack):
    """aiortc's default path: ``VideoFrame.from_ndarray(bgr24)``; its encoder reformats.

    Fed by the camera directly or by a ``BgrBroadcast`` queue (one track per peer).
    """

    kind = "video"

    def __init__(self, camera: BgrCamera | None = None, queue: asyncio.Queue[Any] | None = None) -> None:
        super().__init__()
        self.camera = camera
        self.queue = queue

    async def recv(self) -> av.VideoFrame:
        if self.queue is not None:
            bgr, pts = await self.queue.get()
        else:
            assert self.camera is not None
            bgr, pts = await self.camera.next()
        frame = av.VideoFrame.from_ndarray(bgr, format="bgr24")
        frame.pts, frame.time_base = pts, VIDEO_TIME_BASE
        return frame


class BgrBroadcast:
    """One camera to N aiortc tracks, each making its own ``av.VideoFrame``.

    Not ``MediaRelay``: it hands the same ``av.VideoFrame`` to every sender, whose encoders then
    call ``frame.reformat()`` concurrently from executor threads on the frame's one cached
    swscale context, which crashes the process (seen here with PyAV 18). Per-peer frames are what
    a working aiortc application has to do, and cost one extra BGR copy per peer.
    """

    def __init__(self, camera: BgrCamera, peers: int) -> None:
        self.queues: list[asyncio.Queue[Any]] = [asyncio.Queue(maxsize=2) for _ in range(peers)]
        self.tracks = [AiortcBgrTrack(queue=q) for q in self.queues]
        self.camera = camera
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            item = await self.camera.next()
            for q in self.queues:
                if q.full():
                    q.get_nowait()
                q.put_nowait(item)

    async def aclose(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def _cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


# -- receiver process ------------------------------------------------------------------------


def receiver_process(conn: Connection, loop: str) -> None:
    """Child process entry: answers offers, drains every track with a VideoSink, reports counts."""
    event_loop.run(_receiver_main(conn), loop=loop)


async def _receiver_main(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    peers: list[tuple[RTCPeerConnection, list[VideoSink]]] = []
    while True:
        msg = await loop.run_in_executor(None, conn.recv)
        if msg[0] == "offers":
            answers = []
            for sdp in msg[1]:
                pc = RTCPeerConnection(_config())
                sinks: list[VideoSink] = []
                pc.on("track", lambda t, sinks=sinks: sinks.append(VideoSink(t)))
                await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                answers.append(pc.localDescription.sdp)
                peers.append((pc, sinks))
            conn.send(("answers", answers))
        elif msg[0] == "report":
            report = []
            for _, sinks in peers:
                got = sinks[0].received if sinks else 0
                latest = sinks[0].latest() if sinks else None
                report.append((got, read_index(latest) if latest is not None else -1))
            conn.send(("report", report))
        elif msg[0] == "close":
            for pc, sinks in peers:
                for s in sinks:
                    await s.aclose()
                await pc.close()
            peers.clear()
            conn.send(("closed",))
        else:
            break


class ReceiverProcess:
    """The spawned receiver child and its pipe; the child runs on the same kind of loop as its creator."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        loop = event_loop.running_loop_name()  # the pipeline's --loop reaches both ends of a fan-out
        self.proc = ctx.Process(target=receiver_process, args=(child, loop), daemon=True)
        self.proc.start()

    async def call(self, msg: tuple[Any, ...], timeout: float = 60.0) -> Any:
        loop = asyncio.get_running_loop()
        self.conn.send(msg)
        ready = await loop.run_in_executor(None, self.conn.poll, timeout)
        if not ready:
            raise TimeoutError(f"receiver process did not answer {msg[0]!r}")
        return self.conn.recv()

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(("exit",))
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


@dataclass
class FanoutResult:
    cpu_pct: float
    encodes_per_frame: float | None
    received: list[int]
    content_ok: bool


async def fanout_once(rx: ReceiverProcess, mode: str, peers: int, width: int, height: int,
                      warmup: float, window: float) -> FanoutResult:
    camera = BgrCamera(width, height)
    pcs = [RTCPeerConnection(_config()) for _ in range(peers)]
    fanout: EncodedVideoFanout | None = None
    broadcast: BgrBroadcast | None = None
    if mode == "callrt":
        fanout = EncodedVideoFanout(ConvertingSource(camera), settings=fixed_settings())
        for pc in pcs:
            fanout.add_to(pc)
    else:
        broadcast = BgrBroadcast(camera, peers)
        for pc, track in zip(pcs, broadcast.tracks, strict=True):
            pc.addTrack(track)
    offers = []
    for pc in pcs:
        await pc.setLocalDescription(await pc.createOffer())
        offers.append(pc.localDescription.sdp)
    _, answers = await rx.call(("offers", offers))
    for pc, sdp in zip(pcs, answers, strict=True):
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
    await asyncio.sleep(warmup)
    proc = psutil.Process()
    _, before = await rx.call(("report",))
    enc0 = fanout.encodes_done if fanout else 0
    frames0 = fanout.frames_handled if fanout else 0
    c0, t0 = _cpu_seconds(proc), time.monotonic()
    await asyncio.sleep(window)
    c1, t1 = _cpu_seconds(proc), time.monotonic()
    _, after = await rx.call(("report",))
    encodes_per_frame = None
    if fanout is not None:
        frames = fanout.frames_handled - frames0  # both counters move together on the loop, so a frame
        encodes_per_frame = (fanout.encodes_done - enc0) / frames if frames else None  # never straddles
    received = [a[0] - b[0] for a, b in zip(after, before, strict=True)]
    content_ok = all(r > 0 for r in received) and all(idx >= 0 for _, idx in after)
    await rx.call(("close",))
    for pc in pcs:
        await pc.close()
    if fanout is not None:
        await fanout.aclose()
    if broadcast is not None:
        await broadcast.aclose()
    return FanoutResult(100.0 * (c1 - c0) / (t1 - t0), encodes_per_frame, received, content_ok)


def _combine(turns: list[FanoutResult]) -> FanoutResult:
    """One figure from equal-length turns: mean CPU, frames summed per peer."""
    per_frame = [t.encodes_per_frame for t in turns if t.encodes_per_frame is not None]
    return FanoutResult(
        sum(t.cpu_pct for t in turns) / len(turns),
        sum(per_frame) / len(per_frame) if per_frame else None,
        [sum(col) for col in zip(*(t.received for t in turns), strict=True)],
        all(t.content_ok for t in turns),
    )


async def fanout_records(peer_counts: list[int], width: int, height: int, warmup: float, window: float,
                         step: Any, rounds: int = 3) -> list[Record]:
    """Fan-out CPU per peer count, both engines. The machine's speed drifts (see ``e2e_interleaved``),
    and the scaling figure divides one peer count's CPU by another's, so every configuration is
    measured in ``rounds`` turns of ``window / rounds``, the configurations taking turns."""
    _aiortc_starts_at_our_bitrate()
    rx = ReceiverProcess()
    records: list[Record] = []
    res = f"{width}x{height}"
    turn = window / rounds
    try:
        our_turns: dict[int, list[FanoutResult]] = {n: [] for n in peer_counts}
        their_turns: dict[int, list[FanoutResult]] = {n: [] for n in peer_counts}
        for r in range(rounds):
            for n in peer_counts:
                our_turns[n].append(await fanout_once(rx, "callrt", n, width, height, warmup, turn))
                if r == rounds - 1:
                    step(f"fan-out callrt {n} peers")
                their_turns[n].append(await fanout_once(rx, "aiortc", n, width, height, warmup, turn))
                if r == rounds - 1:
                    step(f"fan-out aiortc {n} peers")
        ours = {n: _combine(t) for n, t in our_turns.items()}
        theirs = {n: _combine(t) for n, t in their_turns.items()}
        for n in peer_counts:
            o, t = ours[n], theirs[n]
            records.append(Record(
                f"fan-out sender CPU, {n} peer{'s' if n > 1 else ''} (encode once)", o.cpu_pct, "%cpu", res,
                "aiortc per-peer encoding", t.cpu_pct,
                extra={"encodes_per_frame": o.encodes_per_frame, "frames_received_per_peer": o.received,
                       "content_verified": o.content_ok, "aiortc_frames_received_per_peer": t.received,
                       "fps_per_peer": round(min(o.received) / window, 1),
                       "aiortc_fps_per_peer": round(min(t.received) / window, 1),
                       "measured": f"{rounds} turns of {turn:g} s, configurations alternating"},
            ))
        first = peer_counts[0]
        for n in peer_counts[1:]:
            records.append(Record(
                f"fan-out CPU scaling {n} peers / {first} peer (encode once)", ours[n].cpu_pct / ours[first].cpu_pct,
                "x", res, f"aiortc scaling {n} / {first}", theirs[n].cpu_pct / theirs[first].cpu_pct,
            ))
    finally:
        rx.close()
    return records


# -- end to end --------------------------------------------------------------------------------


async def _e2e_pair(mode: str, camera: BgrCamera) -> tuple[RTCPeerConnection, RTCPeerConnection, Any, Any]:
    a, b = RTCPeerConnection(_config()), RTCPeerConnection(_config())
    fanout = None
    if mode == "callrt":
        fanout = EncodedVideoFanout(ConvertingSource(camera), settings=fixed_settings())
        fanout.add_to(a)
    else:
        a.addTrack(AiortcBgrTrack(camera))
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def on_track(track: MediaStreamTrack) -> None:
        if mode == "callrt":  # callrt's receive path, as signaling.rtc.peer sets it up in a call
            for t in b.getTransceivers():
                if t.receiver.track is track:
                    prepare_receiver(t.receiver)
        got.set_result(VideoSink(track) if mode == "callrt" else _AiortcConsumer(track))

    b.on("track", on_track)
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    return a, b, fanout, await got


class _AiortcConsumer:
    """The usual aiortc receive loop: ``await track.recv()`` then ``to_ndarray()``."""

    def __init__(self, track: MediaStreamTrack) -> None:
        self.track = track
        self.received = 0
        self.last: np.ndarray | None = None
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = cast(av.VideoFrame, await self.track.recv())
                self.last = frame.to_ndarray()
                self.received += 1

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@dataclass
class E2eResult:
    """End-to-end CPU per frame against the isolated stage sum, over all turns and turn by turn."""

    per_frame_ms: float
    frames: int
    content_verified: bool
    turns: list[tuple[float, float, float]]
    """(end to end, paced, back to back) ms per frame of each turn: the spread of the ratio."""
    threads_ms: dict[str, float]
    """End to end, ms per frame by thread role (``benchmarks._threads.ROLES``): where the CPU went."""
    paced_stages_ms: dict[str, float]
    """The isolated sum paced at the camera's rate, by stage (``ISOLATED_STAGES``)."""
    back_to_back_stages_ms: dict[str, float]

    @property
    def paced_ms(self) -> float:
        """The isolated sum paced at the camera's rate."""
        return sum(self.paced_stages_ms.values())

    @property
    def back_to_back_ms(self) -> float:
        return sum(self.back_to_back_stages_ms.values())


async def e2e_interleaved(mode: str, width: int, height: int, warmup: float, window: float, iso_frames: int,
                          rounds: int = 3) -> E2eResult:
    """End-to-end CPU per frame and the isolated stage sum (paced and back to back), measured in turns.

    The machine's speed drifts (a shared VM: the same stage measured 1.9 and 3.4 ms an hour
    apart), so the two sides of the ratio are taken in ``rounds`` alternating turns: an
    end-to-end window of ``window / rounds`` with the peers running, then the isolated stages for
    ``iso_frames / rounds`` frames with the camera paused (the peers idle: no frames, only their
    timers), back to back and again paced at the camera's rate. Each side is its total CPU over
    its total frames; ``turns`` keeps each turn's own figures, whose ratios show the spread.
    """
    camera = BgrCamera(width, height)
    a, b, fanout, consumer = await _e2e_pair(mode, camera)
    iso_step = _isolated_step(mode, width, height)
    e2e_cpu = 0.0
    roles = dict.fromkeys(_threads.ROLES, 0.0)
    paced_stages = dict.fromkeys(ISOLATED_STAGES, 0.0)
    b2b_stages = dict.fromkeys(ISOLATED_STAGES, 0.0)
    frames = iso_done = 0
    ok = True
    turns: list[tuple[float, float, float]] = []
    try:
        await asyncio.sleep(warmup)
        for i in range(rounds):
            if i:
                camera.running.set()
                await asyncio.sleep(0.5)  # the pipeline refills
            r0, s0 = consumer.received, _threads.snapshot()
            await asyncio.sleep(window / rounds)
            r1, s1 = consumer.received, _threads.snapshot()
            ok = ok and r1 > r0
            e2e_cpu, frames = e2e_cpu + s1.total - s0.total, frames + r1 - r0
            for role, seconds in _threads.by_role(s0, s1).items():
                roles[role] += seconds
            camera.running.clear()
            await asyncio.sleep(0.2)  # frames in flight arrive
            n = max(1, iso_frames // rounds)
            b2b, paced = iso_step(n), iso_step(n, paced=True)
            for acc, stages in ((b2b_stages, b2b), (paced_stages, paced)):
                for stage, seconds in stages.items():
                    acc[stage] += seconds
            iso_done += n
            if r1 > r0:
                turns.append((1000.0 * (s1.total - s0.total) / (r1 - r0), 1000.0 * sum(paced.values()) / n,
                              1000.0 * sum(b2b.values()) / n))
        if mode == "callrt":
            latest = consumer.latest()
            ok = ok and latest is not None and 0 <= read_index(latest) < 30
    finally:
        camera.running.set()
        await consumer.aclose()
        await a.close()
        await b.close()
        if fanout is not None:
            await fanout.aclose()
    per_frame = 1000.0 * e2e_cpu / frames if frames else float("nan")

    def per(d: dict[str, float], n: int) -> dict[str, float]:
        return {k: 1000.0 * v / n if n else float("nan") for k, v in d.items()}

    return E2eResult(per_frame, frames, ok, turns, per(roles, frames), per(paced_stages, iso_done),
                     per(b2b_stages, iso_done))


ISOLATED_STAGES = ("convert", "encode", "decode", "helper threads")
"""What the isolated sum is made of: the three stages on this thread, and what they ran on
threads Python did not start (OpenCV splits a conversion over its pool)."""


def _isolated_step(mode: str, width: int, height: int) -> Any:
    """A function ``run(n, paced) -> {stage: CPU seconds}`` of conversion + VP8 encode + decode (+ to-NumPy)
    for ``n`` more frames, outside any peer connection, with the e2e run's settings and content, back
    to back or ``paced`` at the camera's frame rate. The decoder is the one each side's receiver uses:
    FFmpeg's VP8 for callrt (``media.inline_decode``), libvpx for aiortc.

    Each stage is timed on this thread; what the stages ran on threads Python did not start is
    added as "helper threads", and so is what threads that started and ended in between ran
    (OpenCV splits callrt's ``cvtColor`` over its pool: 0.08-0.14 ms per 640x480 frame here;
    aiortc's ``reformat`` starts and ends a libswscale thread pool per frame). The end-to-end side
    counts both; this sum, timed on one thread, missed them. The peers idle meanwhile (the camera
    is paused), so those threads do nothing else.

    Both are reported because they differ by far more than the pipeline's own overhead here: run
    back to back, the same encode costs 35-45 % less CPU than with 33 ms idle between frames (the
    CPU's power state and cold caches; on this VM 2.0-2.3 against 3.4-4.1 ms per 640x480 VP8
    encode), and every real-time pipeline, callrt's and aiortc's alike, runs paced."""
    camera = BgrCamera(width, height)
    decoder = av.CodecContext.create("vp8" if mode == "callrt" else "libvpx", "r")
    clock = time.thread_time
    spent = dict.fromkeys(ISOLATED_STAGES, 0.0)
    convert: Callable[[int], Any]
    encode: Callable[[Any], Any]
    decode: Callable[[Any], None]
    if mode == "callrt":
        conv = Converter()
        enc = VideoEncoder(fixed_settings())

        def convert(i: int) -> Any:
            return conv.to_frame(camera.frames[i % 30], pts=i * 3000)

        encode = enc.encode

        def decode(packets: Any) -> None:
            for p in packets:
                for d in decoder.decode(av.Packet(bytes(p))):
                    _ = d.planes
    else:
        from aiortc.codecs.vpx import vp8_depayload

        aenc = Vp8Encoder()
        aenc.target_bitrate = BITRATE

        def convert(i: int) -> Any:
            f = av.VideoFrame.from_ndarray(camera.frames[i % 30], format="bgr24")
            f.pts, f.time_base = i * 3000, VIDEO_TIME_BASE
            return f

        def encode(f: Any) -> Any:
            return aenc.encode(f)[0]  # its payloads; aiortc's encoder reformats to I420 itself

        def decode(payloads: Any) -> None:
            for d in decoder.decode(av.Packet(b"".join(vp8_depayload(p) for p in payloads))):
                d.to_ndarray()

    def step(i: int) -> None:
        t0 = clock()
        frame = convert(i)
        t1 = clock()
        encoded = encode(frame)
        t2 = clock()
        decode(encoded)
        t3 = clock()
        spent["convert"] += t1 - t0
        spent["encode"] += t2 - t1
        spent["decode"] += t3 - t2

    for i in range(5):  # encoder and decoder warm: first keyframe, allocations
        step(i)
    done = 5

    def run(n: int, paced: bool = False) -> dict[str, float]:
        nonlocal done
        period = 1.0 / FPS
        next_at = time.monotonic()
        for stage in spent:
            spent[stage] = 0.0
        before = _threads.snapshot()
        for i in range(done, done + n):
            if paced:  # one frame per 1/FPS, as a camera delivers them (blocks the loop: the peers idle)
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += period
            step(i)
        roles = _threads.by_role(before, _threads.snapshot())
        spent["helper threads"] = roles["helper threads"] + roles["other"]  # "other": threads that ended
        done += n
        return dict(spent)

    return run


def _rounded(ms: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in ms.items()}


async def e2e_records(width: int, height: int, warmup: float, window: float, iso_frames: int,
                      step: Any, rounds: int = 3) -> list[Record]:
    _aiortc_starts_at_our_bitrate()
    res = f"{width}x{height}"
    records = []
    for mode in ("callrt", "aiortc"):
        r = await e2e_interleaved(mode, width, height, warmup, window, iso_frames, rounds)
        label = "callrt" if mode == "callrt" else "aiortc default path"
        extra = {"frames": r.frames, "fps": round(r.frames / window, 1), "content_verified": r.content_verified,
                 "measured": f"{rounds} alternating turns of {window / rounds:g} s end to end and "
                             f"{max(1, iso_frames // rounds)} frames of isolated stages (back to back, then paced)"}
        sides = ((f"paced at {FPS:g} fps", r.paced_ms, 1, r.paced_stages_ms),
                 ("back to back", r.back_to_back_ms, 2, r.back_to_back_stages_ms))
        for baseline, value, column, stages in sides:
            # each turn's own ratio: how far one turn can stray on a machine whose speed drifts
            ratios = [round(t[0] / t[column], 3) for t in r.turns if t[column] > 0]
            records.append(Record(
                f"end-to-end CPU per frame, {label}", r.per_frame_ms, "ms", res,
                f"isolated convert+encode+decode sum, {baseline}", value,
                extra={**extra, "turn_ratios": ratios, "cpu_by_thread_ms": _rounded(r.threads_ms),
                       "isolated_by_stage_ms": _rounded(stages)}))
        step(f"e2e {mode}")
    return records
