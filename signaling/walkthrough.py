"""A tour of the call API against an embedded coordinator: every operation of the reference,
printed step by step. ``callrt walkthrough`` runs it; the tests run it too."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from signaling.call import Call
from signaling.client import Client, ServerClient
from signaling.errors import BackstageClosed, CallEnded, PermissionDenied
from signaling.server.config import ServerConfig
from signaling.server.embedded import EmbeddedCoordinator

logger = logging.getLogger(__name__)


@dataclass
class Step:
    name: str
    ok: bool
    ms: float
    detail: str


@dataclass
class WalkthroughReport:
    url: str
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "ok": self.ok, "steps": [asdict(s) for s in self.steps]}


async def run_walkthrough(url: str, api_key: str, api_secret: str, on_step: Any = None) -> WalkthroughReport:
    """Run every reference operation against the coordinator at ``url``; each step checks its outcome."""
    report = WalkthroughReport(url=url)
    suffix = str(int(time.time() * 1000) % 10**8)

    async def step(name: str, coro: Any) -> Any:
        t0 = time.perf_counter()
        try:
            detail = await coro
            ok = True
        except Exception as exc:  # a failed step is reported, and the tour goes on
            detail, ok = f"FAILED: {type(exc).__name__}: {exc}", False
        s = Step(name, ok, (time.perf_counter() - t0) * 1000, str(detail))
        report.steps.append(s)
        if on_step:
            on_step(s)

    async with ServerClient(url, api_key=api_key, api_secret=api_secret) as server:
        await server.upsert_users([{"id": "alice", "name": "Alice", "role": "user"},
                                   {"id": "bob", "name": "Bob"}, {"id": "charlie", "name": "Charlie"}])
        clients = {u: Client(url, api_key=api_key, token=server.create_token(u)) for u in ("alice", "bob", "charlie")}
        for c in clients.values():
            c.media_factory = None  # the API tour is signaling-only; `callrt demo` moves media
            await c.connect()  # connected users receive call.ring
        try:
            alice, bob, charlie = clients["alice"], clients["bob"], clients["charlie"]
            cid = f"test-call-{suffix}"
            a: Call = alice.call("default", cid)
            b: Call = bob.call("default", cid)
            rings: list[Any] = []
            bob.on("call.ring", rings.append)

            async def create() -> str:
                r = await a.get_or_create(data={"members": [{"user_id": "alice", "role": "admin"}, {"user_id": "bob"}],
                                                "custom": {"color": "blue"}, "ring": True})
                return f"created={r.created} members={sorted(a.state.members)} custom={a.state.custom}"

            await step("get_or_create with members, custom data and ring", create())

            async def ring() -> str:
                for _ in range(100):
                    if rings:
                        return f"bob was rung by {rings[0].user.id}"
                    await asyncio.sleep(0.02)
                raise AssertionError("bob was not rung")

            await step("call.ring reaches the members", ring())

            async def load() -> str:
                await b.get()
                return f"bob sees custom={b.state.custom}, created_by={b.state.created_by}"

            await step("get (load and watch)", load())

            async def lobby_and_join() -> str:
                await a.camera.disable()
                await a.microphone.enable()
                await a.join()
                await b.join()
                return (f"alice camera={a.camera.status.value} mic={a.microphone.status.value}; "
                        f"participants={[p.user_id for p in a.state.participants]}")

            await step("camera/microphone before join, then join", lobby_and_join())

            async def update() -> str:
                await a.update(custom={"color": "green"}, settings_override={"recording": {"mode": "disabled"}})
                for _ in range(100):
                    if b.state.custom == {"color": "green"}:
                        break
                    await asyncio.sleep(0.02)
                mode = b.state.settings.recording.mode if b.state.settings else "?"
                return f"bob's state updated live: custom={b.state.custom} recording={mode}"

            await step("update custom and settings_override (seen live by bob)", update())

            async def members() -> str:
                await a.update_call_members(update_members=[{"user_id": "charlie", "role": "admin"}],
                                            remove_members=["bob"])
                return f"members={ {k: v.role for k, v in a.state.members.items()} }"

            await step("update_call_members", members())

            async def restricted() -> str:
                name = f"my-call-type-{suffix}"
                await server.create_call_type(name, grants=(await server.get_call_type("default")).grants)
                await server.revoke(name, "user", ["join-call"])
                await server.grant(name, "call_member", ["join-call"])
                owner = alice.call(name, "my-call-id")
                await owner.get_or_create(data={"members": [{"user_id": "bob", "role": "call_member"}]})
                try:
                    await charlie.call(name, "my-call-id").join()
                    raise AssertionError("charlie joined a members-only call")
                except PermissionDenied:
                    pass
                joined = bob.call(name, "my-call-id")
                await joined.join()
                await joined.leave()
                return "user role lost join-call; the member joined, the non-member was refused"

            await step("restricted access in two steps", restricted())

            async def backstage() -> str:
                live = alice.call("livestream", f"show-{suffix}")
                await live.get_or_create(data={"starts_at": datetime.now(UTC) + timedelta(seconds=500),
                                               "settings_override": {"backstage": {"enabled": True,
                                                                                   "join_ahead_time_seconds": 300}}})
                try:
                    await charlie.call("livestream", f"show-{suffix}").join()
                    raise AssertionError("joined a closed backstage")
                except BackstageClosed as exc:
                    refused = exc.code
                await live.go_live()
                viewer = charlie.call("livestream", f"show-{suffix}")
                await viewer.join()
                await viewer.leave()
                return f"before go_live: {refused}; after go_live the viewer joined"

            await step("backstage, join_ahead_time_seconds and go_live", backstage())

            async def leave_and_end() -> str:
                await b.leave()
                await a.end_call()
                try:  # bob is no longer a member: a plain user lacks join-ended-call
                    await bob.call("default", cid).join()
                    raise AssertionError("joined an ended call")
                except CallEnded as exc:
                    code = exc.code
                return f"ended_at set; a later join is refused with {code}"

            await step("leave, end_call, join refused on an ended call", leave_and_end())
        finally:
            for c in clients.values():
                await c.aclose()
    return report


async def run_embedded_walkthrough(db_path: str = ":memory:", on_step: Any = None) -> WalkthroughReport:
    """Start a coordinator in-process and run the tour against it."""
    config = ServerConfig.from_env(db_path=db_path)
    async with EmbeddedCoordinator(config) as coordinator:
        return await run_walkthrough(coordinator.url, config.api_key, config.api_secret, on_step=on_step)
