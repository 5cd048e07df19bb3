"""``PeerLink``: the one ``RTCPeerConnection`` between us and one remote participant.

The session with the smaller id offers (deterministic: no glare). Both kinds get a
transceiver up front, so enabling a camera later never needs a new negotiation; a kind
whose direction must change (a capability granted mid-call) is renegotiated by the offerer,
on its own or at the answerer's request. Received audio is decoded on the loop, video too in
a process pinned to one CPU, otherwise on aiortc's thread with one hand-off per frame; either
way at most a few decoded frames wait (``media.inline_decode.hook_decoder``). A video frame is
decoded when its last packet arrives (``media.frame_assembly``), and video frozen on a packet
lost for good resumes within half a second (``media.stall_recovery``). Received RTP takes the
short path of ``media.rtp_receive`` (same processing, less Python per packet). All four come
from ``media.receive_path.prepare_receiver``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Literal

from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from media.receive_path import prepare_receiver
from signaling.media_protocol import PeerInfo, SessionDescription
from signaling.rtc import ice_consent

if TYPE_CHECKING:
    from signaling.rtc.session import MediaSession

logger = logging.getLogger(__name__)

KINDS: tuple[Literal["audio", "video"], ...] = ("audio", "video")

ice_consent.apply()  # aioice's consent task can outlive a connection closed while it connected


class PeerLink:
    """Negotiation and lifetime of one peer connection."""

    def __init__(self, session: MediaSession, remote: PeerInfo) -> None:
        self.session = session
        self.remote = remote
        self.offerer = session.session_id < remote.session_id
        servers = [RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                   for s in session.ice_servers]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self._lock = asyncio.Lock()
        self.connected = asyncio.Event()
        self.closed = False
        self.negotiations = 0
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    def __repr__(self) -> str:
        return f"<PeerLink {self.session.session_id}->{self.remote.session_id} {self.pc.connectionState}>"

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.session._on_remote_track(self.remote.session_id, track)

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        logger.debug("peer %s -> %s: %s", self.session.session_id, self.remote.session_id, state)
        if state == "connected":
            self.connected.set()
        elif state == "failed" and not self.closed:
            logger.warning("peer connection to %s failed", self.remote.session_id)
            self.session._on_link_failed(self)

    def _sync_transceivers(self) -> bool:
        """Give each kind its direction (and our track); True if a direction changed."""
        changed = False
        for transceiver in self.pc.getTransceivers():
            kind = transceiver.kind
            prepare_receiver(transceiver.receiver)  # before it starts receiving; idempotent
            publisher = self.session.publishers.get(kind)
            if publisher is not None and transceiver.sender.track is None:
                publisher.attach(transceiver)
            direction = self.session.direction_for(kind)  # type: ignore[arg-type]
            if transceiver.direction != direction:
                transceiver.direction = direction
                changed = True
        return changed

    async def offer(self) -> None:
        """(Re)negotiate as the offerer."""
        async with self._lock:
            if self.closed:
                return
            if not self.pc.getTransceivers():
                for kind in KINDS:
                    self.pc.addTransceiver(kind, direction=self.session.direction_for(kind))
            self._sync_transceivers()
            await self.pc.setLocalDescription(await self.pc.createOffer())
            self.negotiations += 1
            self.session._send_description(self.remote.session_id, self.pc.localDescription)

    async def on_description(self, description: SessionDescription) -> None:
        """Apply the remote offer (and answer it) or the remote answer."""
        async with self._lock:
            if self.closed:
                return
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=description.sdp, type=description.type))
            if description.type == "offer":
                self._sync_transceivers()
                await self.pc.setLocalDescription(await self.pc.createAnswer())
                self.negotiations += 1
                self.session._send_description(self.remote.session_id, self.pc.localDescription)

    async def update_directions(self) -> None:
        """After our capabilities or subscription changed: renegotiate if a direction moved."""
        if not self.pc.getTransceivers():
            return
        if self.offerer:
            if self._sync_transceivers():
                await self.offer()
        elif any(t.direction != self.session.direction_for(t.kind) for t in self.pc.getTransceivers()):  # type: ignore[arg-type]
            self.session._request_renegotiation(self.remote.session_id)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for transceiver in self.pc.getTransceivers():
            track = transceiver.sender.track
            if track is not None:
                track.stop()  # unsubscribes from the fan-out
        # shielded: aiortc may already be closing this connection itself (the remote's DTLS closed);
        # cancelling our wait would cancel its shared "closed" future and log an InvalidStateError
        await asyncio.shield(self.pc.close())
