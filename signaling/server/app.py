"""The coordinator's FastAPI application: REST routes, the event WebSocket, error mapping."""


import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from media.errors import CallrtError
from signaling.errors import (
    InternalError,
    InvalidRequest,
    PayloadTooLarge,
    SignalingError,
    Unauthenticated,
    from_validation_errors,
)
from signaling.models import (
    CALL_ID_PATTERN,
    CALL_TYPE_PATTERN,
    MAX_BODY_BYTES,
    MAX_WS_MESSAGE_BYTES,
    USER_ID_PATTERN,
    CallResponse,
    CallStateResponse,
    CallTypeRequest,
    CallTypeResponse,
    ErrorResponse,
    GetOrCreateCallRequest,
    JoinCallRequest,
    JoinCallResponse,
    LeaveCallRequest,
    UpdateCallMembersRequest,
    UpdateCallRequest,
    UpdateCallTypeRequest,
    UpsertUsersRequest,
    UserResponse,
)
from signaling.server.auth import Identity, TokenIssuer
from signaling.server.config import ServerConfig
from signaling.server.hub import Connection, EventHub
from signaling.server.media_relay import MediaRelay
from signaling.server.page import mount_call_page
from signaling.server.service import CallService, ServiceConfig
from signaling.server.store import SQLiteStore, Store
from signaling.tokens import LEEWAY_S

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 10.0
"""Clients send ``health.check`` at least this often; the server answers each."""
AUTH_TIMEOUT_S = 10.0


def _error_response(err: CallrtError, details: list[dict[str, Any]] | None = None) -> JSONResponse:
    body: dict[str, Any] = err.to_dict()
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=err.status)


