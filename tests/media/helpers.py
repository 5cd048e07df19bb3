"""Real loopback peer connections for the media tests (no mocks: aiortc on both ends)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
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


async def eventually(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def indices_after_loss(sink: Any, loss: Any, seconds: float = 3.0) -> list[int]:
    """Reads ``sink`` until ``loss.lost_at`` is set, then returns the frame indices that arrive
    within ``seconds`` of the loss."""
    while loss.lost_at is None:  # frames flow until the packet is lost
        await asyncio.wait_for(sink.recv(), 10)
    after: list[int] = []
    deadline = loss.lost_at + seconds
    while time.monotonic() < deadline:
        try:
            frame = await asyncio.wait_for(sink.recv(), max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        after.append(read_index(frame))
    return after
