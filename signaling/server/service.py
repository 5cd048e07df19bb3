"""The coordinator's rules: who may do what to which call, and what changes as a result.

Routes parse and authenticate; this module checks capabilities, writes through the
store (one transaction per operation) and then publishes the resulting events.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from signaling.errors import (
    BackstageClosed,
    CallEnded,
    CallFull,
    CallNotFound,
    CallTypeNotFound,
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    from_validation_errors,
)
from signaling.models import (
    CAPABILITIES,
    CallRequest,
    CallResponse,
    CallSessionResponse,
    CallSettings,
    CallStateResponse,
    CallTypeRequest,
    CallTypeResponse,
    GetOrCreateCallRequest,
    ICEServer,
    JoinCallRequest,
    JoinCallResponse,
    MediaCredentials,
    MemberResponse,
    ParticipantResponse,
    UpdateCallMembersRequest,
    UpdateCallRequest,
    UpdateCallTypeRequest,
    UserRequest,
    UserResponse,
    deep_merge,
)
from signaling.server.auth import Identity, TokenIssuer
from signaling.server.hub import Connection, EventHub
from signaling.server.permissions import (
    BUILTIN_CALL_TYPES,
    capabilities_for,
    roles_for,
    sorted_capabilities,
)
from signaling.server.ratelimit import RateLimiter
from signaling.server.records import CallRecord, CallTypeRecord, MemberRecord, ParticipantRecord, UserRecord
from signaling.server.store import Store

logger = logging.getLogger(__name__)


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _opt_dt(ts: float | None) -> datetime | None:
    return None if ts is None else _dt(ts)


def _ts(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def validate_settings(*layers: dict[str, Any]) -> CallSettings:
    """Deep-merge layers over the defaults and validate; InvalidRequest names the bad field."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer)
    try:
        return CallSettings.model_validate(merged)
    except ValidationError as exc:
        raise from_validation_errors([dict(e) for e in exc.errors()], prefix="invalid settings: ") from None


@dataclass
class Actor:
    """The identity of a request, resolved to a user record (None for the server)."""

    identity: Identity
    user: UserRecord | None

    @property
    def user_id(self) -> str | None:
        return self.user.id if self.user else None


@dataclass
class ServiceConfig:
    media_url: str = ""
    """Public WebSocket URL of the media endpoint handed out in join credentials."""
    ice_servers: tuple[ICEServer, ...] = ()
    """ICE servers handed to participants (empty on loopback)."""
    media_token_ttl_s: float = 6 * 3600
    rate_limit_per_s: float = 20.0
    rate_limit_burst: int = 50


