"""Works around an aioice 0.13 race that leaves a consent-freshness task behind a closed connection.

``aioice.Connection.connect()`` starts the RFC 7675 consent checks (``query_consent``, a task
that wakes every ~5 s) once its check list completed. When ``close()`` runs after the check list
completed but before ``connect()`` resumed (a peer that leaves while its connection is being set
up: a participant leaving right after another joined), ``close()`` finds no consent task to
cancel, and ``connect()`` then starts one on the closed connection. That task outlives the call.

``apply()`` wraps ``query_consent`` so that a consent task started on a closed (closing)
connection ends at once. It changes nothing for open connections. Applied when the media runtime
is imported (``signaling.rtc.peer``); idempotent, and skipped where aioice lacks the attribute it
relies on (a version that no longer has the race, or changed its internals).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from aioice import Connection

logger = logging.getLogger(__name__)

_MARK = "_callrt_consent_guard"


def apply() -> bool:
    """Install the guard; True if it is (now or already) installed."""
    original = Connection.query_consent
    if getattr(original, _MARK, False):
        return True
    if "_closing" not in Connection.close.__code__.co_names:  # close() no longer marks the connection
        logger.debug("aioice has no Connection._closing: consent guard not installed")
        return False

    @functools.wraps(original)
    async def query_consent(self: Any) -> None:
        if getattr(self, "_closing", False):
            return  # connect() finished after close(): nothing to keep fresh
        await original(self)

    setattr(query_consent, _MARK, True)
    Connection.query_consent = query_consent  # type: ignore[method-assign]
    return True
