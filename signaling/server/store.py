"""Persistence seam: every read and write of the coordinator goes through ``Store``.

``SQLiteStore`` is the embedded default (a file path, or ``:memory:`` for tests). Each
method that writes is one transaction, so a member update or a join is applied whole
or not at all. The interface is async so that a networked store (PostgreSQL) can
replace SQLite without touching the service; the SQLite calls themselves are short
and run on the event loop thread (WAL, ``synchronous=NORMAL``).
"""

from __future__ import annotations

import abc
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from signaling.server.records import (
    CallRecord,
    CallTypeRecord,
    MemberRecord,
    ParticipantRecord,
    UserRecord,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY, name TEXT, role TEXT NOT NULL, teams TEXT NOT NULL, custom TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS call_types (
    name TEXT PRIMARY KEY, grants TEXT NOT NULL, settings TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS calls (
    cid TEXT PRIMARY KEY, type TEXT NOT NULL, id TEXT NOT NULL, created_by TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, starts_at REAL, team TEXT,
    custom TEXT NOT NULL, settings_override TEXT NOT NULL, live INTEGER NOT NULL DEFAULT 0,
    ended_at REAL, ended_by TEXT, session_id TEXT, session_started_at REAL, session_ended_at REAL,
    version INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS members (
    cid TEXT NOT NULL, user_id TEXT NOT NULL, role TEXT, custom TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (cid, user_id));
CREATE TABLE IF NOT EXISTS participants (
    session_id TEXT PRIMARY KEY, cid TEXT NOT NULL, user_id TEXT NOT NULL,
    joined_at REAL NOT NULL, last_seen REAL NOT NULL, published_tracks TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS participants_cid ON participants (cid);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY, value TEXT NOT NULL, created_at REAL NOT NULL);
"""


class Store(abc.ABC):
    """What the coordinator needs from persistence."""

    # users
    @abc.abstractmethod
    async def get_user(self, user_id: str) -> UserRecord | None: ...

    @abc.abstractmethod
    async def ensure_user(self, user_id: str) -> UserRecord:
        """The user, created with role ``user`` if unknown."""

    @abc.abstractmethod
    async def upsert_users(self, users: Iterable[UserRecord]) -> list[UserRecord]: ...

    # call types
    @abc.abstractmethod
    async def get_call_type(self, name: str) -> CallTypeRecord | None: ...

    @abc.abstractmethod
    async def list_call_types(self) -> list[CallTypeRecord]: ...

    @abc.abstractmethod
    async def create_call_type(self, record: CallTypeRecord) -> bool:
        """Insert; False if the name exists."""

    @abc.abstractmethod
    async def save_call_type(self, record: CallTypeRecord) -> None: ...

    @abc.abstractmethod
    async def delete_call_type(self, name: str) -> bool: ...

    # calls
    @abc.abstractmethod
    async def get_call(self, cid: str) -> CallRecord | None: ...

    @abc.abstractmethod
    async def list_calls(self, limit: int = 100) -> list[CallRecord]: ...

    @abc.abstractmethod
    async def create_call(self, record: CallRecord, members: Iterable[MemberRecord]) -> bool:
        """Insert the call and its members in one transaction; False if it exists."""

    @abc.abstractmethod
    async def update_call(self, cid: str, **fields: Any) -> CallRecord | None:
        """Set call columns, bump version and updated_at; the new record or None if missing."""

    @abc.abstractmethod
    async def update_members(
        self, cid: str, upserts: Iterable[MemberRecord], removes: Iterable[str]
    ) -> CallRecord | None: ...

    @abc.abstractmethod
    async def add_participant(self, cid: str, participant: ParticipantRecord) -> CallRecord | None: ...

    @abc.abstractmethod
    async def remove_participants(self, cid: str, session_ids: Iterable[str]) -> CallRecord | None: ...

    @abc.abstractmethod
    async def set_published_tracks(self, cid: str, session_id: str, tracks: list[str]) -> CallRecord | None: ...

    @abc.abstractmethod
    async def touch_participants(self, session_ids: Iterable[str], now: float) -> None:
        """Record a heartbeat for these participant sessions."""

    @abc.abstractmethod
    async def stale_participants(self, older_than: float) -> list[tuple[str, str]]:
        """``(cid, session_id)`` of participants whose last heartbeat is older than ``older_than``."""

    @abc.abstractmethod
    async def end_call(self, cid: str, ended_by: str) -> CallRecord | None:
        """Mark ended, remove every participant, close the session."""

    @abc.abstractmethod
    async def close(self) -> None: ...


def _j(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class SQLiteStore(Store):
    """The embedded store. ``path`` is a file (created if missing) or ``":memory:"``."""

    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction: committed whole, or rolled back whole on any error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    # ------------------------------------------------------------ the server's own settings

    def setting(self, name: str, default: Any) -> Any:
        """The value stored under ``name``; ``default`` (JSON-serialisable) is stored and returned when there is
        none. Synchronous: read once at start-up (``callrt serve``'s development keys), before the event loop."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO settings (name, value, created_at) VALUES (?, ?, ?)",
                       (name, _j(default), time.time()))
            row = db.execute("SELECT value FROM settings WHERE name=?", (name,)).fetchone()
        return json.loads(row["value"])

    # ------------------------------------------------------------ users

    @staticmethod
    def _user(row: sqlite3.Row) -> UserRecord:
        return UserRecord(
            id=row["id"], name=row["name"], role=row["role"], teams=json.loads(row["teams"]),
            custom=json.loads(row["custom"]), created_at=row["created_at"], updated_at=row["updated_at"],
        )

    async def get_user(self, user_id: str) -> UserRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM users WHERE id=?", (user_id,)).fetchone()
        return self._user(row) if row else None

    async def ensure_user(self, user_id: str) -> UserRecord:
        existing = await self.get_user(user_id)  # the common case: a read, no write transaction
        if existing is not None:
            return existing
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO users (id, name, role, teams, custom, created_at, updated_at)"
                " VALUES (?, NULL, 'user', '[]', '{}', ?, ?)",
                (user_id, now, now),
            )
            row = db.execute("SELECT * FROM users WHERE id=?", (user_id,)).fetchone()
        return self._user(row)

    async def upsert_users(self, users: Iterable[UserRecord]) -> list[UserRecord]:
        now = time.time()
        out = []
        with self._tx() as db:
            for u in users:
                db.execute(
                    "INSERT INTO users (id, name, role, teams, custom, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET name=excluded.name,"
                    " role=excluded.role, teams=excluded.teams, custom=excluded.custom,"
                    " updated_at=excluded.updated_at",
                    (u.id, u.name, u.role, _j(u.teams), _j(u.custom), now, now),
                )
                out.append(self._user(db.execute("SELECT * FROM users WHERE id=?", (u.id,)).fetchone()))
        return out

    # ------------------------------------------------------------ call types

    @staticmethod
    def _call_type(row: sqlite3.Row) -> CallTypeRecord:
        return CallTypeRecord(
            name=row["name"], grants=json.loads(row["grants"]), settings=json.loads(row["settings"]),
            created_at=row["created_at"], updated_at=row["updated_at"],
        )

    async def get_call_type(self, name: str) -> CallTypeRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM call_types WHERE name=?", (name,)).fetchone()
        return self._call_type(row) if row else None

    async def list_call_types(self) -> list[CallTypeRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM call_types ORDER BY name").fetchall()
        return [self._call_type(r) for r in rows]

    async def create_call_type(self, record: CallTypeRecord) -> bool:
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO call_types (name, grants, settings, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (record.name, _j(record.grants), _j(record.settings), now, now),
            )
            return cur.rowcount == 1

    async def save_call_type(self, record: CallTypeRecord) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE call_types SET grants=?, settings=?, updated_at=? WHERE name=?",
                (_j(record.grants), _j(record.settings), time.time(), record.name),
            )

    async def delete_call_type(self, name: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM call_types WHERE name=?", (name,)).rowcount == 1

    # ------------------------------------------------------------ calls

    def _load_call(self, db: sqlite3.Connection, cid: str) -> CallRecord | None:
        row = db.execute("SELECT * FROM calls WHERE cid=?", (cid,)).fetchone()
        if row is None:
            return None
        rec = CallRecord(
            type=row["type"], id=row["id"], created_by=row["created_by"], created_at=row["created_at"],
            updated_at=row["updated_at"], starts_at=row["starts_at"], team=row["team"],
            custom=json.loads(row["custom"]), settings_override=json.loads(row["settings_override"]),
            live=bool(row["live"]), ended_at=row["ended_at"], ended_by=row["ended_by"],
            session_id=row["session_id"], session_started_at=row["session_started_at"],
            session_ended_at=row["session_ended_at"], version=row["version"],
        )
        for m in db.execute("SELECT * FROM members WHERE cid=? ORDER BY created_at, user_id", (cid,)):
            rec.members[m["user_id"]] = MemberRecord(
                user_id=m["user_id"], role=m["role"], custom=json.loads(m["custom"]),
                created_at=m["created_at"], updated_at=m["updated_at"],
            )
        for p in db.execute("SELECT * FROM participants WHERE cid=? ORDER BY joined_at, session_id", (cid,)):
            rec.participants.append(ParticipantRecord(
                session_id=p["session_id"], user_id=p["user_id"], joined_at=p["joined_at"],
                last_seen=p["last_seen"], published_tracks=json.loads(p["published_tracks"]),
            ))
        return rec

    async def get_call(self, cid: str) -> CallRecord | None:
        with self._lock:
            return self._load_call(self._db, cid)

    async def list_calls(self, limit: int = 100) -> list[CallRecord]:
        with self._lock:
            cids = [r[0] for r in self._db.execute(
                "SELECT cid FROM calls ORDER BY created_at DESC LIMIT ?", (limit,))]
            return [c for c in (self._load_call(self._db, cid) for cid in cids) if c is not None]

    def _bump(self, db: sqlite3.Connection, cid: str) -> None:
        db.execute("UPDATE calls SET version=version+1, updated_at=? WHERE cid=?", (time.time(), cid))

    async def create_call(self, record: CallRecord, members: Iterable[MemberRecord]) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO calls (cid, type, id, created_by, created_at, updated_at, starts_at,"
                " team, custom, settings_override, live, version) VALUES (?,?,?,?,?,?,?,?,?,?,?,1)",
                (record.cid, record.type, record.id, record.created_by, record.created_at,
                 record.updated_at, record.starts_at, record.team, _j(record.custom),
                 _j(record.settings_override), int(record.live)),
            )
            if cur.rowcount != 1:
                return False
            for m in members:
                self._upsert_member(db, record.cid, m)
        return True

    _CALL_COLUMNS = frozenset({"starts_at", "team", "custom", "settings_override", "live"})

    async def update_call(self, cid: str, **fields: Any) -> CallRecord | None:
        unknown = set(fields) - self._CALL_COLUMNS
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        with self._tx() as db:
            if db.execute("SELECT 1 FROM calls WHERE cid=?", (cid,)).fetchone() is None:
                return None
            for key, value in fields.items():
                if key in ("custom", "settings_override"):
                    value = _j(value)
                elif key == "live":
                    value = int(value)
                db.execute(f"UPDATE calls SET {key}=? WHERE cid=?", (value, cid))
            self._bump(db, cid)
            return self._load_call(db, cid)

    @staticmethod
    def _upsert_member(db: sqlite3.Connection, cid: str, m: MemberRecord) -> None:
        now = time.time()
        db.execute(
            "INSERT INTO members (cid, user_id, role, custom, created_at, updated_at) VALUES (?,?,?,?,?,?)"
            " ON CONFLICT(cid, user_id) DO UPDATE SET role=excluded.role, custom=excluded.custom,"
            " updated_at=excluded.updated_at",
            (cid, m.user_id, m.role, _j(m.custom), now, now),
        )
        db.execute(
            "INSERT OR IGNORE INTO users (id, name, role, teams, custom, created_at, updated_at)"
            " VALUES (?, NULL, 'user', '[]', '{}', ?, ?)",
            (m.user_id, now, now),
        )

    async def update_members(
        self, cid: str, upserts: Iterable[MemberRecord], removes: Iterable[str]
    ) -> CallRecord | None:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM calls WHERE cid=?", (cid,)).fetchone() is None:
                return None
            for m in upserts:
                self._upsert_member(db, cid, m)
            for user_id in removes:
                db.execute("DELETE FROM members WHERE cid=? AND user_id=?", (cid, user_id))
            self._bump(db, cid)
            return self._load_call(db, cid)

    async def add_participant(self, cid: str, participant: ParticipantRecord) -> CallRecord | None:
        with self._tx() as db:
            row = db.execute("SELECT session_id, session_ended_at FROM calls WHERE cid=?", (cid,)).fetchone()
            if row is None:
                return None
            if row["session_id"] is None or row["session_ended_at"] is not None:
                db.execute(
                    "UPDATE calls SET session_id=?, session_started_at=?, session_ended_at=NULL WHERE cid=?",
                    (f"s_{participant.session_id}", participant.joined_at, cid),
                )
            db.execute(
                "INSERT INTO participants (session_id, cid, user_id, joined_at, last_seen, published_tracks)"
                " VALUES (?,?,?,?,?,?)",
                (participant.session_id, cid, participant.user_id, participant.joined_at,
                 participant.last_seen, _j(participant.published_tracks)),
            )
            self._bump(db, cid)
            return self._load_call(db, cid)

    async def remove_participants(self, cid: str, session_ids: Iterable[str]) -> CallRecord | None:
        with self._tx() as db:
            removed = 0
            for sid in session_ids:
                removed += db.execute(
                    "DELETE FROM participants WHERE cid=? AND session_id=?", (cid, sid)).rowcount
            if removed:
                left = db.execute("SELECT COUNT(*) FROM participants WHERE cid=?", (cid,)).fetchone()[0]
                if left == 0:
                    db.execute("UPDATE calls SET session_ended_at=? WHERE cid=?", (time.time(), cid))
                self._bump(db, cid)
            return self._load_call(db, cid)

    async def set_published_tracks(self, cid: str, session_id: str, tracks: list[str]) -> CallRecord | None:
        with self._tx() as db:
            n = db.execute(
                "UPDATE participants SET published_tracks=? WHERE cid=? AND session_id=?",
                (_j(tracks), cid, session_id),
            ).rowcount
            if n == 0:
                return None
            self._bump(db, cid)
            return self._load_call(db, cid)

    async def touch_participants(self, session_ids: Iterable[str], now: float) -> None:
        ids = list(session_ids)
        if not ids:
            return
        with self._tx() as db:
            db.executemany("UPDATE participants SET last_seen=? WHERE session_id=?", [(now, s) for s in ids])

    async def stale_participants(self, older_than: float) -> list[tuple[str, str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT cid, session_id FROM participants WHERE last_seen < ?", (older_than,)).fetchall()
        return [(r["cid"], r["session_id"]) for r in rows]

    async def end_call(self, cid: str, ended_by: str) -> CallRecord | None:
        now = time.time()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM calls WHERE cid=?", (cid,)).fetchone() is None:
                return None
            db.execute("DELETE FROM participants WHERE cid=?", (cid,))
            db.execute(
                "UPDATE calls SET ended_at=?, ended_by=?, live=0,"
                " session_ended_at=CASE WHEN session_id IS NULL THEN NULL ELSE ? END WHERE cid=?",
                (now, ended_by, now, cid),
            )
            self._bump(db, cid)
            return self._load_call(db, cid)

    async def close(self) -> None:
        self.close_now()

    def close_now(self) -> None:
        """``close`` for callers without an event loop."""
        with self._lock:
            self._db.close()
