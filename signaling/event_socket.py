"""The client's one authenticated event WebSocket: heartbeats, dispatch and reconnection.

After a drop it reconnects with exponential backoff and calls ``on_reconnect`` with the
new connection id, so the client can re-watch its calls and resynchronise their state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable

import websockets
from websockets.asyncio.client import ClientConnection

from signaling.errors import ConnectionFailed, Unauthenticated, error_from_payload
from signaling.models import MAX_WS_MESSAGE_BYTES

logger = logging.getLogger(__name__)


class EventSocket:
    """Connects to ``/video/connect``, authenticates, keeps the connection alive."""

    def __init__(self, ws_url: str, api_key: str, token: str, on_message: Callable[[str | bytes], None],
                 on_reconnect: Callable[[str], Awaitable[None]] | None = None,
                 on_disconnect: Callable[[], None] | None = None,
                 heartbeat_interval: float = 10.0, max_backoff: float = 10.0) -> None:
        self.ws_url = ws_url
        self._api_key = api_key
        self._token = token
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._on_disconnect = on_disconnect
        self.heartbeat_interval = heartbeat_interval
        self.max_backoff = max_backoff
        self.connection_id: str | None = None
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.failed: Unauthenticated | None = None
        """Set when the coordinator refused the token on a reconnect (e.g. it expired)."""

    async def connect(self, timeout: float = 10.0) -> str:
        """Open and authenticate; returns the connection id. Keeps running until ``aclose()``."""
        ws, conn_id = await self._open(timeout)
        self._ws, self.connection_id = ws, conn_id
        self.connected.set()
        self._task = asyncio.create_task(self._run(), name="callrt-events")
        return conn_id

    async def _open(self, timeout: float) -> tuple[ClientConnection, str]:
        try:
            ws = await asyncio.wait_for(
                websockets.connect(self.ws_url, max_size=MAX_WS_MESSAGE_BYTES, ping_interval=None), timeout)
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            raise ConnectionFailed(f"cannot open the event socket at {self.ws_url}: {exc}") from exc
        try:
            await ws.send(json.dumps({"type": "auth", "token": self._token, "api_key": self._api_key}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        except (websockets.ConnectionClosed, TimeoutError, ValueError) as exc:
            await ws.close()
            raise ConnectionFailed(f"event socket authentication failed: {exc!r}") from exc
        if reply.get("type") != "connection.ok":
            await ws.close()
            err = reply.get("error") or {}
            raise error_from_payload(err, int(err.get("status", 401))) if err else Unauthenticated(
                "event socket refused the token")
        self.heartbeat_interval = min(self.heartbeat_interval, float(reply.get("heartbeat_interval_s", 10.0)))
        return ws, str(reply["connection_id"])

    async def _run(self) -> None:
        backoff = 0.25
        while not self._closing:
            assert self._ws is not None
            heartbeat = asyncio.create_task(self._heartbeat(self._ws))
            try:
                async for raw in self._ws:
                    self._on_message(raw)  # parsed there, in one pass (pydantic reads the JSON itself)
            except websockets.ConnectionClosed:
                pass
            finally:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
            if self._closing:
                return
            self.connected.clear()
            logger.warning("event socket dropped; reconnecting")
            if self._on_disconnect:
                self._on_disconnect()
            while not self._closing:
                await asyncio.sleep(backoff * (1 + random.random() / 4))
                try:
                    self._ws, self.connection_id = await self._open(timeout=10.0)
                except Unauthenticated as exc:
                    logger.error("event socket: token refused on reconnect (%s); giving up", exc.message)
                    self.connection_id = None
                    self.failed = exc
                    return
                except ConnectionFailed as exc:
                    backoff = min(backoff * 2, self.max_backoff)
                    logger.info("event socket reconnect failed (%s); retrying in %.1fs", exc, backoff)
                    continue
                backoff = 0.25
                self.reconnects += 1
                self.connected.set()
                if self._on_reconnect:
                    try:
                        await self._on_reconnect(self.connection_id)
                    except Exception:
                        logger.exception("resynchronising after reconnect failed")
                break

    async def _heartbeat(self, ws: ClientConnection) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await ws.send('{"type":"health.check"}')
                await asyncio.sleep(self.heartbeat_interval)

    async def drop(self) -> None:
        """Close the socket as if the network dropped it (reconnection follows). For tests and faults."""
        if self._ws is not None:
            await self._ws.close()

    async def aclose(self) -> None:
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.connected.clear()
