"""Plain records the store returns; the service turns them into API responses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class UserRecord:
    id: str
    name: str | None = None
    role: str = "user"
    teams: list[str] = field(default_factory=list)
    custom: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass
class CallTypeRecord:
    name: str
    grants: dict[str, list[str]]
    settings: dict[str, Any]
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass
class MemberRecord:
    user_id: str
    role: str | None = None
    custom: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass
class ParticipantRecord:
    session_id: str
    user_id: str
    joined_at: float
    last_seen: float
    published_tracks: list[str] = field(default_factory=list)


@dataclass
class CallRecord:
    type: str
    id: str
    created_by: str
    created_at: float
    updated_at: float
    starts_at: float | None = None
    team: str | None = None
    custom: dict[str, Any] = field(default_factory=dict)
    settings_override: dict[str, Any] = field(default_factory=dict)
    live: bool = False
    ended_at: float | None = None
    ended_by: str | None = None
    session_id: str | None = None
    session_started_at: float | None = None
    session_ended_at: float | None = None
    version: int = 1
    members: dict[str, MemberRecord] = field(default_factory=dict)
    participants: list[ParticipantRecord] = field(default_factory=list)

    @property
    def cid(self) -> str:
        return f"{self.type}:{self.id}"
