"""Coordinator configuration."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field

from signaling.models import ICEServer


@dataclass
class ServerConfig:
    """How a coordinator runs. Keys come from flags or ``CALLRT_API_KEY``/``CALLRT_API_SECRET``."""

    api_key: str
    """Public key that clients send with every request."""
    api_secret: str
    """Signs and verifies every token; never logged."""
    db_path: str = ":memory:"
    """SQLite file (created if missing) or ``:memory:``."""
    public_url: str | None = None
    """Base URL clients use (``http://host:port``); derived from the bound address when None."""
    ice_servers: list[ICEServer] = field(default_factory=list)
    """STUN/TURN servers handed to participants at join (empty: host candidates only, right on loopback)."""
    participant_timeout_s: float = 30.0
    """A participant whose heartbeats stop for this long is removed from the call."""
    reap_interval_s: float = 5.0
    """How often stale participants are looked for."""
    rate_limit_per_s: float = 20.0
    """Call creations plus joins allowed per user per second (0 disables the limit)."""
    rate_limit_burst: int = 50
    """Bursts above the rate a user may make before being refused with ``rate_limited``."""
    dev_keys: bool = False
    """True when the keys were generated for development (enables the page's dev login)."""

    def __repr__(self) -> str:
        return f"ServerConfig(api_key={self.api_key!r}, db_path={self.db_path!r}, public_url={self.public_url!r})"

    @classmethod
    def from_env(cls, **overrides: object) -> ServerConfig:
        """Keys from the environment, or a freshly generated development pair."""
        key = os.environ.get("CALLRT_API_KEY")
        secret = os.environ.get("CALLRT_API_SECRET")
        dev = False
        if not key or not secret:
            key, secret = generate_dev_keys()
            dev = True
        cfg = cls(api_key=key, api_secret=secret, dev_keys=dev)
        for name, value in overrides.items():
            if value is not None:
                setattr(cfg, name, value)
        return cfg


def generate_dev_keys() -> tuple[str, str]:
    """A random development API key and secret."""
    return "dev-" + secrets.token_hex(6), secrets.token_urlsafe(32)


DEV_KEYS_SETTING = "dev_keys"
"""Where ``stored_dev_keys`` keeps the pair in the database's ``settings`` table."""


def stored_dev_keys(db_path: str) -> tuple[str, str]:
    """The development pair of the coordinator database at ``db_path``.

    The first call generates one and stores it in the database; later calls (later starts of
    ``callrt serve --db`` on the same file) return the same pair, so clients configured with it
    keep working after a restart. ``:memory:`` stores nothing past the process: a fresh pair each time.
    """
    if db_path == ":memory:":
        return generate_dev_keys()
    from signaling.server.store import SQLiteStore

    store = SQLiteStore(db_path)
    try:
        key, secret = store.setting(DEV_KEYS_SETTING, list(generate_dev_keys()))
    finally:
        store.close_now()
    return str(key), str(secret)


def uvicorn_options() -> dict[str, object]:
    """How callrt serves the app with uvicorn (``callrt serve`` and the embedded coordinator alike).

    Keep-alive outlives the client's (2 s) so a pooled connection is never reused as the server
    closes it; no per-message deflate (events are small and CPU matters more than bytes on the
    networks callrt runs on); the WebSocket message cap; heartbeats are callrt's own; HTTP parsed by
    httptools (a dependency: 14 % less coordinator CPU per soak op than uvicorn's pure-Python h11).
    """
    from signaling.models import MAX_WS_MESSAGE_BYTES

    return {"ws_max_size": MAX_WS_MESSAGE_BYTES, "ws_ping_interval": None, "ws_per_message_deflate": False,
            "timeout_keep_alive": 15, "http": "httptools"}