class BodyLimitMiddleware:
    """Refuses request bodies over ``MAX_BODY_BYTES`` with a typed 413, before any parsing."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = PayloadTooLarge(f"request body exceeds {self.limit} bytes")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _error_response(too_big)(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise too_big
            return message

        try:
            await self.app(scope, limited_receive, send)
        except PayloadTooLarge as exc:
            await _error_response(exc)(scope, receive, send)


def create_app(config: ServerConfig, store: Store | None = None) -> FastAPI:
    """Build the coordinator app. ``store`` defaults to ``SQLiteStore(config.db_path)``."""
    tokens = TokenIssuer(config.api_key, config.api_secret)
    hub = EventHub()
    the_store = store or SQLiteStore(config.db_path)
    service = CallService(the_store, tokens, hub, ServiceConfig(
        ice_servers=tuple(config.ice_servers), rate_limit_per_s=config.rate_limit_per_s,
        rate_limit_burst=config.rate_limit_burst))
    relay = MediaRelay(service)
    service.media = relay

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.seed()
        # participants found on start-up get one full timeout to re-register (restart survival)
        active = await the_store.stale_participants(float("inf"))
        await the_store.touch_participants([sid for _, sid in active], time.time())
        reaper = asyncio.create_task(_reap_forever(), name="callrt-reaper")
        try:
            yield
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            if store is None:
                await the_store.close()

    async def _reap_forever() -> None:
        while True:
            await asyncio.sleep(config.reap_interval_s)
            try:
                await service.reap_stale_participants(config.participant_timeout_s)
            except Exception:
                logger.exception("reaping stale participants failed")

    app = FastAPI(title="callrt coordinator", version="0.1.0", lifespan=lifespan,
                  responses={code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 429)})
    heartbeat_s = min(HEARTBEAT_INTERVAL_S, config.participant_timeout_s / 3)
    app.state.config = config
    app.state.service = service
    app.state.hub = hub
    app.state.tokens = tokens
    app.state.relay = relay
    app.add_middleware(BodyLimitMiddleware)

    # ------------------------------------------------------------ errors

    @app.exception_handler(CallrtError)
    async def _callrt_error(request: Request, exc: CallrtError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in exc.errors()]
        return _error_response(from_validation_errors(details), details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        err = SignalingError(str(exc.detail), code=codes.get(exc.status_code, "http_error"), status=exc.status_code)
        return _error_response(err)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error_response(InternalError("internal error; the server logged it"))

    # ------------------------------------------------------------ auth

    async def identity(  # async: FastAPI would run a plain def in a worker thread for every request
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
        api_key: Annotated[str | None, Query(include_in_schema=False)] = None,
    ) -> Identity:
        tokens.check_api_key(x_api_key or api_key)
        if authorization is None:
            raise Unauthenticated("missing Authorization header")
        token = authorization[7:] if authorization.lower().startswith("bearer ") else authorization
        return tokens.identify(token.strip())

    Who = Annotated[Identity, Depends(identity)]
    CallType = Annotated[str, Path(pattern=CALL_TYPE_PATTERN)]
    CallId = Annotated[str, Path(pattern=CALL_ID_PATTERN)]
    ConnId = Annotated[str | None, Query(max_length=64)]

    # ------------------------------------------------------------ calls

    @app.get("/video/call/{call_type}/{call_id}", response_model=CallStateResponse)
    async def get_call(who: Who, call_type: CallType, call_id: CallId, connection_id: ConnId = None,
                       session_id: Annotated[str | None, Query(max_length=64)] = None) -> Any:
        return await service.get_call(who, call_type, call_id, connection_id, session_id)

    @app.post("/video/call/{call_type}/{call_id}", response_model=CallStateResponse)
    async def get_or_create_call(who: Who, call_type: CallType, call_id: CallId,
                                 body: GetOrCreateCallRequest | None = None, connection_id: ConnId = None) -> Any:
        return await service.get_or_create_call(who, call_type, call_id, body or GetOrCreateCallRequest(),
                                                connection_id)

    @app.patch("/video/call/{call_type}/{call_id}", response_model=CallStateResponse)
    async def update_call(who: Who, call_type: CallType, call_id: CallId, body: UpdateCallRequest) -> Any:
        return await service.update_call(who, call_type, call_id, body)

    @app.post("/video/call/{call_type}/{call_id}/join", response_model=JoinCallResponse)
    async def join_call(request: Request, who: Who, call_type: CallType, call_id: CallId,
                        body: JoinCallRequest | None = None, connection_id: ConnId = None) -> Any:
        base = config.public_url or str(request.base_url).rstrip("/")
        media_url = base.replace("http", "ws", 1) + "/video/media"
        return await service.join_call(who, call_type, call_id, body or JoinCallRequest(), connection_id,
                                       media_url=media_url)

    @app.post("/video/call/{call_type}/{call_id}/leave", response_model=CallStateResponse)
    async def leave_call(who: Who, call_type: CallType, call_id: CallId, body: LeaveCallRequest) -> Any:
        return await service.leave_call(who, call_type, call_id, body.session_id)

    @app.post("/video/call/{call_type}/{call_id}/members", response_model=CallStateResponse)
    async def update_call_members(who: Who, call_type: CallType, call_id: CallId,
                                  body: UpdateCallMembersRequest) -> Any:
        return await service.update_call_members(who, call_type, call_id, body)

    @app.post("/video/call/{call_type}/{call_id}/mark_ended", response_model=CallStateResponse)
    async def end_call(who: Who, call_type: CallType, call_id: CallId) -> Any:
        return await service.end_call(who, call_type, call_id)

    @app.post("/video/call/{call_type}/{call_id}/go_live", response_model=CallStateResponse)
    async def go_live(who: Who, call_type: CallType, call_id: CallId) -> Any:
        return await service.set_live(who, call_type, call_id, True)

    @app.post("/video/call/{call_type}/{call_id}/stop_live", response_model=CallStateResponse)
    async def stop_live(who: Who, call_type: CallType, call_id: CallId) -> Any:
        return await service.set_live(who, call_type, call_id, False)

    @app.get("/video/calls", response_model=list[CallResponse])
    async def list_calls(who: Who, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
        return await service.list_calls(who, limit)

    # ------------------------------------------------------------ admin

    @app.post("/video/users", response_model=list[UserResponse])
    async def upsert_users(who: Who, body: UpsertUsersRequest) -> Any:
        return await service.upsert_users(who, body.users)

    @app.get("/video/users/{user_id}", response_model=UserResponse)
    async def get_user(who: Who, user_id: Annotated[str, Path(pattern=USER_ID_PATTERN)]) -> Any:
        return await service.get_user(who, user_id)

    @app.get("/video/calltypes", response_model=list[CallTypeResponse])
    async def list_call_types(who: Who) -> Any:
        return await service.list_call_types(who)

    @app.post("/video/calltypes", response_model=CallTypeResponse, status_code=201)
    async def create_call_type(who: Who, body: CallTypeRequest) -> Any:
        return await service.create_call_type(who, body)

    @app.get("/video/calltypes/{name}", response_model=CallTypeResponse)
    async def get_call_type(who: Who, name: CallType) -> Any:
        return await service.get_call_type(who, name)

    @app.patch("/video/calltypes/{name}", response_model=CallTypeResponse)
    async def update_call_type(who: Who, name: CallType, body: UpdateCallTypeRequest) -> Any:
        return await service.update_call_type(who, name, body)

    @app.delete("/video/calltypes/{name}", status_code=204)
    async def delete_call_type(who: Who, name: CallType) -> None:
        await service.delete_call_type(who, name)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "connections": len(hub)}

    # ------------------------------------------------------------ events

    @app.websocket("/video/media")
    async def media_socket(ws: WebSocket) -> None:
        await relay.serve(ws)

    @app.websocket("/video/connect")
    async def events_socket(ws: WebSocket) -> None:
        await ws.accept()
        conn = await _authenticate(ws)
        if conn is None:
            return
        hub.register(conn)
        sender = asyncio.create_task(_send_loop(ws, conn), name=f"events-send-{conn.id}")
        expiry = asyncio.create_task(_expire(conn), name=f"events-expiry-{conn.id}") if conn.expires_at else None
        try:
            await ws.send_text(json.dumps({"type": "connection.ok", "connection_id": conn.id,
                                           "user_id": conn.user_id,
                                           "heartbeat_interval_s": heartbeat_s}))
            while True:
                raw = await ws.receive_text()
                await _handle_client_message(ws, conn, raw)
        except WebSocketDisconnect:
            pass
        except Exception:
            logger.exception("event socket %s failed", conn.id)
        finally:
            hub.unregister(conn)
            if expiry is not None:
                expiry.cancel()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    async def _authenticate(ws: WebSocket) -> Connection | None:
        try:
            raw = await asyncio.wait_for(ws.receive_text(), AUTH_TIMEOUT_S)
            msg = json.loads(raw)
            if not isinstance(msg, dict) or msg.get("type") != "auth":
                raise InvalidRequest("the first message must be {type: 'auth', token, api_key}")
            tokens.check_api_key(msg.get("api_key") if isinstance(msg.get("api_key"), str) else None)
            token = msg.get("token")
            who = tokens.identify(token if isinstance(token, str) else None)
            if who.user_id:
                await service.store.ensure_user(who.user_id)
            return Connection(user_id=who.user_id, server=who.server, expires_at=who.expires_at)
        except (TimeoutError, WebSocketDisconnect):
            with contextlib.suppress(Exception):
                await ws.close(code=4008)
            return None
        except (CallrtError, ValueError) as exc:
            err = exc if isinstance(exc, CallrtError) else InvalidRequest("first message is not JSON")
            with contextlib.suppress(Exception):
                await ws.send_text(json.dumps({"type": "connection.error", "error": err.to_dict()}))
                await ws.close(code=4001 if isinstance(err, Unauthenticated) else 4000)
            return None

    async def _handle_client_message(ws: WebSocket, conn: Connection, raw: str) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            msg = None
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "health.check":
            if conn.sessions:
                await service.store.touch_participants(conn.sessions, time.time())
            conn.offer(json.dumps({"type": "health.check", "connection_id": conn.id}))
        else:
            err = InvalidRequest("unknown message; clients send only 'health.check' after 'auth'")
            conn.offer(json.dumps({"type": "error", "error": err.to_dict()}))

    async def _expire(conn: Connection) -> None:
        """Close the socket when its token expires: an expired token may not keep receiving events."""
        assert conn.expires_at is not None
        await asyncio.sleep(max(0.0, conn.expires_at + LEEWAY_S - time.time()))
        hub.unregister(conn)
        err = Unauthenticated("token expired; reconnect with a fresh token")
        conn.offer(json.dumps({"type": "connection.error", "error": err.to_dict()}))
        conn.close_reason = "token expired"
        conn.offer_close()

    async def _send_loop(ws: WebSocket, conn: Connection) -> None:
        while True:
            message = await conn.queue.get()
            if message is None or conn.overflowed:
                if conn.close_reason == "token expired":
                    await ws.close(code=4001, reason="token expired")
                else:
                    await ws.close(code=4029, reason="too slow: event queue overflowed")
                return
            await ws.send_text(message)

    mount_call_page(app, config)
    return app


__all__ = ["MAX_WS_MESSAGE_BYTES", "create_app"]
