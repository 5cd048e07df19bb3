"""The baseline engine: the same participants with plain aiortc, as a hand-written script would do it.

No coordinator and no callrt call layer: for every pair of a call, two ``RTCPeerConnection``s in
this process exchange offer and answer directly. Each participant's sources feed one aiortc track
per peer through an unbounded ``asyncio.Queue`` (what ``MediaRelay`` does), each sender encodes
for its own peer (aiortc's default: one VP8 and one Opus encoder per peer, Opus through aiortc's
stereo resampler), and each remote track is read with ``await track.recv()`` in a task, turned into
NumPy with ``to_ndarray()`` and handed to the same checks as the callrt engine. Only calls whose
members all live in this worker can be run this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from fractions import Fraction
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from media.frames import VIDEO_TIME_BASE, AudioFrame, VideoFrame
from media.source import Source, SourceEnded
from signaling.swarm.participant import Participant

logger = logging.getLogger(__name__)

_AUDIO_TIME_BASE = Fraction(1, 48_000)


class QueueTrack(MediaStreamTrack):
    """One peer's copy of a source: av frames from an unbounded queue."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.queue: asyncio.Queue[av.VideoFrame | av.AudioFrame | None] = asyncio.Queue()

    async def recv(self) -> av.VideoFrame | av.AudioFrame:
        frame = await self.queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame


class Broadcast:
    """Pulls one source and puts a fresh av frame for every peer track into its queue."""

    def __init__(self, source: Source[Any], kind: str) -> None:
        self.source = source
        self.kind = kind
        self.tracks: list[QueueTrack] = []
        self.task: asyncio.Task[None] | None = None

    def track(self) -> QueueTrack:
        t = QueueTrack(self.kind)
        self.tracks.append(t)
        return t

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"baseline-{self.kind}")

    async def _run(self) -> None:
        await self.source.start()
        while True:
            try:
                frame = await self.source.recv()
            except SourceEnded:
                break
            for t in self.tracks:
                t.queue.put_nowait(_to_av(frame))

    async def aclose(self) -> None:
        await self.source.stop()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        for t in self.tracks:
            t.queue.put_nowait(None)


def _to_av(frame: VideoFrame | AudioFrame) -> av.VideoFrame | av.AudioFrame:
    if isinstance(frame, AudioFrame):
        out = av.AudioFrame.from_ndarray(frame.samples.reshape(1, -1), format="s16",
                                         layout="mono" if frame.channels == 1 else "stereo")
        out.sample_rate = frame.sample_rate
        out.pts = frame.pts
        out.time_base = _AUDIO_TIME_BASE
        return out
    vf = av.VideoFrame.from_ndarray(frame.data, format="yuv420p")
    vf.pts = frame.pts
    vf.time_base = VIDEO_TIME_BASE
    return vf


class BaselineCall:
    """The members of one call meshed with plain aiortc peer connections."""

    def __init__(self, members: list[Participant]) -> None:
        self.members = members
        self.pcs: list[RTCPeerConnection] = []
        self.broadcasts: dict[tuple[int, str], Broadcast] = {}
        self.tasks: set[asyncio.Task[Any]] = set()

    def _broadcast(self, p: Participant, kind: str) -> Broadcast | None:
        source = p.tone if kind == "audio" else p.pattern
        if source is None:
            return None
        key = (p.index, kind)
        if key not in self.broadcasts:
            self.broadcasts[key] = Broadcast(source, kind)
        return self.broadcasts[key]

    def _pc(self, me: Participant, peer: Participant) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs.append(pc)
        for kind in ("audio", "video"):
            b = self._broadcast(me, kind)
            if b is not None:
                pc.addTrack(b.track())

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            task = asyncio.ensure_future(self._consume(me, peer.index, track))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

        return pc

    async def join(self) -> None:
        """Negotiate every pair, in member order; each member's join time is its own negotiations."""
        for p in self.members:
            p.t_join = time.time()
            p.join_ms = 0.0
        for i, a in enumerate(self.members):
            for z in self.members[i + 1:]:
                t0 = time.perf_counter()
                pa, pz = self._pc(a, z), self._pc(z, a)
                await pa.setLocalDescription(await pa.createOffer())
                await pz.setRemoteDescription(pa.localDescription)
                await pz.setLocalDescription(await pz.createAnswer())
                await pa.setRemoteDescription(pz.localDescription)
                spent = (time.perf_counter() - t0) * 1000
                a.join_ms = (a.join_ms or 0.0) + spent
                z.join_ms = (z.join_ms or 0.0) + spent
        for p in self.members:
            p.joined = True
        for broadcast in self.broadcasts.values():
            broadcast.start()

    async def _consume(self, me: Participant, sender: int, track: MediaStreamTrack) -> None:
        vcheck = me.video_checks.get(sender) if track.kind == "video" else None
        acheck = me.audio_checks.get(sender) if track.kind == "audio" else None
        while True:
            try:
                frame: Any = await track.recv()
            except MediaStreamError:
                return
            if vcheck is not None:
                vcheck.on_frame(VideoFrame(frame.to_ndarray(format="yuv420p"), pts=frame.pts or 0))
            elif acheck is not None:
                channels = frame.layout.nb_channels
                samples = frame.to_ndarray().reshape(-1, channels)
                acheck.on_samples(np.ascontiguousarray(samples), frame.pts or 0, frame.sample_rate)

    async def leave(self) -> None:
        for b in self.broadcasts.values():
            await b.aclose()
        for pc in self.pcs:
            with contextlib.suppress(Exception):
                await pc.close()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