class CallService:
    """Every call and admin operation, with permission checks and events."""

    def __init__(self, store: Store, tokens: TokenIssuer, hub: EventHub, config: ServiceConfig) -> None:
        self.store = store
        self.tokens = tokens
        self.hub = hub
        self.config = config
        self._users: dict[str, tuple[float, UserRecord]] = {}
        self.limiter = RateLimiter(config.rate_limit_per_s, config.rate_limit_burst)
        self.media: Any = None
        """The media relay (``MediaRelay``) told about leaves and ends; None without media."""

    async def seed(self) -> None:
        """Create the built-in call types if missing (existing ones keep their edits)."""
        for name, spec in BUILTIN_CALL_TYPES.items():
            await self.store.create_call_type(CallTypeRecord(
                name=name, grants={r: list(c) for r, c in spec["grants"].items()}, settings=spec["settings"]))

    # ------------------------------------------------------------ helpers

    USER_CACHE_TTL_S = 5.0
    """How long a user record (role, teams) is reused without a store read. Upserts through this
    process invalidate at once; another coordinator process's upsert is seen within this time."""

    async def user(self, user_id: str, *, create: bool = False) -> UserRecord | None:
        """A user record through a short cache (fan-out renders one event per watcher)."""
        now = time.monotonic()
        hit = self._users.get(user_id)
        if hit is not None and now - hit[0] < self.USER_CACHE_TTL_S:
            return hit[1]
        record = await (self.store.ensure_user(user_id) if create else self.store.get_user(user_id))
        if record is not None:
            if len(self._users) > 10_000:
                self._users.clear()
            self._users[user_id] = (now, record)
        return record

    async def actor(self, identity: Identity) -> Actor:
        if identity.server:
            return Actor(identity, None)
        assert identity.user_id is not None
        return Actor(identity, await self.user(identity.user_id, create=True))

    async def _call_type(self, name: str) -> CallTypeRecord:
        ct = await self.store.get_call_type(name)
        if ct is None:
            raise CallTypeNotFound(f"call type {name!r} does not exist")
        return ct

    async def _call(self, call_type: str, call_id: str) -> CallRecord:
        call = await self.store.get_call(f"{call_type}:{call_id}")
        if call is None:
            raise CallNotFound(f"call {call_type}:{call_id} does not exist")
        return call

    @staticmethod
    def _in_team(user: UserRecord | None, call: CallRecord) -> bool:
        return user is None or call.team is None or call.team in user.teams

    def capabilities(self, user: UserRecord | None, call: CallRecord, ct: CallTypeRecord) -> set[str]:
        """Capabilities of a user in a call (all of them for the server); empty outside its team."""
        if user is None:
            return set(CAPABILITIES)
        if not self._in_team(user, call):
            return set()
        member = call.members.get(user.id)
        roles = roles_for(user.role, member.role if member else None, member is not None, call.created_by == user.id)
        return capabilities_for(ct.grants, roles)

    def _require(self, caps: set[str], capability: str, actor: Actor, call: CallRecord) -> None:
        if capability not in caps:
            if actor.user is not None and not self._in_team(actor.user, call):
                raise PermissionDenied(f"call {call.cid} is restricted to team {call.team!r}")
            raise PermissionDenied(f"{actor.identity.label} lacks {capability!r} on call {call.cid}")

    def settings_of(self, call: CallRecord, ct: CallTypeRecord) -> CallSettings:
        return validate_settings(ct.settings, call.settings_override)

    def call_response(self, call: CallRecord, ct: CallTypeRecord) -> CallResponse:
        settings = self.settings_of(call, ct)
        session = None
        if call.session_id is not None:
            session = CallSessionResponse(
                id=call.session_id,
                started_at=_dt(call.session_started_at or call.created_at),
                ended_at=_opt_dt(call.session_ended_at),
                participants=[self.participant_response(p) for p in call.participants],
            )
        return CallResponse(
            type=call.type, id=call.id, cid=call.cid, created_by=call.created_by,
            created_at=_dt(call.created_at), updated_at=_dt(call.updated_at), starts_at=_opt_dt(call.starts_at),
            ended_at=_opt_dt(call.ended_at), ended_by=call.ended_by, team=call.team, custom=call.custom,
            settings_override=call.settings_override, settings=settings,
            backstage=settings.backstage.enabled and not call.live, live=call.live, session=session,
            members=[self.member_response(m) for m in call.members.values()], version=call.version,
        )

    @staticmethod
    def member_response(m: MemberRecord) -> MemberResponse:
        return MemberResponse(user_id=m.user_id, role=m.role, custom=m.custom,
                              created_at=_dt(m.created_at), updated_at=_dt(m.updated_at))

    @staticmethod
    def participant_response(p: ParticipantRecord) -> ParticipantResponse:
        return ParticipantResponse.model_validate({"session_id": p.session_id, "user_id": p.user_id,
                                                   "joined_at": _dt(p.joined_at),
                                                   "published_tracks": p.published_tracks})

    @staticmethod
    def user_response(u: UserRecord) -> UserResponse:
        return UserResponse(id=u.id, name=u.name, role=u.role, teams=u.teams, custom=u.custom,
                            created_at=_dt(u.created_at), updated_at=_dt(u.updated_at))

    def _watch(self, actor: Actor, connection_id: str | None, cid: str) -> Connection | None:
        if connection_id is None:
            return None
        conn = self.hub.get(connection_id)
        if conn is None:
            raise InvalidRequest(f"unknown connection_id {connection_id!r} (reconnect the event socket)")
        if conn.server != actor.identity.server or conn.user_id != actor.identity.user_id:
            raise PermissionDenied("connection_id belongs to another user")
        self.hub.watch(conn, cid)
        return conn

    # ------------------------------------------------------------ events

    async def publish(self, event_type: str, call: CallRecord, ct: CallTypeRecord, *,
                      actor: Actor | None = None, to_users: Iterable[str] | None = None,
                      **extra: Any) -> int:
        """Send one event about ``call`` to its watchers (or to ``to_users``' connections)."""
        body: dict[str, Any] = {
            "type": event_type,
            "created_at": datetime.now(UTC).isoformat(),
            "call_cid": call.cid,
            "call": self.call_response(call, ct).model_dump(mode="json"),
        }
        if actor is not None and actor.user is not None:
            body["user"] = self.user_response(actor.user).model_dump(mode="json")
        for key, value in extra.items():
            body[key] = value
        common = json.dumps(body, separators=(",", ":"))[:-1]
        users: dict[str, UserRecord | None] = {}

        async def render(conn: Connection) -> str | None:
            if conn.server:
                caps = set(CAPABILITIES)
            else:
                assert conn.user_id is not None
                if conn.user_id not in users:
                    users[conn.user_id] = await self.user(conn.user_id)
                user = users[conn.user_id]
                caps = self.capabilities(user, call, ct) if user else set()
                if "read-call" not in caps:
                    return None
            return common + ',"own_capabilities":' + json.dumps(sorted_capabilities(caps)) + "}"

        if to_users is not None:
            return await self.hub.deliver(self.hub.connections_of(to_users), render)
        return await self.hub.deliver(self.hub.watchers(call.cid), render, cid=call.cid)

    async def _ring_and_notify(self, call: CallRecord, ct: CallTypeRecord, actor: Actor,
                               ring: bool, notify: bool) -> None:
        targets = [uid for uid in call.members if uid != actor.user_id]
        if ring:
            await self.publish("call.ring", call, ct, actor=actor, to_users=targets)
        if notify:
            await self.publish("call.notification", call, ct, actor=actor, to_users=targets)

    # ------------------------------------------------------------ calls

    def _state(self, call: CallRecord, ct: CallTypeRecord, actor: Actor, created: bool = False) -> CallStateResponse:
        return CallStateResponse(call=self.call_response(call, ct),
                                 own_capabilities=sorted_capabilities(self.capabilities(actor.user, call, ct)),
                                 created=created)

    async def get_call(self, identity: Identity, call_type: str, call_id: str,
                       connection_id: str | None = None, session_id: str | None = None) -> CallStateResponse:
        """Load a call and watch it. ``session_id`` re-attaches our participant session to a new
        event connection (after a reconnect) so its heartbeats keep it alive."""
        actor = await self.actor(identity)
        ct = await self._call_type(call_type)
        call = await self._call(call_type, call_id)
        self._require(self.capabilities(actor.user, call, ct), "read-call", actor, call)
        conn = self._watch(actor, connection_id, call.cid)
        if session_id is not None:
            mine = next((p for p in call.participants if p.session_id == session_id), None)
            if mine is not None and mine.user_id == actor.user_id and conn is not None:
                conn.sessions.add(session_id)
                await self.store.touch_participants([session_id], time.time())
        return self._state(call, ct, actor)

    async def _get_or_create(self, actor: Actor, call_type: str, call_id: str,
                             data: CallRequest | None) -> tuple[CallRecord, CallTypeRecord, bool]:
        ct = await self._call_type(call_type)
        existing = await self.store.get_call(f"{call_type}:{call_id}")
        if existing is not None:
            self._require(self.capabilities(actor.user, existing, ct), "read-call", actor, existing)
            return existing, ct, False
        data = data or CallRequest()
        if actor.user is not None:
            self.limiter.check(actor.user.id, "call creation")
            if "create-call" not in capabilities_for(ct.grants, {actor.user.role}):
                raise PermissionDenied(f"user {actor.user.id} lacks 'create-call' on call type {call_type!r}")
            if data.created_by_id not in (None, actor.user.id):
                raise PermissionDenied("only server-side requests may set created_by_id")
            if data.team is not None and data.team not in actor.user.teams:
                raise PermissionDenied(f"user {actor.user.id} is not in team {data.team!r}")
            creator = actor.user.id
        else:
            if data.created_by_id is None:
                raise InvalidRequest("server-side call creation needs data.created_by_id")
            await self.store.ensure_user(data.created_by_id)
            creator = data.created_by_id
        validate_settings(ct.settings, data.settings_override)
        now = time.time()
        record = CallRecord(
            type=call_type, id=call_id, created_by=creator, created_at=now, updated_at=now,
            starts_at=_ts(data.starts_at), team=data.team, custom=data.custom,
            settings_override=data.settings_override,
        )
        members = [MemberRecord(user_id=m.user_id, role=m.role, custom=m.custom) for m in data.members]
        created = await self.store.create_call(record, members)
        call = await self._call(call_type, call_id)
        if not created:  # lost a creation race: the other request's call stands
            self._require(self.capabilities(actor.user, call, ct), "read-call", actor, call)
            return call, ct, False
        logger.info("call %s created by %s", call.cid, creator)
        await self.publish("call.created", call, ct, actor=actor,
                           members=[self.member_response(m).model_dump(mode="json") for m in call.members.values()])
        return call, ct, True

    async def get_or_create_call(self, identity: Identity, call_type: str, call_id: str,
                                 request: GetOrCreateCallRequest,
                                 connection_id: str | None = None) -> CallStateResponse:
        actor = await self.actor(identity)
        call, ct, created = await self._get_or_create(actor, call_type, call_id, request.data)
        self._watch(actor, connection_id, call.cid)
        data = request.data or CallRequest()
        await self._ring_and_notify(call, ct, actor, request.ring or data.ring, request.notify or data.notify)
        return self._state(call, ct, actor, created)

    def _check_join(self, actor: Actor, call: CallRecord, ct: CallTypeRecord, caps: set[str]) -> None:
        self._require(caps, "join-call", actor, call)
        if call.ended_at is not None and "join-ended-call" not in caps:
            raise CallEnded(f"call {call.cid} has ended")
        settings = self.settings_of(call, ct)
        if settings.backstage.enabled and not call.live and "join-backstage" not in caps:
            ahead = settings.backstage.join_ahead_time_seconds
            if call.starts_at is not None and ahead > 0:
                opens = call.starts_at - ahead
                if time.time() >= opens:
                    return
                raise BackstageClosed(f"call {call.cid} is in backstage; it opens to you at {_dt(opens).isoformat()}")
            raise BackstageClosed(f"call {call.cid} is in backstage and not live yet")
        limit = settings.limits.max_participants
        if limit is not None and len(call.participants) >= limit:
            raise CallFull(f"call {call.cid} has reached its limit of {limit} participants")

    async def join_call(self, identity: Identity, call_type: str, call_id: str, request: JoinCallRequest,
                        connection_id: str | None = None, media_url: str | None = None) -> JoinCallResponse:
        actor = await self.actor(identity)
        if actor.user is None:
            raise InvalidRequest("the server cannot join a call; use a user token")
        self.limiter.check(actor.user.id, "join")
        if request.create:
            call, ct, created = await self._get_or_create(actor, call_type, call_id, request.data)
        else:
            ct = await self._call_type(call_type)
            call, created = await self._call(call_type, call_id), False
        caps = self.capabilities(actor.user, call, ct)
        self._check_join(actor, call, ct, caps)
        now = time.time()
        participant = ParticipantRecord(session_id=secrets.token_hex(8), user_id=actor.user.id,
                                        joined_at=now, last_seen=now)
        updated = await self.store.add_participant(call.cid, participant)
        if updated is None:
            raise CallNotFound(f"call {call.cid} does not exist")
        call = updated
        conn = self._watch(actor, connection_id, call.cid)
        if conn is not None:
            conn.sessions.add(participant.session_id)
        logger.info("user %s joined %s as session %s", actor.user.id, call.cid, participant.session_id)
        await self.publish("call.session_participant_joined", call, ct, actor=actor,
                           participant=self.participant_response(participant).model_dump(mode="json"))
        data = request.data or CallRequest()
        await self._ring_and_notify(call, ct, actor, request.ring or data.ring, request.notify or data.notify)
        token = self.tokens.create_media_token(actor.user.id, call.cid, participant.session_id,
                                               ttl=self.config.media_token_ttl_s)
        return JoinCallResponse(
            call=self.call_response(call, ct), own_capabilities=sorted_capabilities(caps), created=created,
            participant=self.participant_response(participant),
            credentials=MediaCredentials(url=media_url or self.config.media_url, token=token,
                                         ice_servers=list(self.config.ice_servers)),
        )

    async def leave_call(self, identity: Identity, call_type: str, call_id: str, session_id: str) -> CallStateResponse:
        actor = await self.actor(identity)
        ct = await self._call_type(call_type)
        call = await self._call(call_type, call_id)
        mine = [p for p in call.participants if p.session_id == session_id]
        if not mine or (actor.user is not None and mine[0].user_id != actor.user.id):
            raise InvalidRequest(f"session {session_id!r} is not a participant of {call.cid} for this user")
        return self._state(await self.remove_sessions(call, ct, [session_id], actor), ct, actor)

    async def remove_sessions(self, call: CallRecord, ct: CallTypeRecord, session_ids: list[str],
                              actor: Actor | None = None) -> CallRecord:
        """Remove participant sessions (leave, timeout, kick) and tell the watchers."""
        gone = [p for p in call.participants if p.session_id in session_ids]
        updated = await self.store.remove_participants(call.cid, session_ids) or call
        for conn_sessions in session_ids:
            for conn in self.hub.connections_with_session(conn_sessions):
                conn.sessions.discard(conn_sessions)
        for p in gone:
            if self.media is not None:
                self.media.session_removed(call.cid, p.session_id)
            logger.info("session %s of %s left %s", p.session_id, p.user_id, call.cid)
            await self.publish("call.session_participant_left", updated, ct, actor=actor,
                               participant=self.participant_response(p).model_dump(mode="json"))
        return updated

    async def update_call(self, identity: Identity, call_type: str, call_id: str,
                          request: UpdateCallRequest) -> CallStateResponse:
        actor = await self.actor(identity)
        ct = await self._call_type(call_type)
        call = await self._call(call_type, call_id)
        caps = self.capabilities(actor.user, call, ct)
        fields: dict[str, Any] = {}
        if request.custom is not None:
            self._require(caps, "update-call", actor, call)
            fields["custom"] = request.custom
        if request.starts_at is not None:
            self._require(caps, "update-call", actor, call)
            fields["starts_at"] = _ts(request.starts_at)
        if request.settings_override is not None:
            self._require(caps, "update-call-settings", actor, call)
            override = deep_merge(call.settings_override, request.settings_override)
            validate_settings(ct.settings, override)
            fields["settings_override"] = override
        if not fields:
            raise InvalidRequest("nothing to update: give custom, settings_override or starts_at")
        updated = await self.store.update_call(call.cid, **fields)
        if updated is None:
            raise CallNotFound(f"call {call.cid} does not exist")
        await self.publish("call.updated", updated, ct, actor=actor)
        return self._state(updated, ct, actor)

    async def update_call_members(self, identity: Identity, call_type: str, call_id: str,
                                  request: UpdateCallMembersRequest) -> CallStateResponse:
        actor = await self.actor(identity)
        ct = await self._call_type(call_type)
        call = await self._call(call_type, call_id)
        self._require(self.capabilities(actor.user, call, ct), "update-call-member", actor, call)
        if not request.update_members and not request.remove_members:
            raise InvalidRequest("nothing to do: give update_members or remove_members")
        overlap = {m.user_id for m in request.update_members} & set(request.remove_members)
        if overlap:
            raise InvalidRequest(f"users both updated and removed: {sorted(overlap)}")
        before = dict(call.members)
        upserts = [MemberRecord(user_id=m.user_id, role=m.role, custom=m.custom) for m in request.update_members]
        updated = await self.store.update_members(call.cid, upserts, request.remove_members)
        if updated is None:
            raise CallNotFound(f"call {call.cid} does not exist")
        added = [updated.members[m.user_id] for m in upserts if m.user_id not in before]
        changed = [updated.members[m.user_id] for m in upserts if m.user_id in before]
        removed = [uid for uid in request.remove_members if uid in before]
        dump = self.member_response
        if added:
            await self.publish("call.member_added", updated, ct, actor=actor,
                               members=[dump(m).model_dump(mode="json") for m in added])
        if changed:
            await self.publish("call.member_updated", updated, ct, actor=actor,
                               members=[dump(m).model_dump(mode="json") for m in changed])
        if removed:
            await self.publish("call.member_removed", updated, ct, actor=actor, removed_user_ids=removed)
        return self._state(updated, ct, actor)

    async def end_call(self, identity: Identity, call_type: str, call_id: str) -> CallStateResponse:
        actor = await self.actor(identity)
        ct = await self._call_type(call_type)
        call = await self._call(call_type, call_id)
        self._require(self.capabilities(actor.user, call, ct), "end-call", actor, call)
        if call.ended_at is not None:
            return self._state(call, ct, actor)
        ended = await self.store.end_call(call.cid, actor.user_id or "server")
        if ended is None:
            raise CallNotFound(f"call {call.cid} does not exist")
        for p in call.participants:
            for conn in self.hub.connections_with_session(p.session_id):
                conn.sessions.discard(p.session_id)
        if self.media is not None:
            self.media.call_ended(call.cid)
        logger.info("call %s ended by %s", call.cid, actor.identity.label)
        await self.publish("call.ended", ended, ct, actor=actor)
        return self._state(ended, ct, actor)

    async def set_live(self, identity: Identity, call_type: str, call_id: str, live: bool) -> CallStateResponse:
        actor = await self.actor(identity)
        ct = await self._call_type(call_type)
        call = await self._call(call_type, call_id)
        self._require(self.capabilities(actor.user, call, ct), "update-call", actor, call)
        if call.ended_at is not None:
            raise CallEnded(f"call {call.cid} has ended")
        if call.live == live:
            return self._state(call, ct, actor)
        updated = await self.store.update_call(call.cid, live=live)
        if updated is None:
            raise CallNotFound(f"call {call.cid} does not exist")
        await self.publish("call.live_started" if live else "call.live_stopped", updated, ct, actor=actor)
        return self._state(updated, ct, actor)

    # ------------------------------------------------------------ admin (server token only)

    @staticmethod
    def require_server(identity: Identity) -> None:
        if not identity.server:
            raise PermissionDenied("this route needs a server token")

    async def upsert_users(self, identity: Identity, users: list[UserRequest]) -> list[UserResponse]:
        self.require_server(identity)
        records = await self.store.upsert_users(
            UserRecord(id=u.id, name=u.name, role=u.role, teams=u.teams, custom=u.custom) for u in users)
        for r in records:
            self._users.pop(r.id, None)
        return [self.user_response(r) for r in records]

    async def get_user(self, identity: Identity, user_id: str) -> UserResponse:
        if not identity.server and identity.user_id != user_id:
            raise PermissionDenied("users may only read themselves")
        user = await self.store.get_user(user_id)
        if user is None:
            raise NotFound(f"user {user_id!r} does not exist")
        return self.user_response(user)

    @staticmethod
    def call_type_response(ct: CallTypeRecord) -> CallTypeResponse:
        return CallTypeResponse(name=ct.name, grants=ct.grants, settings=validate_settings(ct.settings),
                                created_at=_dt(ct.created_at), updated_at=_dt(ct.updated_at))

    async def list_call_types(self, identity: Identity) -> list[CallTypeResponse]:
        self.require_server(identity)
        return [self.call_type_response(ct) for ct in await self.store.list_call_types()]

    async def get_call_type(self, identity: Identity, name: str) -> CallTypeResponse:
        self.require_server(identity)
        return self.call_type_response(await self._call_type(name))

    async def create_call_type(self, identity: Identity, request: CallTypeRequest) -> CallTypeResponse:
        self.require_server(identity)
        validate_settings(request.settings)
        grants: dict[str, list[str]] = {role: list(dict.fromkeys(caps)) for role, caps in request.grants.items()}
        record = CallTypeRecord(name=request.name, grants=grants, settings=request.settings)
        if not await self.store.create_call_type(record):
            raise Conflict(f"call type {request.name!r} already exists")
        return self.call_type_response(await self._call_type(request.name))

    async def update_call_type(self, identity: Identity, name: str, request: UpdateCallTypeRequest) -> CallTypeResponse:
        self.require_server(identity)
        ct = await self._call_type(name)
        if request.grants is not None:
            for role, caps in request.grants.items():
                ct.grants[role] = list(dict.fromkeys(caps))
        if request.settings is not None:
            ct.settings = deep_merge(ct.settings, request.settings)
            validate_settings(ct.settings)
        await self.store.save_call_type(ct)
        return self.call_type_response(await self._call_type(name))

    async def delete_call_type(self, identity: Identity, name: str) -> None:
        self.require_server(identity)
        if name in BUILTIN_CALL_TYPES:
            raise InvalidRequest(f"built-in call type {name!r} cannot be deleted")
        if not await self.store.delete_call_type(name):
            raise CallTypeNotFound(f"call type {name!r} does not exist")

    async def list_calls(self, identity: Identity, limit: int = 100) -> list[CallResponse]:
        self.require_server(identity)
        out = []
        for call in await self.store.list_calls(limit):
            ct = await self.store.get_call_type(call.type)
            if ct is not None:
                out.append(self.call_response(call, ct))
        return out

    async def set_published_tracks(self, cid: str, session_id: str, tracks: list[str]) -> None:
        """Record what a session sends now (its mute state) and tell the call's watchers."""
        call = await self.store.get_call(cid)
        current = next((p for p in call.participants if p.session_id == session_id), None) if call else None
        if current is None or sorted(current.published_tracks) == sorted(tracks):
            return
        updated = await self.store.set_published_tracks(cid, session_id, tracks)
        ct = await self.store.get_call_type(updated.type) if updated else None
        if updated is None or ct is None:
            return
        participant = next(p for p in updated.participants if p.session_id == session_id)
        await self.publish("call.session_participant_updated", updated, ct,
                           participant=self.participant_response(participant).model_dump(mode="json"))

    # ------------------------------------------------------------ liveness

    async def reap_stale_participants(self, timeout_s: float) -> int:
        """Remove participants whose heartbeats stopped more than ``timeout_s`` ago."""
        stale = await self.store.stale_participants(time.time() - timeout_s)
        by_call: dict[str, list[str]] = {}
        for cid, sid in stale:
            by_call.setdefault(cid, []).append(sid)
        for cid, sids in by_call.items():
            call = await self.store.get_call(cid)
            ct = await self.store.get_call_type(call.type) if call else None
            if call is not None and ct is not None:
                logger.info("participants %s of %s timed out", sids, cid)
                await self.remove_sessions(call, ct, sids)
        return len(stale)
