"""The embedded mesh: relays SDP and track (mute) state between the joined sessions of a call.

Each participant session opens one media WebSocket with the media token from ``join``.
Nothing crosses calls, nothing reaches a session that has not joined, and a message the
relay refuses changes nothing. The relay never carries media: peers connect directly
(one ``RTCPeerConnection`` per pair). An SFU would replace this module behind the same
join credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from media.errors import CallrtError
from signaling.errors import InvalidRequest, NotFound, PermissionDenied, Unauthenticated, from_validation_errors
from signaling.media_protocol import (
    JoinMsg,
    PeerInfo,
    PingMsg,
    PublishMsg,
    SignalMsg,
    client_message,
    sdp_sending_kinds,
    server_message,
)

if TYPE_CHECKING:
    from signaling.server.service import CallService

logger = logging.getLogger(__name__)

QUEUE_SIZE = 256
JOIN_TIMEOUT_S = 10.0
REJOIN_GRACE_S = 2.0
"""A media socket that drops (rather than leaves) has this long to rejoin before its peers drop it."""
_CAPABILITY_FOR = {"audio": "send-audio", "video": "send-video", "screenshare": "screenshare"}


@dataclass(eq=False)
class MediaPeer:
    """One participant session's media socket."""

    cid: str
    session_id: str
    user_id: str
    ws: WebSocket
    subscribe: bool = True
    tracks: list[str] = field(default_factory=list)
    queue: asyncio.Queue[str | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    closed_reason: str | None = None

    def info(self) -> PeerInfo:
        return PeerInfo.model_validate({"session_id": self.session_id, "user_id": self.user_id,
                                        "tracks": self.tracks, "subscribe": self.subscribe})

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(json.dumps(message, separators=(",", ":")))
        except asyncio.QueueFull:
            logger.warning("media socket of %s is too slow; closing it", self.session_id)
            self.close("too slow")

    def close(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
            with contextlib.suppress(asyncio.QueueEmpty):
                while self.queue.qsize() >= QUEUE_SIZE:
                    self.queue.get_nowait()
            self.queue.put_nowait(None)


class MediaRelay:
    """All media sockets, grouped by call."""

    def __init__(self, service: CallService) -> None:
        self.service = service
        self._calls: dict[str, dict[str, MediaPeer]] = {}
        self._grace_tasks: set[asyncio.Task[None]] = set()
        self.refused = 0
        """Messages refused (bad input, wrong call, missing capability) since start."""

    def _announce_left(self, cid: str, session_id: str) -> None:
        for other in self.peers(cid):
            if other.session_id != session_id:
                other.send(server_message("peer_left", session_id=session_id))

    async def _left_after_grace(self, cid: str, session_id: str) -> None:
        await asyncio.sleep(REJOIN_GRACE_S)
        if session_id not in self._calls.get(cid, {}):
            self._announce_left(cid, session_id)

    def peers(self, cid: str) -> list[MediaPeer]:
        return list(self._calls.get(cid, {}).values())

    # ------------------------------------------------------------ hooks from the service

    def session_removed(self, cid: str, session_id: str, reason: str = "left") -> None:
        """A participant left or timed out: close its socket and tell the others."""
        peer = self._calls.get(cid, {}).get(session_id)
        if peer is not None:
            peer.send(server_message("kicked", reason=reason))
            peer.close(reason)
        else:
            self._announce_left(cid, session_id)

    def call_ended(self, cid: str) -> None:
        for peer in self.peers(cid):
            peer.send(server_message("call_ended"))
            peer.close("call ended")

    # ------------------------------------------------------------ the socket

    async def serve(self, ws: WebSocket) -> None:
        await ws.accept()
        peer = await self._join(ws)
        if peer is None:
            return
        sender = asyncio.create_task(self._send_loop(peer), name=f"media-send-{peer.session_id}")
        others = self.peers(peer.cid)
        self._calls.setdefault(peer.cid, {})[peer.session_id] = peer
        peer.send(server_message("joined", session_id=peer.session_id,
                                 peers=[p.info().model_dump() for p in others]))
        for other in others:
            other.send(server_message("peer_joined", peer=peer.info().model_dump()))
        logger.info("media: %s joined %s (%d peers)", peer.session_id, peer.cid, len(others))
        try:
            while peer.closed_reason is None:
                raw = await ws.receive_text()
                await self._handle(peer, raw)
        except WebSocketDisconnect:
            pass
        except Exception:
            logger.exception("media socket %s failed", peer.session_id)
        finally:
            dropped = peer.closed_reason is None  # the socket went away; we did not close it
            call = self._calls.get(peer.cid, {})
            if call.get(peer.session_id) is peer:
                del call[peer.session_id]
                if not call:
                    self._calls.pop(peer.cid, None)
                if dropped:  # it may come back: peers keep their connection to it for a grace period
                    task = asyncio.create_task(self._left_after_grace(peer.cid, peer.session_id))
                    self._grace_tasks.add(task)
                    task.add_done_callback(self._grace_tasks.discard)
                else:
                    self._announce_left(peer.cid, peer.session_id)
            peer.close("disconnected")
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(sender, 2.0)
            sender.cancel()

    async def _join(self, ws: WebSocket) -> MediaPeer | None:
        try:
            raw = await asyncio.wait_for(ws.receive_text(), JOIN_TIMEOUT_S)
            msg = self._parse(raw)
            if not isinstance(msg, JoinMsg):
                raise InvalidRequest("the first media message must be 'join'")
            claims = self.service.tokens.media_claims(msg.token)
            cid, session_id, user_id = claims["call_cid"], claims["session_id"], claims["user_id"]
            call = await self.service.store.get_call(cid)
            if call is None or not any(p.session_id == session_id for p in call.participants):
                raise NotFound(f"session {session_id} is not a participant of {cid} (join the call first)")
            existing = self._calls.get(cid, {}).get(session_id)
            if existing is not None:  # a reconnect replaces the old socket
                existing.close("replaced by a new connection")
            peer = MediaPeer(cid=cid, session_id=session_id, user_id=user_id, ws=ws, subscribe=msg.subscribe)
            await self._set_tracks(peer, msg.tracks)
            return peer
        except (TimeoutError, WebSocketDisconnect):
            with contextlib.suppress(Exception):
                await ws.close(code=4008)
            return None
        except CallrtError as exc:
            self.refused += 1
            with contextlib.suppress(Exception):
                await ws.send_text(json.dumps(server_message("error", error=exc.to_dict(), ref="join")))
                await ws.close(code=4001 if isinstance(exc, Unauthenticated) else 4000)
            return None

    @staticmethod
    def _parse(raw: str) -> Any:
        try:
            return client_message.validate_json(raw)
        except ValidationError as exc:
            raise from_validation_errors([dict(e) for e in exc.errors()], prefix="bad media message: ") from None

    async def _capabilities(self, peer: MediaPeer) -> set[str]:
        call = await self.service.store.get_call(peer.cid)
        ct = await self.service.store.get_call_type(call.type) if call else None
        user = await self.service.store.get_user(peer.user_id)
        if call is None or ct is None or user is None:
            return set()
        return self.service.capabilities(user, call, ct)

    async def _set_tracks(self, peer: MediaPeer, tracks: Sequence[str]) -> None:
        caps = await self._capabilities(peer)
        for kind in tracks:
            if _CAPABILITY_FOR[kind] not in caps:
                raise PermissionDenied(f"user {peer.user_id} lacks {_CAPABILITY_FOR[kind]!r}: cannot publish {kind}")
        peer.tracks = sorted(set(tracks))
        await self.service.set_published_tracks(peer.cid, peer.session_id, peer.tracks)

    async def _handle(self, peer: MediaPeer, raw: str) -> None:
        ref = None
        try:
            msg = self._parse(raw)
            ref = msg.type
            if isinstance(msg, PingMsg):
                await self.service.store.touch_participants([peer.session_id], time.time())
                peer.send(server_message("pong"))
            elif isinstance(msg, PublishMsg):
                await self._set_tracks(peer, msg.tracks)
                for other in self.peers(peer.cid):
                    if other is not peer:
                        other.send(server_message("peer_updated", peer=peer.info().model_dump()))
            elif isinstance(msg, SignalMsg):
                await self._relay(peer, msg)
            else:
                raise InvalidRequest("already joined")
        except CallrtError as exc:
            self.refused += 1
            logger.info("media: refused %s from %s: %s", ref or "message", peer.session_id, exc.message)
            peer.send(server_message("error", error=exc.to_dict(), ref=ref))

    async def _relay(self, peer: MediaPeer, msg: SignalMsg) -> None:
        target = self._calls.get(peer.cid, {}).get(msg.to)
        if target is None or msg.to == peer.session_id:
            raise NotFound(f"no other joined session {msg.to!r} in this call")
        if msg.description is not None:
            try:
                sending = sdp_sending_kinds(msg.description.sdp)
            except ValueError as exc:
                raise InvalidRequest(f"garbage SDP: {exc}") from None
            caps = await self._capabilities(peer)
            for kind in sending:
                if _CAPABILITY_FOR[kind] not in caps:
                    raise PermissionDenied(f"user {peer.user_id} lacks {_CAPABILITY_FOR[kind]!r}: "
                                           f"the SDP may not send {kind}")
        elif not msg.renegotiate:
            raise InvalidRequest("a signal carries a description or a renegotiation request")
        target.send(server_message("signal", **{"from": peer.session_id},
                                   description=msg.description.model_dump() if msg.description else None,
                                   renegotiate=msg.renegotiate))

    async def _send_loop(self, peer: MediaPeer) -> None:
        with contextlib.suppress(Exception):
            while True:
                message = await peer.queue.get()
                if message is None:
                    await peer.ws.close(code=4000, reason=peer.closed_reason or "closed")
                    return
                await peer.ws.send_text(message)
