"""Pydantic models shared by the coordinator and the client: requests, responses, events.

They define the wire format (JSON) and its validation: ids, caps on custom data and
member lists, known roles and capabilities, and the call settings schema.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

# ---------------------------------------------------------------- limits (documented in README)

CALL_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
CALL_TYPE_PATTERN = r"^[a-z0-9_-]{1,64}$"
USER_ID_PATTERN = r"^[A-Za-z0-9@_.-]{1,64}$"
TEAM_PATTERN = r"^[A-Za-z0-9@_.-]{1,64}$"
CUSTOM_MAX_BYTES = 5 * 1024
"""Cap on any ``custom`` object, measured as compact JSON."""
MAX_MEMBERS_PER_REQUEST = 100
MAX_TEAMS_PER_USER = 32
MAX_BODY_BYTES = 64 * 1024
"""Cap on a REST request body."""
MAX_WS_MESSAGE_BYTES = 64 * 1024
"""Cap on one WebSocket message (events and media signaling)."""

CallId = Annotated[str, StringConstraints(pattern=CALL_ID_PATTERN)]
CallTypeName = Annotated[str, StringConstraints(pattern=CALL_TYPE_PATTERN)]
UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]
Team = Annotated[str, StringConstraints(pattern=TEAM_PATTERN)]


def _check_custom(value: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(value, separators=(",", ":"), default=str).encode())
    if size > CUSTOM_MAX_BYTES:
        raise ValueError(f"custom data is {size} bytes; the cap is {CUSTOM_MAX_BYTES} bytes")
    return value


Custom = Annotated[dict[str, Any], AfterValidator(_check_custom)]

Role = Literal["admin", "user", "guest", "call_member", "host", "moderator"]
ROLES: tuple[str, ...] = get_args(Role)

Capability = Literal[
    "create-call",
    "read-call",
    "join-call",
    "join-backstage",
    "join-ended-call",
    "update-call",
    "update-call-settings",
    "update-call-member",
    "end-call",
    "send-audio",
    "send-video",
    "screenshare",
    "mute-users",
]
CAPABILITIES: tuple[str, ...] = get_args(Capability)

EventType = Literal[
    "call.created",
    "call.updated",
    "call.ended",
    "call.member_added",
    "call.member_updated",
    "call.member_removed",
    "call.live_started",
    "call.live_stopped",
    "call.session_participant_joined",
    "call.session_participant_left",
    "call.session_participant_updated",
    "call.ring",
    "call.notification",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)


class Strict(BaseModel):
    """Base: unknown fields are refused, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- settings


class AudioSettings(Strict):
    mic_default_on: bool = True
    speaker_default_on: bool = True
    opus_dtx_enabled: bool = False
    access_request_enabled: bool = False
    default_device: Literal["speaker", "earpiece"] = "speaker"


class TargetResolution(Strict):
    width: int = Field(640, ge=16, le=3840)
    height: int = Field(480, ge=16, le=2160)
    bitrate: int = Field(800_000, ge=30_000, le=20_000_000, description="bits per second")


class VideoSettings(Strict):
    enabled: bool = True
    camera_default_on: bool = True
    camera_facing: Literal["front", "back", "external"] = "front"
    codec: Literal["vp8", "h264"] = "vp8"
    fps: int = Field(30, ge=1, le=60)
    target_resolution: TargetResolution = Field(default_factory=TargetResolution)


class BackstageSettings(Strict):
    enabled: bool = False
    join_ahead_time_seconds: int = Field(0, ge=0, le=7 * 24 * 3600)


class RecordingSettings(Strict):
    mode: Literal["available", "disabled", "auto-on"] = "available"
    quality: Literal["360p", "480p", "720p", "1080p"] = "720p"


class RingSettings(Strict):
    auto_cancel_timeout_ms: int = Field(15_000, ge=0, le=600_000)
    incoming_call_timeout_ms: int = Field(15_000, ge=0, le=600_000)


class LimitsSettings(Strict):
    max_participants: int | None = Field(None, ge=1, le=10_000)
    max_duration_seconds: int | None = Field(None, ge=1)


