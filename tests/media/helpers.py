"""Real loopback peer connections for the media tests (no mocks: aiortc on both ends)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCRtpReceiver

from media.testing import read_index


def new_pc() -> RTCPeerConnection:
    """A peer connection with an explicit, empty ICE server list (loopback only)."""
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def negotiate(offerer: RTCPeerConnection, answerer: RTCPeerConnection) -> None:
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)


async def connect(add_tracks: Callable[[RTCPeerConnection], Any], wrap: Callable[[MediaStreamTrack], Any],
                  on_receiver: Callable[[RTCRtpReceiver], Any] | None = None,
                  ) -> tuple[RTCPeerConnection, RTCPeerConnection, Any]:
    """``add_tracks(sender_pc)``, negotiate, and return ``wrap(remote_track)`` for the first remote track.

    ``on_receiver`` sees that track's receiver before it starts receiving (to install a hook).
    """
    a, b = new_pc(), new_pc()
    add_tracks(a)
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def on_track(track: MediaStreamTrack) -> None:
        if on_receiver is not None:
            for t in b.getTransceivers():
                if t.receiver.track is track:
                    on_receiver(t.receiver)
        if not got.done():
            got.set_result(wrap(track))

    b.on("track", on_track)
    await negotiate(a, b)
    return a, b, await asyncio.wait_for(got, 10)


@contextlib.asynccontextmanager
async def connected(add_tracks: Callable[[RTCPeerConnection], Any], wrap: Callable[[MediaStreamTrack], Any],
                    on_receiver: Callable[[RTCRtpReceiver], Any] | None = None,
                    ) -> AsyncIterator[tuple[RTCPeerConnection, RTCPeerConnection, Any]]:
    """``connect``, then close the wrapped track (a sink's ``aclose``) and both peers on the way out."""
    a, b, sink = await connect(add_tracks, wrap, on_receiver)
    try:
        yield a, b, sink
    finally:
        await sink.aclose()
        await a.close()
        await b.close()


async def eventually(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def indices_after_loss(sink: Any, loss: Any, seconds: float = 3.0) -> list[int]:
    """Reads ``sink`` until ``loss.lost_at`` is set, then returns the frame indices that arrive
    within ``seconds`` of the loss."""
    # Frames flow until the packet is lost. Waited for in short steps: when no frame follows the
    # loss (aiortc alone freezes), a plain recv() would wait for a frame that never comes.
    give_up = time.monotonic() + 10
    while loss.lost_at is None:
        if time.monotonic() > give_up:
            raise TimeoutError("no packet was lost within 10 s")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sink.recv(), 0.05)
    after: list[int] = []
    deadline = loss.lost_at + seconds
    while time.monotonic() < deadline:
        try:
            frame = await asyncio.wait_for(sink.recv(), max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        after.append(read_index(frame))
    return after


class DropOnArrival:
    """Wraps a receiver's short path: drops the ``drop`` media datagrams (1-based) and, if ``rtx``, every
    retransmission, before they are read (the SSRC is in the clear in SRTP). The first packets of the
    retransmission stream take aiortc's path (a new SSRC), so with ``rtx`` that path drops them too."""

    def __init__(self, lean: Any, drop: set[int], *, rtx: bool = False) -> None:
        self.lean = lean
        self.drop = drop
        self.drop_rtx = rtx
        self.media_ssrc: bytes | None = None
        self.seen = 0
        self.dropped = 0
        self.lost_at: float | None = None
        self.lost_timestamps: list[int] = []
        self.on_lost: Any = None
        self._own = lean.datagram
        lean.datagram = self.datagram  # type: ignore[method-assign]
        dtls: Any = lean.receiver.transport
        self._own_slow = dtls._handle_rtp_data
        dtls._handle_rtp_data = self.slow_path

    async def slow_path(self, data: bytes, arrival_time_ms: int) -> None:
        if self.drop_rtx and self.media_ssrc is not None and data[8:12] != self.media_ssrc:
            return
        await self._own_slow(data, arrival_time_ms)

    def datagram(self, data: bytes, hook: Any, stall: Any) -> None:
        ssrc = data[8:12]
        if self.media_ssrc is None:
            self.media_ssrc = ssrc
        if ssrc == self.media_ssrc:
            self.seen += 1
            if self.seen in self.drop:
                self.dropped += 1
                self.lost_at = time.monotonic()
                self.lost_timestamps.append(int.from_bytes(data[4:8], "big"))  # RTP header is in the clear
                if self.on_lost is not None:
                    self.on_lost()
                return
        elif self.drop_rtx:
            return
        self._own(data, hook, stall)


async def next_indices(sink: Any, n: int, timeout: float = 10.0) -> list[int]:
    """The frame indices of the next ``n`` frames ``sink`` receives, every one of them.

    Read in the sink's frame callback, not from its bounded queue, which drops the oldest when the
    test falls behind (a loaded machine) and would make frames look lost on the wire.
    """
    got: list[int] = []
    done = asyncio.get_running_loop().create_future()

    def take(frame: Any) -> None:
        if len(got) < n:
            got.append(read_index(frame))
            if len(got) == n and not done.done():
                done.set_result(None)

    stop = sink.on_frame(take)
    try:
        await asyncio.wait_for(done, timeout)
    finally:
        stop()
    return got
