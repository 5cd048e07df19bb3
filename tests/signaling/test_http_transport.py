"""The client's asyncio network backend for httpx: what users rely on when the network misbehaves.

Real sockets on loopback throughout: small asyncio servers that answer, stall, close idle
connections or speak TLS (a self-signed certificate made here with ``cryptography``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from signaling.client import Client
from signaling.errors import ConnectionFailed
from signaling.http_transport import AsyncioTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


def _response(body: bytes, *, close: bool = False) -> bytes:
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    if close:
        head += "connection: close\r\n"
    return head.encode() + b"\r\n" + body


class Server:
    """An asyncio TCP server on loopback counting the connections it accepted."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0, ssl=self.ssl_context)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])


@pytest.fixture
async def http() -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    made: list[httpx.AsyncClient] = []

    def make(verify: ssl.SSLContext | bool = True, timeout: float = 5.0) -> httpx.AsyncClient:
        client = httpx.AsyncClient(timeout=timeout, transport=AsyncioTransport(verify=verify))
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


async def test_keep_alive_reuses_one_connection_and_bodies_arrive_whole(http):
    big = b'{"x":"' + b"y" * 300_000 + b'"}'  # several reads' worth

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await _read_request(reader)
            writer.write(_response(big if b"/big" in head else b'{"ok":true}'))
            await writer.drain()

    async with Server(handler) as server:
        client = http()
        for _ in range(5):
            assert (await client.get(f"http://127.0.0.1:{server.port}/small")).json() == {"ok": True}
        response = await client.post(f"http://127.0.0.1:{server.port}/big", content=b"z" * 200_000)
        assert response.content == big
        assert server.connections == 1


async def test_a_connection_the_server_closed_while_idle_is_not_reused(http):
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_response(b'{"ok":true}'))
        await writer.drain()
        # keep-alive was not refused, but the server goes away while the connection idles

    async with Server(handler) as server:
        client = http()
        for _ in range(3):
            assert (await client.get(f"http://127.0.0.1:{server.port}/")).json() == {"ok": True}
            await asyncio.sleep(0.05)  # let the FIN arrive before the next request picks a connection
        assert server.connections == 3


async def test_refused_connection_is_a_typed_connect_error(http):
    async with Server(lambda r, w: asyncio.sleep(0)) as server:
        port = server.port
    with pytest.raises(httpx.ConnectError):
        await http().get(f"http://127.0.0.1:{port}/")


async def test_a_stalled_response_times_out_as_a_read_timeout(http):
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(30)

    async with Server(handler) as server:
        with pytest.raises(httpx.ReadTimeout):
            await http(timeout=0.3).get(f"http://127.0.0.1:{server.port}/")


async def test_a_reset_mid_response_is_a_transport_error(http):
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial")
        await writer.drain()
        writer.transport.abort()

    async with Server(handler) as server:
        with pytest.raises(httpx.TransportError):
            await http().get(f"http://127.0.0.1:{server.port}/")


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_https_verifies_the_certificate(http, tmp_path):
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            writer.write(_response(b'{"tls":true}'))
            await writer.drain()

    async with Server(handler, ssl_context=server_ctx) as server:
        url = f"https://localhost:{server.port}/"
        with pytest.raises(httpx.ConnectError):  # not trusted: refused, not silently accepted
            await http().get(url)
        trusting = ssl.create_default_context(cafile=str(cert))
        client = http(verify=trusting)
        for _ in range(3):
            assert (await client.get(url)).json() == {"tls": True}
        assert server.connections == 1  # (the refused handshake never reached the handler) one, kept alive


async def test_sdk_client_reports_an_unreachable_coordinator_as_connection_failed():
    async with Server(lambda r, w: asyncio.sleep(0)) as server:
        port = server.port
    client = Client(f"http://127.0.0.1:{port}", api_key="k", token="t", events=False)
    try:
        with pytest.raises(ConnectionFailed) as info:
            await client.call("default", "x").get()
        assert info.value.code == "connection_failed"
    finally:
        await client.aclose()


async def test_sdk_http_client_still_keeps_cookies_a_server_sets():
    from signaling.http_transport import AsyncClient

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await _read_request(reader)
            if b"/set" in head:
                writer.write(b"HTTP/1.1 200 OK\r\nset-cookie: session=abc; Path=/\r\ncontent-length: 2\r\n\r\n{}")
            else:
                sent = b"yes" if b"cookie: session=abc" in head.lower() else b"no"
                writer.write(_response(b'{"cookie":"' + sent + b'"}'))
            await writer.drain()

    async with Server(handler) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with AsyncClient(transport=AsyncioTransport()) as client:
            assert (await client.get(f"{base}/plain")).json() == {"cookie": "no"}
            assert len(client.cookies) == 0
            await client.get(f"{base}/set")
            assert client.cookies.get("session") == "abc"
            assert (await client.get(f"{base}/plain")).json() == {"cookie": "yes"}


def test_the_transport_works_on_uvloop_too(tmp_path):
    """uvloop's transports do not subclass asyncio's (a swarm worker runs the SDK on uvloop)."""
    uvloop = pytest.importorskip("uvloop")
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await _read_request(reader)
            if b"/stall" in head:
                await asyncio.sleep(30)
            writer.write(_response(b'{"ok":true}'))
            await writer.drain()

    async def scenario() -> None:
        async with Server(handler) as plain, Server(handler, ssl_context=server_ctx) as tls:
            async with httpx.AsyncClient(timeout=0.5, transport=AsyncioTransport()) as client:
                for _ in range(3):
                    assert (await client.get(f"http://127.0.0.1:{plain.port}/")).json() == {"ok": True}
                with pytest.raises(httpx.ReadTimeout):
                    await client.get(f"http://127.0.0.1:{plain.port}/stall")
            trusting = ssl.create_default_context(cafile=str(cert))
            async with httpx.AsyncClient(transport=AsyncioTransport(verify=trusting)) as client:
                assert (await client.get(f"https://localhost:{tls.port}/")).json() == {"ok": True}
            assert plain.connections == 1 and tls.connections == 1  # each kept alive

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
