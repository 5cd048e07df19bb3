"""``Client`` (a user) and ``ServerClient`` (holds the API secret): the call API's entry points."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import ssl
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import httpx
import jwt
from pydantic import BaseModel, ValidationError

from signaling.call import Call, _validated
from signaling.emitter import EventEmitter, Handler
from signaling.errors import ConnectionFailed, InvalidRequest, SignalingError, error_from_payload
from signaling.event_socket import EventSocket
from signaling.http_transport import AsyncClient, AsyncioTransport
from signaling.models import (
    CallResponse,
    CallTypeRequest,
    CallTypeResponse,
    Event,
    UpdateCallTypeRequest,
    UserRequest,
    UserResponse,
)
from signaling.tokens import TokenIssuer

if TYPE_CHECKING:
    from signaling.models import JoinCallResponse

logger = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

DEFAULT_URL = "http://127.0.0.1:3080"

MediaFactory = Callable[[Call, "JoinCallResponse"], Awaitable[Any]]
"""Opens a call's media session after join; installed by the media runtime."""


class Client:
    """A user's connection to a coordinator: REST calls plus one event WebSocket.

    ``async with Client(url, api_key=KEY, token=USER_JWT) as client:`` then ``client.call(type, id)``.
    """

    def __init__(self, url: str = DEFAULT_URL, *, api_key: str, token: str, timeout: float = 10.0,
                 events: bool = True) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self._token = token
        self.timeout = timeout
        self.events_enabled = events
        self._http: httpx.AsyncClient | None = None
        self._socket: EventSocket | None = None
        self._connect_lock = asyncio.Lock()
        self._calls: dict[str, weakref.WeakSet[Call]] = {}
        self._emitter = EventEmitter()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.media_factory: MediaFactory | None = _default_media_factory()
        """Opens media on join; None makes every join signaling-only."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} user={self.user_id!r}>"

    @classmethod
    def from_env(cls, **kwargs: Any) -> Client:
        """``CALLRT_URL``, ``CALLRT_API_KEY`` and ``CALLRT_TOKEN`` (or ``CALLRT_USER_ID`` +
        ``CALLRT_API_SECRET`` to mint a token locally)."""
        url = os.environ.get("CALLRT_URL", DEFAULT_URL)
        key = os.environ.get("CALLRT_API_KEY")
        token = os.environ.get("CALLRT_TOKEN")
        if not token and os.environ.get("CALLRT_USER_ID") and os.environ.get("CALLRT_API_SECRET"):
            token = TokenIssuer(key or "", os.environ["CALLRT_API_SECRET"]).create_user_token(
                os.environ["CALLRT_USER_ID"])
        if not key or not token:
            raise InvalidRequest("set CALLRT_API_KEY and CALLRT_TOKEN (or CALLRT_USER_ID and CALLRT_API_SECRET)")
        return cls(url, api_key=key, token=token, **kwargs)

    @property
    def user_id(self) -> str | None:
        """The user the token names (read without verifying; the server verifies)."""
        try:
            claims = jwt.decode(self._token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return None
        uid = claims.get("user_id")
        return uid if isinstance(uid, str) else None

    @property
    def connection_id(self) -> str | None:
        return self._socket.connection_id if self._socket else None

    @property
    def event_socket(self) -> EventSocket | None:
        return self._socket

    # ------------------------------------------------------------ lifecycle

    async def connect(self) -> None:
        """Open the HTTP client and the event socket (done lazily by the first call operation)."""
        async with self._connect_lock:
            if self._closed:
                raise ConnectionFailed("client is closed")
            if self._http is None:
                # idle connections expire before the server's keep-alive (15 s) closes them
                limits = httpx.Limits(max_connections=32, max_keepalive_connections=8, keepalive_expiry=2.0)
                self._http = AsyncClient(
                    base_url=self.url, timeout=self.timeout,
                    headers={"X-Api-Key": self.api_key, "Authorization": f"Bearer {self._token}"},
                    transport=AsyncioTransport(verify=_ssl_context(), limits=limits))
            if self.events_enabled and self._socket is None:
                ws_url = self.url.replace("http", "ws", 1) + "/video/connect"
                socket = EventSocket(ws_url, self.api_key, self._token, self._on_message,
                                     on_reconnect=self._on_reconnect, on_disconnect=self._on_disconnect)
                await socket.connect(self.timeout)
                self._socket = socket

    async def aclose(self) -> None:
        """Leave joined calls, close the event socket and the HTTP client."""
        if self._closed:
            return
        for calls in list(self._calls.values()):
            for call in list(calls):
                if call.media is not None or call.session_id:
                    try:
                        await call.leave()
                    except SignalingError as exc:
                        logger.warning("leaving %s on close failed: %s", call.cid, exc)
        self._closed = True
        if self._socket is not None:
            await self._socket.aclose()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._emitter.aclose()
        if self._http is not None:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a background task owned by the client (failures are logged)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                logger.error("background task failed", exc_info=t.exception())

        task.add_done_callback(done)

    # ------------------------------------------------------------ calls and events

    def call(self, call_type: str, call_id: str) -> Call:
        """A handle on a call; nothing is sent until ``get``/``get_or_create``/``join``."""
        return Call(self, call_type, call_id)

    def on(self, event_type: str, handler: Handler) -> Callable[[], None]:
        """User-level events (``call.ring``, ``call.notification``) and every watched call's events."""
        return self._emitter.on(event_type, handler)

    def events(self, *types: str) -> Any:
        return self._emitter.events(*types)

    def _track(self, call: Call) -> None:
        self._calls.setdefault(call.cid, weakref.WeakSet()).add(call)

    def _on_message(self, raw: str | bytes) -> None:
        try:
            # the common case in one pass: pydantic parses and validates the JSON together
            event = Event.model_validate_json(raw)
        except ValidationError:
            try:
                msg = json.loads(raw)
            except ValueError:
                logger.warning("ignoring a non-JSON event message")
                return
            kind = msg.get("type") if isinstance(msg, dict) else None
            if kind in ("health.check", "connection.ok"):
                return
            if kind == "error":
                logger.warning("coordinator reported: %s", msg.get("error"))
                return
            logger.warning("ignoring an event the client cannot read: %s", str(raw)[:200])
            return
        for call in list(self._calls.get(event.call_cid, ())):
            call._handle_event(event)
        self._emitter.emit(event.type, event)

    def _on_disconnect(self) -> None:
        for calls in self._calls.values():
            for call in calls:
                call._on_disconnect()

    async def _on_reconnect(self, connection_id: str) -> None:
        calls = [c for cs in self._calls.values() for c in cs]
        await asyncio.gather(*(c._resync(connection_id) for c in calls))

    async def _connection_id(self) -> str | None:
        if self._http is None or (self.events_enabled and self._socket is None):
            await self.connect()
        return self.connection_id

    async def _send(self, method: str, path: str, *, json: Any = None,
                    params: Mapping[str, str] | None = None) -> httpx.Response:
        """One request; a transport failure or an error status raises the typed error."""
        if self._http is None:
            await self.connect()
        assert self._http is not None
        try:
            response = await self._http.request(method, path, json=json, params=params)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"{method} {path}: coordinator unreachable at {self.url} ({exc!r})") from exc
        if response.status_code >= 400:
            raise error_from_payload(_body(response), response.status_code)
        return response

    async def _request(self, method: str, path: str, *, json: Any = None,
                       params: Mapping[str, str] | None = None) -> Any:
        """One request; the decoded JSON body (None for 204)."""
        response = await self._send(method, path, json=json, params=params)
        return None if response.status_code == 204 else _body(response)

    async def _request_as(self, model: type[M], method: str, path: str, *, json: Any = None,
                          params: Mapping[str, str] | None = None) -> M:
        """One request whose body is parsed and validated as ``model`` in one pass."""
        response = await self._send(method, path, json=json, params=params)
        return model.model_validate_json(response.content)