class CallSettings(Strict):
    """Effective settings of a call: the call type's settings deep-merged with the override."""

    audio: AudioSettings = Field(default_factory=AudioSettings)
    video: VideoSettings = Field(default_factory=VideoSettings)
    backstage: BackstageSettings = Field(default_factory=BackstageSettings)
    recording: RecordingSettings = Field(default_factory=RecordingSettings)
    ring: RingSettings = Field(default_factory=RingSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``override`` merged into ``base`` recursively (dicts merge, other values replace)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------- users, members, calls


class UserRequest(Strict):
    id: UserId
    name: str | None = Field(None, max_length=256)
    role: Role = "user"
    teams: list[Team] = Field(default_factory=list, max_length=MAX_TEAMS_PER_USER)
    custom: Custom = Field(default_factory=dict)


class UserResponse(BaseModel):
    id: str
    name: str | None = None
    role: str = "user"
    teams: list[str] = Field(default_factory=list)
    custom: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class UpsertUsersRequest(Strict):
    users: list[UserRequest] = Field(min_length=1, max_length=100)


class MemberRequest(Strict):
    user_id: UserId
    role: Role | None = None
    custom: Custom = Field(default_factory=dict)


class MemberResponse(BaseModel):
    user_id: str
    role: str | None = None
    custom: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class CallRequest(Strict):
    """Call creation options (the reference's table)."""

    members: list[MemberRequest] = Field(default_factory=list, max_length=MAX_MEMBERS_PER_REQUEST)
    custom: Custom = Field(default_factory=dict)
    settings_override: dict[str, Any] = Field(default_factory=dict)
    starts_at: datetime | None = None
    team: Team | None = None
    ring: bool = False
    notify: bool = False
    created_by_id: UserId | None = Field(None, description="server-side requests only: the creator")


class GetOrCreateCallRequest(Strict):
    data: CallRequest | None = None
    ring: bool = False
    notify: bool = False


class JoinCallRequest(Strict):
    create: bool = False
    data: CallRequest | None = None
    ring: bool = False
    notify: bool = False


class UpdateCallRequest(Strict):
    custom: Custom | None = None
    settings_override: dict[str, Any] | None = None
    starts_at: datetime | None = None


class UpdateCallMembersRequest(Strict):
    update_members: list[MemberRequest] = Field(default_factory=list, max_length=MAX_MEMBERS_PER_REQUEST)
    remove_members: list[UserId] = Field(default_factory=list, max_length=MAX_MEMBERS_PER_REQUEST)


class LeaveCallRequest(Strict):
    session_id: str = Field(min_length=1, max_length=64)


TrackKind = Literal["audio", "video", "screenshare"]


class ParticipantResponse(BaseModel):
    session_id: str
    user_id: str
    joined_at: datetime
    published_tracks: list[TrackKind] = Field(default_factory=list)
    """Tracks this participant is sending now (a muted track is absent)."""


class CallSessionResponse(BaseModel):
    id: str
    started_at: datetime
    ended_at: datetime | None = None
    participants: list[ParticipantResponse] = Field(default_factory=list)


class CallResponse(BaseModel):
    type: str
    id: str
    cid: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    starts_at: datetime | None = None
    ended_at: datetime | None = None
    ended_by: str | None = None
    team: str | None = None
    custom: dict[str, Any] = Field(default_factory=dict)
    settings_override: dict[str, Any] = Field(default_factory=dict)
    settings: CallSettings
    backstage: bool
    """True while backstage is enabled and the call is not live."""
    live: bool = False
    session: CallSessionResponse | None = None
    members: list[MemberResponse] = Field(default_factory=list)
    version: int
    """Increases with every change; clients apply a snapshot only if it is not older."""


class CallStateResponse(BaseModel):
    call: CallResponse
    own_capabilities: list[str]
    created: bool = False


class ICEServer(BaseModel):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class MediaCredentials(BaseModel):
    """Where and how to open the media connection; an SFU could hand out different ones."""

    kind: Literal["mesh"] = "mesh"
    url: str
    """WebSocket URL of the media signaling endpoint."""
    token: str
    """Short-lived JWT naming the user, call and participant session."""
    ice_servers: list[ICEServer] = Field(default_factory=list)


class JoinCallResponse(CallStateResponse):
    participant: ParticipantResponse
    credentials: MediaCredentials


class CallTypeRequest(Strict):
    name: CallTypeName
    grants: dict[Role, list[Capability]] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)


class UpdateCallTypeRequest(Strict):
    grants: dict[Role, list[Capability]] | None = None
    """Per role, replaces that role's capabilities; roles not named are unchanged."""
    settings: dict[str, Any] | None = None
    """Deep-merged into the call type's settings."""


class CallTypeResponse(BaseModel):
    name: str
    grants: dict[str, list[str]]
    settings: CallSettings
    created_at: datetime
    updated_at: datetime


class ErrorResponse(BaseModel):
    code: str
    message: str
    status: int
    details: list[dict[str, Any]] | None = None


class Event(BaseModel):
    """One server event. ``call`` is a full snapshot of the call after the change."""

    type: EventType
    created_at: datetime
    call_cid: str
    call: CallResponse | None = None
    user: UserResponse | None = None
    """Who caused it (creator, updater, caller of a ring)."""
    members: list[MemberResponse] = Field(default_factory=list)
    removed_user_ids: list[str] = Field(default_factory=list)
    participant: ParticipantResponse | None = None
    own_capabilities: list[str] | None = None
    """The recipient's capabilities after the change (computed per connection)."""
