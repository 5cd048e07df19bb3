"""An httpx transport whose sockets are plain asyncio protocols instead of anyio streams.

httpx reaches the network through httpcore, which on asyncio goes through anyio: every read and
write opens a cancel scope and a ``fail_after`` deadline, and every time a pooled connection is
picked its socket is polled to see whether the server closed it. On the soak benchmark (200
clients in one process) that layer was a quarter of the client's CPU. httpcore documents the
network backend as a pluggable interface (``httpcore.AsyncNetworkBackend``); this module is that
interface over ``loop.create_connection`` with a small receive buffer, so the rest of httpx and
httpcore (HTTP/1.1 parsing with h11, pooling, TLS via ``loop.start_tls``) is unchanged.

Errors keep httpx's types: a refused or timed-out connect raises ``httpcore.ConnectError`` /
``ConnectTimeout`` (httpx maps them to its own), a stalled read ``ReadTimeout``, a reset
``ReadError`` / ``WriteError``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Iterable
from typing import Any, cast

import httpcore
import httpx

_HIGH_WATER = 256 * 1024


class _StreamProtocol(asyncio.Protocol):
    """Collects received bytes; one waiter at a time (httpcore reads one response at a time)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.paused = False
        """The transport's write buffer is above its high-water mark."""
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None:
            self.error = exc
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait_readable(self) -> None:
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    async def drain(self) -> None:
        if not self.paused:
            return
        self._drain = asyncio.get_running_loop().create_future()
        try:
            await self._drain
        finally:
            self._drain = None


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One TCP (or TLS over TCP) connection for httpcore."""

    def __init__(self, transport: asyncio.Transport, protocol: _StreamProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        p = self._protocol
        if not p.buffer and not p.eof:
            try:
                async with asyncio.timeout(timeout):
                    while not p.buffer and not p.eof:
                        await p.wait_readable()
            except TimeoutError as exc:
                raise httpcore.ReadTimeout(f"no data within {timeout} s") from exc
        if p.buffer:
            if len(p.buffer) <= max_bytes:
                data = bytes(p.buffer)
                p.buffer.clear()
            else:
                data = bytes(p.buffer[:max_bytes])
                del p.buffer[:max_bytes]
            return data
        if p.error is not None:
            raise httpcore.ReadError(str(p.error)) from p.error
        return b""  # end of stream: h11 reads it as the server closing the connection

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._transport.is_closing():
            raise httpcore.WriteError("connection closed")
        self._transport.write(buffer)
        if self._protocol.paused:
            try:
                async with asyncio.timeout(timeout):
                    await self._protocol.drain()
            except TimeoutError as exc:
                raise httpcore.WriteTimeout(f"could not send within {timeout} s") from exc
            if self._protocol.error is not None:
                raise httpcore.WriteError(str(self._protocol.error)) from self._protocol.error

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                tls = await loop.start_tls(self._transport, self._protocol, ssl_context,
                                           server_hostname=server_hostname)
        except TimeoutError as exc:
            self._transport.close()
            raise httpcore.ConnectTimeout(f"TLS handshake took over {timeout} s") from exc
        except (OSError, ssl.SSLError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(str(exc)) from exc
        if tls is None:  # the connection closed during the handshake
            raise httpcore.ConnectError("connection closed during the TLS handshake")
        return AsyncioStream(_as_transport(tls), self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # asked of an idle pooled connection: readable means the server closed it (or sent
            # something unasked), either way it must not be reused; answered without a syscall
            return self._protocol.eof or bool(self._protocol.buffer)
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None


def _as_transport(transport: asyncio.BaseTransport) -> asyncio.Transport:
    # uvloop's transports implement asyncio.Transport without subclassing it: a cast, no isinstance check
    return cast(asyncio.Transport, transport)


async def _connect(opening: Awaitable[tuple[asyncio.BaseTransport, _StreamProtocol]], where: str,
                   timeout: float | None) -> AsyncioStream:
    """Await a ``create_*connection`` call within ``timeout``, with httpcore's error types."""
    try:
        async with asyncio.timeout(timeout):
            transport, protocol = await opening
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(f"connecting to {where} took over {timeout} s") from exc
    except OSError as exc:
        raise httpcore.ConnectError(str(exc)) from exc
    return AsyncioStream(_as_transport(transport), protocol)


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """``httpcore.AsyncNetworkBackend`` on asyncio transports (see the module doc)."""

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        stream = await _connect(loop.create_connection(_StreamProtocol, host, port, local_addr=local),
                                f"{host}:{port}", timeout)
        sock = stream._transport.get_extra_info("socket")
        if sock is not None:
            # requests are written in one piece; Nagle would hold the next one back for an ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
        stream._transport.set_write_buffer_limits(high=_HIGH_WATER)
        return stream

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        return await _connect(loop.create_unix_connection(_StreamProtocol, path), path, timeout)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class AsyncioTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` (same options) whose pool uses ``AsyncioBackend``."""

    def __init__(self, *, verify: ssl.SSLContext | bool = True, limits: httpx.Limits | None = None,
                 retries: int = 0) -> None:
        limits = limits or httpx.Limits()
        ssl_context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify=verify)
        super().__init__(verify=ssl_context, limits=limits, retries=retries)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            http1=True, http2=False, retries=retries, network_backend=AsyncioBackend())


class _SetCookieCookies(httpx.Cookies):
    """Reads a response's cookies only when it has a ``Set-Cookie`` header."""

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


class AsyncClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` that skips cookie extraction for responses that set none.

    httpx hands every response to ``http.cookiejar`` through urllib request/response adapters,
    whether or not it carries ``Set-Cookie``; the coordinator sets no cookies, and that step was
    ~6 % of a busy client's CPU. Responses that do set cookies are stored as usual.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cookies = kwargs.get("cookies") or {}

    @property
    def cookies(self) -> httpx.Cookies:
        return self._set_cookie_jar

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._set_cookie_jar = _SetCookieCookies(cookies)
