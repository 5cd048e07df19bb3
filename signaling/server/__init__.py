"""The coordinator: FastAPI app, SQLite store, tokens, permissions, event fan-out.

Never imports ``devices``.
"""

from signaling.server.app import create_app
from signaling.server.auth import Identity, TokenIssuer
from signaling.server.config import ServerConfig, generate_dev_keys
from signaling.server.embedded import EmbeddedCoordinator
from signaling.server.store import SQLiteStore, Store

__all__ = [
    "EmbeddedCoordinator",
    "Identity",
    "SQLiteStore",
    "ServerConfig",
    "Store",
    "TokenIssuer",
    "create_app",
    "generate_dev_keys",
]
