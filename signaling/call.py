"""``Call``: one call as seen by one client. Snake_case mirror of the reference's call object.

``get``/``get_or_create``/``join`` also watch the call: this instance receives the
server's events for it and keeps ``state`` current when the call changes elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from signaling.call_state import CallingState, CallState
from signaling.device_manager import DeviceManager
from signaling.emitter import EventEmitter, Handler
from signaling.errors import (
    InvalidRequest,
    InvalidState,
    PermissionDenied,
    SignalingError,
    from_validation_errors,
)
from signaling.models import (
    CALL_ID_PATTERN,
    CALL_TYPE_PATTERN,
    CallRequest,
    CallStateResponse,
    Event,
    JoinCallResponse,
    MediaCredentials,
    MemberRequest,
    ParticipantResponse,
    UpdateCallMembersRequest,
    UpdateCallRequest,
)

if TYPE_CHECKING:
    from signaling.client import Client
    from signaling.rtc.remote import RemoteTrack

logger = logging.getLogger(__name__)


def _validated(model: type[BaseModel], data: Any) -> dict[str, Any]:
    """Validate client-side (fail early with InvalidRequest) and dump to JSON-ready dict."""
    try:
        obj = data if isinstance(data, model) else model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_errors([dict(e) for e in exc.errors()]) from None
    return obj.model_dump(mode="json", exclude_unset=True)


class Call:
    """A call of ``call_type`` with ``call_id``. Create through ``client.call(type, id)``."""

    def __init__(self, client: Client, call_type: str, call_id: str) -> None:
        if not re.match(CALL_TYPE_PATTERN, call_type):
            raise InvalidRequest(f"invalid call type {call_type!r}")
        if not re.match(CALL_ID_PATTERN, call_id):
            raise InvalidRequest(f"invalid call id {call_id!r}: use 1-64 of [A-Za-z0-9_-]")
        self.client = client
        self.type = call_type
        self.id = call_id
        self.state = CallState(type=call_type, id=call_id)
        self._emitter = EventEmitter()
        self.camera = DeviceManager("camera", self._emitter)
        self.microphone = DeviceManager("microphone", self._emitter)
        self.participant: ParticipantResponse | None = None
        """Our own participant session while joined."""
        self.credentials: MediaCredentials | None = None
        """Media credentials returned by the last join."""
        self.media: Any = None
        """The media session while joined (peer connections, tracks); None when signaling-only."""
        self._auto_subscribe = True
        self._teardown_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<Call {self.cid} {self.state.calling_state.value}>"

    @property
    def cid(self) -> str:
        return f"{self.type}:{self.id}"

    @property
    def remote_participants(self) -> dict[str, Any]:
        """Remote participants with media (``RemoteParticipant``: ``.video``/``.audio`` sinks), by session id."""
        return dict(self.media.remote) if self.media is not None else {}

    async def wait_for_track(self, kind: Literal["audio", "video"] = "video", *, user_id: str | None = None,
                             timeout: float | None = None) -> RemoteTrack:
        """A remote participant's ``kind`` track (``.participant``, ``.sink``): one already received,
        else the next to arrive; ``user_id`` narrows it to that user's.

        Right after ``join()`` the others are known but their tracks are still being negotiated
        (``participant.video`` is None until then): this waits for them. Raises ``InvalidState``
        when the call is not joined or is left while waiting, ``TimeoutError`` after ``timeout`` s.
        """
        if kind not in ("audio", "video"):
            raise InvalidRequest(f"kind must be 'audio' or 'video', not {kind!r}")
        joined = (CallingState.JOINED, CallingState.RECONNECTING)
        if self.state.calling_state not in joined:
            raise InvalidState(f"call {self.cid} is not joined ({self.state.calling_state.value})")
        from signaling.rtc.remote import RemoteTrack  # the media runtime, loaded once joined with media

        for p in self.remote_participants.values():
            sink = getattr(p, kind, None)
            if sink is not None and (user_id is None or p.user_id == user_id):
                return RemoteTrack(p, kind, sink)
        got: asyncio.Future[RemoteTrack] = asyncio.get_running_loop().create_future()

        def on_track(track: RemoteTrack) -> None:
            if not got.done() and track.kind == kind and user_id in (None, track.participant.user_id):
                got.set_result(track)

        def on_state(state: CallingState) -> None:
            if not got.done() and state not in joined:
                got.set_exception(InvalidState(f"call {self.cid} was left while waiting for a {kind} track"))

        offs = (self._emitter.on("track.added", on_track), self._emitter.on("calling_state.changed", on_state))
        try:
            async with asyncio.timeout(timeout):
                return await got
        except TimeoutError:
            whose = f" from {user_id}" if user_id else ""
            raise TimeoutError(f"no {kind} track{whose} arrived in {self.cid} within {timeout} s") from None
        finally:
            for off in offs:
                off()

    @property
    def session_id(self) -> str | None:
        return self.participant.session_id if self.participant else None

    @property
    def _path(self) -> str:
        return f"/video/call/{self.type}/{self.id}"

    # ------------------------------------------------------------ events

    def on(self, event_type: str, handler: Handler) -> Callable[[], None]:
        """Subscribe to this call's events (``"call.updated"``, ..., or ``"*"``); returns an unsubscriber.

        Besides server events, local ones: ``calling_state.changed``, ``camera.changed``,
        ``microphone.changed``, ``camera.error``, ``microphone.error``, ``track.added`` (a
        ``RemoteTrack``), ``participant.tracks_changed`` and ``participant.left`` (a
        ``RemoteParticipant``).
        """
        return self._emitter.on(event_type, handler)

    def events(self, *types: str) -> AsyncIterator[Any]:
        """``async for event in call.events("call.updated"):`` (bounded; drops the oldest)."""
        return self._emitter.events(*types)

    def _set_calling_state(self, value: CallingState) -> None:
        if self.state.calling_state is not value:
            self.state.calling_state = value
            self._emitter.emit("calling_state.changed", value)

    def _apply(self, response: CallStateResponse) -> None:
        self.state.apply(response.call, response.own_capabilities)

    def _handle_event(self, event: Event) -> None:
        """Called by the client for every server event about this call."""
        if event.call is not None:
            self.state.apply(event.call, event.own_capabilities)
        joined = self.state.calling_state in (CallingState.JOINED, CallingState.RECONNECTING)
        if joined and event.type == "call.ended":
            logger.info("call %s was ended by %s", self.cid, event.user.id if event.user else "the server")
            self.client._spawn(self._teardown(CallingState.LEFT))
        elif (joined and event.type == "call.session_participant_left" and event.participant is not None
              and event.participant.session_id == self.session_id):
            logger.warning("the coordinator removed our session %s from %s", self.session_id, self.cid)
            self.client._spawn(self._teardown(CallingState.LEFT))
        if self.media is not None:
            self.media.on_call_event(event)
        self._emitter.emit(event.type, event)

    # ------------------------------------------------------------ loading and creating

    async def get(self) -> CallStateResponse:
        """Load the call (``CallNotFound`` if missing) and watch it."""
        conn = await self.client._connection_id()
        result = await self.client._request_as(CallStateResponse, "GET", self._path,
                                               params=self._watch_params(conn))
        self._apply(result)
        self.client._track(self)
        return result

    async def get_or_create(self, data: Mapping[str, Any] | CallRequest | None = None, *,
                            ring: bool = False, notify: bool = False) -> CallStateResponse:
        """Load the call, creating it with ``data`` (creation options) if missing; watch it."""
        body: dict[str, Any] = {"ring": ring, "notify": notify}
        if data is not None:
            body["data"] = _validated(CallRequest, data)
        conn = await self.client._connection_id()
        result = await self.client._request_as(CallStateResponse, "POST", self._path, json=body,
                                               params=self._watch_params(conn))
        self._apply(result)
        self.client._track(self)
        return result

    def _watch_params(self, connection_id: str | None) -> dict[str, str]:
        params = {}
        if connection_id:
            params["connection_id"] = connection_id
            if self.session_id and self.state.calling_state in (CallingState.JOINED, CallingState.RECONNECTING):
                params["session_id"] = self.session_id
        return params

    async def _resync(self, connection_id: str) -> None:
        """After an event-socket reconnect: re-watch and take a fresh snapshot."""
        try:
            resp = await self.client._request_as(CallStateResponse, "GET", self._path,
                                                 params=self._watch_params(connection_id))
        except SignalingError as exc:
            logger.warning("resync of %s failed: %s", self.cid, exc)
            return
        self._apply(resp)
        if self.state.calling_state is CallingState.RECONNECTING:
            if self.state.ended or (self.session_id and self.state.participant(self.session_id) is None):
                await self._teardown(CallingState.LEFT)
            else:
                self._set_calling_state(CallingState.JOINED)

    def _on_disconnect(self) -> None:
        if self.state.calling_state is CallingState.JOINED:
            self._set_calling_state(CallingState.RECONNECTING)

    # ------------------------------------------------------------ joining and leaving

    async def join(self, *, create: bool = False, data: Mapping[str, Any] | CallRequest | None = None,
                   ring: bool = False, notify: bool = False, auto_subscribe: bool = True) -> JoinCallResponse:
        """Join the call (``create=True``: create it first if missing).

        Camera and microphone follow the reference's rule (explicit choice before join wins,
        else the call's defaults, and only with ``send-video``/``send-audio``).
        ``auto_subscribe=False`` with both devices off makes a signaling-only participant.
        """
        if self.state.calling_state in (CallingState.JOINING, CallingState.JOINED, CallingState.RECONNECTING):
            raise InvalidState(f"call {self.cid} is already {self.state.calling_state.value}")
        previous = self.state.calling_state
        self._set_calling_state(CallingState.JOINING)
        try:
            body: dict[str, Any] = {"create": create, "ring": ring, "notify": notify}
            if data is not None:
                body["data"] = _validated(CallRequest, data)
            conn = await self.client._connection_id()
            params = {"connection_id": conn} if conn else None
            result = await self.client._request_as(JoinCallResponse, "POST", f"{self._path}/join", json=body,
                                                   params=params)
        except BaseException as exc:
            self._set_calling_state(previous)
            if isinstance(exc, PermissionDenied):  # BackstageClosed among them: the call exists
                await self._watch_after_refusal()
            raise
        self._apply(result)
        self.participant = result.participant
        self.credentials = result.credentials
        self._auto_subscribe = auto_subscribe
        self.client._track(self)
        settings = result.call.settings
        self.camera.resolve_at_join(settings.video.enabled and settings.video.camera_default_on,
                                    result.own_capabilities)
        self.microphone.resolve_at_join(settings.audio.mic_default_on, result.own_capabilities)
        try:
            await self._start_media(result)
        except BaseException:
            await self._teardown(previous, notify_server=True)
            raise
        self._set_calling_state(CallingState.JOINED)
        logger.info("joined %s as session %s (camera %s, microphone %s)", self.cid, self.session_id,
                    self.camera.status.value, self.microphone.status.value)
        return result

    async def _watch_after_refusal(self) -> None:
        """A refused join still watches the call (as ``get`` does), so that the caller hears when it
        may try again: ``call.live_started`` after a ``BackstageClosed``, a member added."""
        try:
            await self.get()
        except SignalingError as exc:  # no read-call either: nothing to watch
            logger.debug("not watching %s after a refused join: %s", self.cid, exc)

    async def _start_media(self, result: JoinCallResponse) -> None:
        """Open the media session with the join credentials (a no-op until a media runtime is installed)."""
        factory = self.client.media_factory
        if factory is None:
            return
        self.media = await factory(self, result)
        self.camera.attach(self.media)
        self.microphone.attach(self.media)

    async def _teardown(self, final: CallingState, notify_server: bool = False) -> None:
        """Release media and local state; with ``notify_server`` also tell the coordinator.

        Several paths may ask at once (the ``call.ended`` event and the media socket's notice):
        they all wait for the one teardown in progress.
        """
        if self._teardown_lock.locked():
            async with self._teardown_lock:
                return
        async with self._teardown_lock:
            await self._do_teardown(final, notify_server)

    async def _do_teardown(self, final: CallingState, notify_server: bool) -> None:
        media, self.media = self.media, None
        self.camera.attach(None)
        self.microphone.attach(None)
        try:
            if media is not None:
                await media.aclose()
        finally:
            session_id = self.session_id
            self.participant = None
            self._set_calling_state(final)
            if notify_server and session_id:
                try:
                    await self.client._request("POST", f"{self._path}/leave", json={"session_id": session_id})
                except SignalingError as exc:
                    logger.warning("leave of %s not acknowledged: %s", self.cid, exc)

    async def leave(self) -> None:
        """Leave the call: close peer connections, release devices, tell the others."""
        if self.state.calling_state not in (CallingState.JOINED, CallingState.RECONNECTING, CallingState.JOINING):
            raise InvalidState(f"call {self.cid} is not joined ({self.state.calling_state.value})")
        session_id = self.session_id
        await self._teardown(CallingState.LEFT)  # the same release path as an end or a removal
        if session_id:
            self._apply(await self.client._request_as(CallStateResponse, "POST", f"{self._path}/leave",
                                                      json={"session_id": session_id}))

    async def end_call(self) -> CallStateResponse:
        """End the call for everyone (needs ``end-call``)."""
        result = await self.client._request_as(CallStateResponse, "POST", f"{self._path}/mark_ended")
        self._apply(result)
        if self.state.calling_state in (CallingState.JOINED, CallingState.RECONNECTING):
            await self._teardown(CallingState.LEFT)
        return result

    # ------------------------------------------------------------ updating

    async def update(self, *, custom: Mapping[str, Any] | None = None,
                     settings_override: Mapping[str, Any] | None = None,
                     starts_at: datetime | None = None) -> CallStateResponse:
        """Update custom data (replaced), settings override (deep-merged) or start time."""
        body: dict[str, Any] = {}
        if custom is not None:
            body["custom"] = dict(custom)
        if settings_override is not None:
            body["settings_override"] = dict(settings_override)
        if starts_at is not None:
            body["starts_at"] = starts_at
        result = await self.client._request_as(CallStateResponse, "PATCH", self._path,
                                               json=_validated(UpdateCallRequest, body))
        self._apply(result)
        return result

    async def update_call_members(self, *, update_members: Sequence[Mapping[str, Any] | MemberRequest] = (),
                                  remove_members: Sequence[str] = ()) -> CallStateResponse:
        """Add or update members (with role and custom data) and remove others, in one transaction."""
        body = _validated(UpdateCallMembersRequest,
                          {"update_members": list(update_members), "remove_members": list(remove_members)})
        result = await self.client._request_as(CallStateResponse, "POST", f"{self._path}/members", json=body)
        self._apply(result)
        return result

    async def go_live(self) -> CallStateResponse:
        """Leave backstage: everyone with ``join-call`` may join."""
        result = await self.client._request_as(CallStateResponse, "POST", f"{self._path}/go_live")
        self._apply(result)
        return result

    async def stop_live(self) -> CallStateResponse:
        """Back to backstage (when the call type enables it)."""
        result = await self.client._request_as(CallStateResponse, "POST", f"{self._path}/stop_live")
        self._apply(result)
        return result
