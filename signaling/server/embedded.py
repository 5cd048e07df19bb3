"""Run a coordinator inside this process: in a background thread with its own event loop.

Used by ``callrt demo``, the tests and the benchmarks. The socket is bound before the
server starts (port 0 picks a free one), so ``url`` is known at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from types import TracebackType

import uvicorn

from signaling.server.app import create_app
from signaling.server.auth import TokenIssuer
from signaling.server.config import ServerConfig, uvicorn_options

logger = logging.getLogger(__name__)


class EmbeddedCoordinator:
    """A coordinator on ``host:port`` served from a daemon thread.

    >>> with EmbeddedCoordinator(ServerConfig.from_env()) as coordinator:
    ...     coordinator.url
    """

    def __init__(self, config: ServerConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config
        self.host = host
        self._requested_port = port
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.tokens = TokenIssuer(config.api_key, config.api_secret)

    @property
    def url(self) -> str:
        """The URL to reach it from this host (loopback when bound to every interface)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedCoordinator:
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose protocol is TCP; without it
        # Nagle's algorithm and delayed ACKs add ~40 ms to every response
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        sock.listen(1024)
        self._sock = sock
        self.port = sock.getsockname()[1]
        if self.config.public_url is None and self.host not in ("0.0.0.0", ""):
            self.config.public_url = self.url  # else: media URLs follow the address each client used
        app = create_app(self.config)
        uv_config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2,
                                   **uvicorn_options())  # type: ignore[arg-type]
        self._server = uvicorn.Server(uv_config)
        self._thread = threading.Thread(target=self._run, name="callrt-coordinator", daemon=True)
        self._thread.start()
        t_end = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the embedded coordinator failed to start (see the log)")
            if time.monotonic() > t_end:
                raise TimeoutError("the embedded coordinator did not start in time")
            time.sleep(0.01)
        logger.info("coordinator listening on %s (db %s)", self.url, self.config.db_path)
        return self

    def _run(self) -> None:
        assert self._server is not None and self._sock is not None
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> EmbeddedCoordinator:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedCoordinator:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.stop)

    def user_token(self, user_id: str, expires_in: float | None = None) -> str:
        return self.tokens.create_user_token(user_id, expires_in)

    def server_token(self) -> str:
        return self.tokens.create_server_token()
