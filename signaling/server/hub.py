"""Event fan-out: the authenticated WebSocket connections and which calls each one watches.

A connection watches a call after a permitted ``get``/``get_or_create``/``join`` naming its
``connection_id``. Each event is rendered once per recipient (their ``own_capabilities``
added; a recipient who may no longer read the call is dropped from its watchers) and put
into that connection's bounded queue; a connection whose queue is full is closed as too
slow rather than allowed to grow. This is the seam where a pub/sub bus (Redis) would feed
several coordinator processes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

CONNECTION_QUEUE_SIZE = 512
"""Events buffered per connection before it is closed as a slow consumer."""


@dataclass(eq=False)
class Connection:
    """One client's event WebSocket."""

    user_id: str | None
    server: bool = False
    expires_at: float | None = None
    """When the connection's token expires; the socket is closed then."""
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    queue: asyncio.Queue[str | None] = field(default_factory=lambda: asyncio.Queue(CONNECTION_QUEUE_SIZE))
    watching: set[str] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)
    """Participant sessions joined through this connection (kept alive by its heartbeats)."""
    overflowed: bool = False
    dropped_events: int = 0
    close_reason: str | None = None

    def offer(self, message: str) -> bool:
        """Queue a message; on overflow mark the connection for closing and return False."""
        if self.overflowed:
            return False
        try:
            self.queue.put_nowait(message)
            return True
        except asyncio.QueueFull:
            self.overflowed = True
            self.dropped_events += 1
            logger.warning("event connection %s of %s is too slow; closing it", self.id, self.user_id)
            # wake the sender so it sees the overflow and closes the socket
            try:
                self.queue.get_nowait()
                self.queue.put_nowait(None)
            except (asyncio.QueueEmpty, asyncio.QueueFull):
                pass
            return False


    def offer_close(self) -> None:
        """Ask the sender to close the socket after what is queued."""
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            self.overflowed = True


Renderer = Callable[[Connection], Awaitable[str | None]]
"""Builds the message for one recipient, or None when it may not see the event."""


class EventHub:
    """Registry of connections, watchers per call and connections per user."""

    def __init__(self) -> None:
        self._connections: dict[str, Connection] = {}
        self._by_user: dict[str, set[str]] = {}
        self._watchers: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._connections)

    def register(self, conn: Connection) -> None:
        self._connections[conn.id] = conn
        if conn.user_id:
            self._by_user.setdefault(conn.user_id, set()).add(conn.id)

    def unregister(self, conn: Connection) -> None:
        self._connections.pop(conn.id, None)
        if conn.user_id and conn.user_id in self._by_user:
            self._by_user[conn.user_id].discard(conn.id)
            if not self._by_user[conn.user_id]:
                del self._by_user[conn.user_id]
        for cid in conn.watching:
            watchers = self._watchers.get(cid)
            if watchers is not None:
                watchers.discard(conn.id)
                if not watchers:
                    del self._watchers[cid]

    def get(self, connection_id: str) -> Connection | None:
        return self._connections.get(connection_id)

    def watch(self, conn: Connection, cid: str) -> None:
        conn.watching.add(cid)
        self._watchers.setdefault(cid, set()).add(conn.id)

    def unwatch(self, conn: Connection, cid: str) -> None:
        conn.watching.discard(cid)
        watchers = self._watchers.get(cid)
        if watchers is not None:
            watchers.discard(conn.id)
            if not watchers:
                del self._watchers[cid]

    def watchers(self, cid: str) -> list[Connection]:
        return [self._connections[c] for c in self._watchers.get(cid, ()) if c in self._connections]

    def connections_of(self, user_ids: Iterable[str]) -> list[Connection]:
        out: list[Connection] = []
        for uid in user_ids:
            out.extend(self._connections[c] for c in self._by_user.get(uid, ()) if c in self._connections)
        return out

    def connections_with_session(self, session_id: str) -> list[Connection]:
        return [c for c in self._connections.values() if session_id in c.sessions]

    async def deliver(self, recipients: Iterable[Connection], render: Renderer, *, cid: str | None = None) -> int:
        """Render and queue one event for each recipient; returns how many got it."""
        sent = 0
        for conn in recipients:
            message = await render(conn)
            if message is None:
                if cid is not None:
                    self.unwatch(conn, cid)  # lost read access: stop watching
                continue
            if conn.offer(message):
                sent += 1
        return sent
