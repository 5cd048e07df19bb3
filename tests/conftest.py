"""Shared fixtures: a real coordinator on an ephemeral loopback port, and clients for it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from signaling import Client, ServerClient
from signaling.server import EmbeddedCoordinator, ServerConfig

API_KEY = "test-key"
API_SECRET = "test-secret-" + "x" * 32


def make_config(db_path: str = ":memory:", **kwargs: object) -> ServerConfig:
    cfg = ServerConfig(api_key=API_KEY, api_secret=API_SECRET, db_path=db_path)
    for k, v in kwargs.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture
def coordinator() -> Iterator[EmbeddedCoordinator]:
    """A fresh coordinator with an in-memory store."""
    with EmbeddedCoordinator(make_config()) as coord:
        yield coord


ClientFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
async def client_for(coordinator: EmbeddedCoordinator) -> AsyncIterator[ClientFactory]:
    """``await client_for("alice")``: a connected user client, closed at teardown."""
    clients: list[Client] = []

    async def make(user_id: str, *, expires_in: float | None = None, media: bool = False, **kw: object) -> Client:
        client = Client(coordinator.url, api_key=API_KEY, token=coordinator.user_token(user_id, expires_in), **kw)
        if not media:
            client.media_factory = None
        await client.connect()
        clients.append(client)
        return client

    yield make
    for c in clients:
        with contextlib.suppress(Exception):
            await c.aclose()


@pytest.fixture
async def server_client(coordinator: EmbeddedCoordinator) -> AsyncIterator[ServerClient]:
    async with ServerClient(coordinator.url, api_key=API_KEY, api_secret=API_SECRET) as sc:
        yield sc


async def eventually(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.02) -> None:
    """Wait until ``predicate()`` is truthy (state updated by events), or fail after ``timeout``."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
