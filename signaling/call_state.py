"""``CallState``: the client's live view of a call, kept current from snapshots and events."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from signaling.models import (
    CallResponse,
    CallSessionResponse,
    CallSettings,
    MemberResponse,
    ParticipantResponse,
)


class CallingState(enum.StrEnum):
    """Where this client is in the call's lifecycle."""

    IDLE = "idle"
    """Not joined (maybe loaded or created)."""
    JOINING = "joining"
    JOINED = "joined"
    RECONNECTING = "reconnecting"
    """Joined, but the event connection dropped; state is resynchronised on reconnect."""
    LEFT = "left"
    """Left, ended by someone, or removed after a timeout."""


@dataclass
class CallState:
    """Everything the client knows about a call. Read it; the runtime writes it."""

    type: str
    id: str
    calling_state: CallingState = CallingState.IDLE
    custom: dict[str, Any] = field(default_factory=dict)
    settings: CallSettings | None = None
    """Effective settings (call type deep-merged with the override)."""
    settings_override: dict[str, Any] = field(default_factory=dict)
    members: dict[str, MemberResponse] = field(default_factory=dict)
    participants: list[ParticipantResponse] = field(default_factory=list)
    session: CallSessionResponse | None = None
    backstage: bool = False
    live: bool = False
    starts_at: datetime | None = None
    ended_at: datetime | None = None
    ended_by: str | None = None
    created_by: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    team: str | None = None
    own_capabilities: list[str] = field(default_factory=list)
    version: int = 0
    """Version of the last snapshot applied; older snapshots are ignored."""
    loaded: bool = False

    @property
    def cid(self) -> str:
        return f"{self.type}:{self.id}"

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def participant(self, session_id: str) -> ParticipantResponse | None:
        return next((p for p in self.participants if p.session_id == session_id), None)

    def apply(self, call: CallResponse, own_capabilities: list[str] | None = None) -> bool:
        """Take a server snapshot if it is not older than what we have; True if applied."""
        if own_capabilities is not None:
            self.own_capabilities = list(own_capabilities)
        if call.version < self.version:
            return False
        self.version = call.version
        self.custom = call.custom
        self.settings = call.settings
        self.settings_override = call.settings_override
        self.members = {m.user_id: m for m in call.members}
        self.session = call.session
        self.participants = list(call.session.participants) if call.session else []
        self.backstage = call.backstage
        self.live = call.live
        self.starts_at = call.starts_at
        self.ended_at = call.ended_at
        self.ended_by = call.ended_by
        self.created_by = call.created_by
        self.created_at = call.created_at
        self.updated_at = call.updated_at
        self.team = call.team
        self.loaded = True
        return True