class ServerClient(Client):
    """Server-side access (holds the API secret): tokens, users, call types, calls on behalf of users."""

    def __init__(self, url: str = DEFAULT_URL, *, api_key: str, api_secret: str, timeout: float = 10.0,
                 events: bool = False) -> None:
        self._issuer = TokenIssuer(api_key, api_secret)
        super().__init__(url, api_key=api_key, token=self._issuer.create_server_token(), timeout=timeout,
                         events=events)
        self.media_factory = None

    def create_token(self, user_id: str, expires_in: float | None = None) -> str:
        """A user token (HS256 JWT) for ``user_id``; ``expires_in`` seconds, or no expiry."""
        return self._issuer.create_user_token(user_id, expires_in)

    async def upsert_users(self, users: Iterable[Mapping[str, Any] | UserRequest]) -> list[UserResponse]:
        body = {"users": [_validated(UserRequest, u) for u in users]}
        return [UserResponse.model_validate(u) for u in await self._request("POST", "/video/users", json=body)]

    async def get_user(self, user_id: str) -> UserResponse:
        return UserResponse.model_validate(await self._request("GET", f"/video/users/{user_id}"))

    async def create_call_type(self, name: str, *, grants: Mapping[str, list[str]] | None = None,
                               settings: Mapping[str, Any] | None = None,
                               copy_from: str | None = None) -> CallTypeResponse:
        """Create a call type. Its roles hold only ``grants``: with none, nobody may even create a call
        of it. ``copy_from="default"`` starts from that type's grants (``grants`` then replaces the
        roles it names), as the reference's dashboard starts a new type from the default one."""
        base: dict[str, list[str]] = dict((await self.get_call_type(copy_from)).grants) if copy_from else {}
        body = _validated(CallTypeRequest, {"name": name, "grants": {**base, **dict(grants or {})},
                                            "settings": dict(settings or {})})
        return CallTypeResponse.model_validate(await self._request("POST", "/video/calltypes", json=body))

    async def update_call_type(self, name: str, *, grants: Mapping[str, list[str]] | None = None,
                               settings: Mapping[str, Any] | None = None) -> CallTypeResponse:
        """``grants`` replaces the named roles' capabilities; ``settings`` deep-merges."""
        body = _validated(UpdateCallTypeRequest, {"grants": dict(grants) if grants is not None else None,
                                                  "settings": dict(settings) if settings is not None else None})
        return CallTypeResponse.model_validate(await self._request("PATCH", f"/video/calltypes/{name}", json=body))

    async def get_call_type(self, name: str) -> CallTypeResponse:
        return CallTypeResponse.model_validate(await self._request("GET", f"/video/calltypes/{name}"))

    async def list_call_types(self) -> list[CallTypeResponse]:
        return [CallTypeResponse.model_validate(c) for c in await self._request("GET", "/video/calltypes")]

    async def delete_call_type(self, name: str) -> None:
        await self._request("DELETE", f"/video/calltypes/{name}")

    async def grant(self, call_type: str, role: str, capabilities: Iterable[str]) -> CallTypeResponse:
        """Add capabilities to a role of a call type (the dashboard's 'grant')."""
        current = await self.get_call_type(call_type)
        caps = list(dict.fromkeys([*current.grants.get(role, []), *capabilities]))
        return await self.update_call_type(call_type, grants={role: caps})

    async def revoke(self, call_type: str, role: str, capabilities: Iterable[str]) -> CallTypeResponse:
        """Remove capabilities from a role of a call type (the dashboard's 'revoke')."""
        current = await self.get_call_type(call_type)
        drop = set(capabilities)
        return await self.update_call_type(call_type, grants={role: [c for c in current.grants.get(role, [])
                                                                     if c not in drop]})

    async def list_calls(self, limit: int = 100) -> list[CallResponse]:
        return [CallResponse.model_validate(c) for c in await self._request("GET", "/video/calls",
                                                                           params={"limit": str(limit)})]


def _body(response: httpx.Response) -> Any:
    """The decoded JSON body, or the text when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return response.text


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context for every client (building one loads the CA bundle: ~18 ms each)."""
    return httpx.create_ssl_context()


def _default_media_factory() -> MediaFactory | None:
    """The media runtime's session opener, when it is installed alongside (it is, in callrt)."""
    try:
        from signaling.rtc.session import open_media_session
    except ImportError:
        return None
    return open_media_session
