"""``MediaSession``: a joined call's media: the media socket, publishers, peer links, remote sinks.

Opened by ``Call.join`` with the join credentials; implements the device managers'
``MediaController`` (enable/disable/replace during the call) and closes everything on
leave, on end, on error and on cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any, Literal

import websockets
from aiortc import MediaStreamTrack, RTCSessionDescription
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection

from media.errors import CallrtError
from media.sinks import AudioSink, VideoSink
from media.source import Source
from signaling.call_state import CallingState
from signaling.errors import ConnectionFailed, error_from_payload
from signaling.media_protocol import PeerInfo, SessionDescription
from signaling.models import MAX_WS_MESSAGE_BYTES, ICEServer, JoinCallResponse
from signaling.rtc.peer import KINDS, PeerLink
from signaling.rtc.publisher import Publisher
from signaling.rtc.remote import RemoteParticipant, RemoteTrack

if TYPE_CHECKING:
    from signaling.call import Call
    from signaling.device_manager import DeviceManager
    from signaling.models import Event

logger = logging.getLogger(__name__)

PING_INTERVAL_S = 5.0
CONNECT_TIMEOUT_S = 10.0
RECONNECT_MAX_BACKOFF_S = 5.0


class MediaSession:
    """The media side of one joined call (see the module doc)."""

    def __init__(self, call: Call, join: JoinCallResponse) -> None:
        self.call = call
        self.session_id = join.participant.session_id
        self.credentials = join.credentials
        self.ice_servers: list[ICEServer] = list(join.credentials.ice_servers)
        self.settings = join.call.settings
        self.subscribe = call._auto_subscribe
        caps = set(join.own_capabilities)
        self.publishers: dict[str, Publisher] = {}
        if "send-video" in caps and self.settings.video.enabled:
            self.publishers["video"] = Publisher("video", self.settings, self._on_publisher_failure)
        if "send-audio" in caps:
            self.publishers["audio"] = Publisher("audio", self.settings, self._on_publisher_failure)
        self.peers: dict[str, PeerInfo] = {}
        self.links: dict[str, PeerLink] = {}
        self.remote: dict[str, RemoteParticipant] = {}
        self._ws: ClientConnection | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._releasing: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._ended = False
        self.reconnects = 0
        """Times the media socket was rejoined after a drop."""
        self.errors: list[CallrtError] = []
        """Errors the coordinator reported for our media messages (refused publish, bad SDP, ...)."""

    def __repr__(self) -> str:
        return f"<MediaSession {self.session_id} peers={len(self.peers)} links={len(self.links)}>"

    # ------------------------------------------------------------ opening

    async def open(self) -> None:
        for kind, manager in (("video", self.call.camera), ("audio", self.call.microphone)):
            if manager.enabled:
                await self._enable(kind, manager)  # type: ignore[arg-type]
        await self._connect()
        self._spawn(self._read_loop(), "media-read")
        self._spawn(self._ping_loop(), "media-ping")

    async def _connect(self) -> None:
        """Open the media socket and join; merges the coordinator's peer list into ours."""
        try:
            ws = await asyncio.wait_for(
                websockets.connect(self.credentials.url, max_size=MAX_WS_MESSAGE_BYTES, ping_interval=None),
                CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            raise ConnectionFailed(f"cannot open the media socket at {self.credentials.url}: {exc}") from exc
        try:
            await ws.send(json.dumps({"type": "join", "token": self.credentials.token, "subscribe": self.subscribe,
                                      "tracks": self.published_kinds()}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT_S))
        except (websockets.ConnectionClosed, TimeoutError, ValueError) as exc:
            await ws.close()
            raise ConnectionFailed(f"media join failed: {exc!r}") from exc
        if reply.get("type") != "joined":
            await ws.close()
            err = reply.get("error") or {}
            raise error_from_payload(err, int(err.get("status", 500)))
        self._ws = ws
        for info in reply.get("peers", []):
            self._add_peer(PeerInfo.model_validate(info))

    async def _enable(self, kind: Literal["audio", "video"], manager: DeviceManager) -> bool:
        publisher = self.publishers.get(kind)
        if publisher is None:
            manager.fail(CallrtError(f"cannot publish {kind}: missing capability or disabled by the call settings",
                                     code="permission_denied", status=403))
            return False
        try:
            await publisher.enable(manager.source)
        except CallrtError as exc:
            logger.warning("%s could not start: %s", manager.kind, exc.message)
            manager.fail(exc)
            return False
        return True

    def published_kinds(self) -> list[str]:
        return sorted(k for k, p in self.publishers.items() if p.enabled)

    # ------------------------------------------------------------ MediaController

    async def set_track_enabled(self, kind: Literal["audio", "video"], enabled: bool) -> bool:
        manager = self.call.camera if kind == "video" else self.call.microphone
        before = self.published_kinds()
        if enabled:
            reached = await self._enable(kind, manager)
        else:
            publisher = self.publishers.get(kind)
            if publisher is not None:
                await publisher.disable()
            reached = False
        if self.published_kinds() != before:
            await self._announce()
        return reached

    async def replace_source(self, kind: Literal["audio", "video"], source: Source[Any]) -> None:
        publisher = self.publishers.get(kind)
        if publisher is not None:
            await publisher.replace(source)

    def _on_publisher_failure(self, publisher: Publisher, error: CallrtError) -> None:
        """A device failed mid-call: the manager ends disabled with the error, others see the mute."""
        manager = self.call.camera if publisher.kind == "video" else self.call.microphone
        manager.fail(error)
        self._spawn(self._announce(), "announce-failure")

    async def _announce(self) -> None:
        await self._send({"type": "publish", "tracks": self.published_kinds()})
        for info in list(self.peers.values()):
            await self._maybe_link(info)

    # ------------------------------------------------------------ peers and links

    def direction_for(self, kind: Literal["audio", "video"]) -> str:
        send = kind in self.publishers
        recv = self.subscribe
        return {(True, True): "sendrecv", (True, False): "sendonly",
                (False, True): "recvonly", (False, False): "inactive"}[(send, recv)]

    def _needs_link(self, info: PeerInfo) -> bool:
        """A pair has a peer connection only while media flows (or may flow) between them."""
        we_send = bool(self.published_kinds()) and info.subscribe
        they_send = bool(info.tracks) and self.subscribe
        return we_send or they_send

    def _add_peer(self, info: PeerInfo) -> None:
        """A peer announced by the coordinator (at join, or again after a rejoin: its link is kept)."""
        self.peers[info.session_id] = info
        participant = self.remote.get(info.session_id)
        if participant is None:
            participant = self.remote[info.session_id] = RemoteParticipant(info.session_id, info.user_id)
        participant.published_tracks = list(info.tracks)
        self._spawn(self._maybe_link(info), f"link-{info.session_id}")

    async def _maybe_link(self, info: PeerInfo) -> None:
        link = self.links.get(info.session_id)
        if link is None and self._needs_link(info):
            link = self.links[info.session_id] = PeerLink(self, info)
            if link.offerer:
                await link.offer()
            # the answerer waits for the offer, which the offerer sends by the same rule

    async def _remove_peer(self, session_id: str) -> None:
        self.peers.pop(session_id, None)
        link = self.links.pop(session_id, None)
        participant = self.remote.pop(session_id, None)
        if link is None and participant is None:
            return
        # Shielded: when leave() cancels the task that got here (the peer left just before we did),
        # the link and sinks it already took out of the maps must still be closed.
        await asyncio.shield(self._release(self._release_peer(link, participant), f"release-{session_id}"))

    async def _release_peer(self, link: PeerLink | None, participant: RemoteParticipant | None) -> None:
        try:
            if link is not None:
                await link.close()
        finally:
            if participant is not None:
                for sink in (participant.video, participant.audio):
                    if sink is not None:
                        await sink.aclose()
                self.call._emitter.emit("participant.left", participant)

    def _on_remote_track(self, session_id: str, track: MediaStreamTrack) -> None:
        participant = self.remote.get(session_id)
        if participant is None:
            track.stop()
            return
        kind: Literal["audio", "video"] = "video" if track.kind == "video" else "audio"
        sink: VideoSink | AudioSink = VideoSink(track) if kind == "video" else AudioSink(track)
        old = participant.video if kind == "video" else participant.audio
        if old is not None:
            self._release(old.aclose(), "close-old-sink")
        if kind == "video":
            participant.video = sink  # type: ignore[assignment]
        else:
            participant.audio = sink  # type: ignore[assignment]
        self.call._emitter.emit("track.added", RemoteTrack(participant, kind, sink))

    def _on_link_failed(self, link: PeerLink) -> None:
        if self.links.get(link.remote.session_id) is link:
            del self.links[link.remote.session_id]
            self._release(link.close(), "close-failed-link")
            if link.remote.session_id in self.peers:  # try once more with a fresh connection
                self._spawn(self._maybe_link(self.peers[link.remote.session_id]), "relink")

    # ------------------------------------------------------------ the socket

    async def _send(self, message: dict[str, Any]) -> None:
        if self._ws is None:
            return
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._ws.send(json.dumps(message, separators=(",", ":")))

    def _send_description(self, to: str, description: RTCSessionDescription) -> None:
        self._spawn(self._send({"type": "signal", "to": to,
                                "description": {"type": description.type, "sdp": description.sdp}}), "signal")

    def _request_renegotiation(self, to: str) -> None:
        self._spawn(self._send({"type": "signal", "to": to, "renegotiate": True}), "renegotiate")

    async def _read_loop(self) -> None:
        """Read media messages; when the socket drops, rejoin with backoff (peer connections stay up)."""
        backoff = 0.25
        while not self._closed:
            assert self._ws is not None
            try:
                async for raw in self._ws:
                    try:
                        await self._handle(json.loads(raw))
                    except (ValueError, ValidationError) as exc:
                        logger.warning("ignoring a bad media message: %s", exc)
            except websockets.ConnectionClosed:
                pass
            if self._closed or self._ended:
                return
            logger.warning("media socket of %s dropped; rejoining", self.session_id)
            while not self._closed:
                await asyncio.sleep(backoff)
                try:
                    await self._connect()
                except ConnectionFailed as exc:
                    backoff = min(backoff * 2, RECONNECT_MAX_BACKOFF_S)
                    logger.info("media rejoin failed (%s); retrying in %.1fs", exc.message, backoff)
                    continue
                except CallrtError as exc:  # refused: our session is gone (timed out, ended)
                    logger.warning("media rejoin refused: %s", exc.message)
                    self.call.client._spawn(self.call._teardown(CallingState.LEFT))
                    return
                backoff = 0.25
                self.reconnects += 1
                logger.info("media socket of %s rejoined", self.session_id)
                break

    async def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "peer_joined":
            self._add_peer(PeerInfo.model_validate(msg["peer"]))
        elif kind == "peer_updated":
            info = PeerInfo.model_validate(msg["peer"])
            self.peers[info.session_id] = info
            participant = self.remote.get(info.session_id)
            if participant is not None:
                participant.published_tracks = list(info.tracks)
                self.call._emitter.emit("participant.tracks_changed", participant)
            await self._maybe_link(info)
        elif kind == "peer_left":
            await self._remove_peer(str(msg.get("session_id")))
        elif kind == "signal":
            await self._on_signal(msg)
        elif kind == "error":
            err = msg.get("error") or {}
            error = error_from_payload(err, int(err.get("status", 400)))
            self.errors.append(error)
            logger.warning("coordinator refused our %s: %s", msg.get("ref"), error.message)
        elif kind in ("call_ended", "kicked"):
            self._ended = True
            logger.info("media session %s closed by the coordinator (%s)", self.session_id, kind)
            self.call.client._spawn(self.call._teardown(CallingState.LEFT))

    async def _on_signal(self, msg: dict[str, Any]) -> None:
        sender = str(msg.get("from"))
        info = self.peers.get(sender)
        if info is None:
            return
        link = self.links.get(sender)
        if msg.get("renegotiate"):
            if link is not None and link.offerer:
                await link.offer()
            return
        description = SessionDescription.model_validate(msg.get("description"))
        if link is None:
            link = self.links[sender] = PeerLink(self, info)
        try:
            await link.on_description(description)
        except Exception as exc:  # aiortc raises plain ValueError/InvalidStateError on bad SDP
            logger.warning("negotiation with %s failed: %s", sender, exc)

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL_S)
            await self._send({"type": "ping"})

    def _release(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """Run a release (closing a link or a sink) as a task that ``aclose`` waits for rather than
        cancels: a release cut short would leave a peer connection or a sink's task behind."""
        return _start(coro, self._releasing, f"media release {name}")

    def _spawn(self, coro: Any, name: str) -> None:
        """Run ``coro`` as a task of this session (``aclose`` cancels what is still running)."""
        _start(coro, self._tasks, f"media task {name}")

    # ------------------------------------------------------------ events and closing

    def on_call_event(self, event: Event) -> None:
        """Server events about the call (capability changes may open directions)."""
        if event.type == "call.member_updated" or event.type == "call.updated":
            for link in list(self.links.values()):
                self._spawn(link.update_directions(), "update-directions")

    async def aclose(self) -> None:
        """Close every peer connection and sink, release the devices, close the socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        for session_id in list(self.peers):
            await self._remove_peer(session_id)
        for link in list(self.links.values()):
            await link.close()
        self.links.clear()
        for publisher in self.publishers.values():
            await publisher.aclose()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        pending = [t for t in self._tasks if t is not current]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self._releasing:  # releases started before (a peer that left just before us): finished, not cut
            await asyncio.gather(*self._releasing, return_exceptions=True)


def _start(coro: Any, into: set[asyncio.Task[Any]], what: str) -> asyncio.Task[Any]:
    """A task kept in ``into`` while it runs; its failure is logged as ``what``."""
    task = asyncio.ensure_future(coro)
    into.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        into.discard(t)
        if not t.cancelled() and t.exception() is not None:
            logger.error("%s failed", what, exc_info=t.exception())

    task.add_done_callback(done)
    return task


async def open_media_session(call: Call, join: JoinCallResponse) -> MediaSession:
    """Open the media session of a join; on any failure everything opened so far is closed."""
    session = MediaSession(call, join)
    try:
        await session.open()
    except BaseException:
        await session.aclose()
        raise
    return session


__all__ = ["KINDS", "MediaSession", "open_media_session"]
