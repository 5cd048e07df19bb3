"""Isolation and auth: each rule shows the refusal and that nothing leaked."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
import websockets

from signaling import PermissionDenied
from tests.conftest import API_KEY, API_SECRET, eventually


async def test_a_token_cannot_act_as_another_user(client_for, coordinator):
    alice, mallory = await client_for("alice"), await client_for("mallory")
    call = alice.call("default", "private")
    await call.get_or_create(data={"members": [{"user_id": "bob"}]})
    # mallory names alice as the creator: refused, nothing created
    with pytest.raises(PermissionDenied):
        await mallory.call("default", "forged").get_or_create(data={"created_by_id": "alice"})
    # mallory watches through alice's event connection id: refused
    async with httpx.AsyncClient(base_url=coordinator.url, headers={
            "X-Api-Key": API_KEY, "Authorization": f"Bearer {mallory._token}"}) as http:
        resp = await http.get("/video/call/default/private", params={"connection_id": alice.connection_id})
        assert resp.status_code == 403 and resp.json()["code"] == "permission_denied"
        # and cannot leave (or end) alice's session
        await call.join()
        resp = await http.post("/video/call/default/private/leave", json={"session_id": call.session_id})
        assert resp.status_code == 400
        resp = await http.post("/video/call/default/private/mark_ended")
        assert resp.status_code == 403
    await call.get()
    assert [p.user_id for p in call.state.participants] == ["alice"] and call.state.ended_at is None


async def test_team_calls_are_invisible_outside_the_team(client_for, server_client):
    await server_client.upsert_users([{"id": "red1", "teams": ["red"]}, {"id": "blue1", "teams": ["blue"]}])
    red1, blue1 = await client_for("red1"), await client_for("blue1")
    red = red1.call("default", "red-room")
    await red.get_or_create(data={"team": "red", "custom": {"secret": "plans"}})
    events: list = []
    blue1.on("*", events.append)
    for op in (blue1.call("default", "red-room").get, blue1.call("default", "red-room").join,
               blue1.call("default", "red-room").get_or_create):
        with pytest.raises(PermissionDenied) as info:
            await op()
        assert "plans" not in info.value.message
    await red.update(custom={"secret": "new plans"})
    await asyncio.sleep(0.3)
    assert events == []  # no event of the red call reached blue1


async def test_no_events_of_another_call(client_for):
    alice, bob = await client_for("alice"), await client_for("bob")
    mine = alice.call("default", "mine")
    await mine.get_or_create()
    theirs = bob.call("default", "theirs")
    await theirs.get_or_create()
    seen: list = []
    bob.on("*", seen.append)
    await mine.update(custom={"x": 1})
    await mine.join()
    await theirs.update(custom={"y": 2})
    await eventually(lambda: seen)
    await asyncio.sleep(0.3)
    assert {e.call_cid for e in seen} == {"default:theirs"}


async def test_removed_member_stops_receiving_events(client_for, server_client):
    await server_client.create_call_type("closed", grants={
        "user": ["create-call"], "call_member": ["read-call", "join-call"],
        "host": ["read-call", "update-call", "update-call-member"]})
    owner, bob = await client_for("owner"), await client_for("bob")
    call = owner.call("closed", "room")
    await call.get_or_create(data={"members": [{"user_id": "bob"}]})
    watcher = bob.call("closed", "room")
    await watcher.get()
    seen: list = []
    watcher.on("*", seen.append)
    await call.update_call_members(remove_members=["bob"])
    await call.update(custom={"after": "removal"})
    await asyncio.sleep(0.4)
    assert all(e.type != "call.updated" for e in seen)
    assert watcher.state.custom != {"after": "removal"}


async def test_secrets_never_appear_in_logs_or_errors(coordinator, client_for, caplog):
    caplog.set_level(logging.DEBUG)
    alice = await client_for("alice")
    call = alice.call("default", "logged")
    await call.join(create=True)
    await call.update(custom={"a": 1})
    await call.leave()
    async with httpx.AsyncClient(base_url=coordinator.url) as http:
        bad = [await http.get("/video/call/default/logged",
                              headers={"X-Api-Key": API_KEY, "Authorization": "Bearer " + alice._token[:-3]}),
               await http.get("/video/call/default/logged",
                              headers={"X-Api-Key": "wrong", "Authorization": "Bearer " + alice._token})]
    ws_url = coordinator.url.replace("http", "ws") + "/video/connect"
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"type": "auth", "api_key": API_KEY, "token": alice._token + "x"}))
        bad_ws = await ws.recv()
    text = caplog.text + "".join(r.text for r in bad) + bad_ws + repr(coordinator.config)
    for secret in (API_SECRET, alice._token, alice._token[:-3]):
        assert secret not in text
    assert "unauthenticated" in bad_ws


async def test_a_slow_event_consumer_is_disconnected_not_buffered(coordinator, client_for, monkeypatch):
    import socket

    import websockets.sync.client as ws_sync

    from signaling.server import hub

    monkeypatch.setattr(hub, "CONNECTION_QUEUE_SIZE", 16)
    alice = await client_for("alice")
    call = alice.call("default", "flood")
    await call.get_or_create()
    for batch in range(10):  # 150 members with 4 KB of custom data each: every snapshot is ~600 KB
        await call.update_call_members(update_members=[{"user_id": f"m{batch}-{i}", "custom": {"bio": "x" * 4000}}
                                                       for i in range(15)])
    raw = socket.create_connection(("127.0.0.1", coordinator.port))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow = await asyncio.to_thread(ws_sync.connect, coordinator.url.replace("http", "ws") + "/video/connect",
                                   sock=raw, max_size=2**20)
    slow.pending_legacy_warning = False  # websockets warns about an argument this test does not use
    slow.send(json.dumps({"type": "auth", "api_key": API_KEY, "token": coordinator.user_token("slowpoke")}))
    conn_id = json.loads(slow.recv(timeout=5))["connection_id"]
    async with httpx.AsyncClient(base_url=coordinator.url, headers={
            "X-Api-Key": API_KEY, "Authorization": "Bearer " + coordinator.user_token("slowpoke")}) as http:
        assert (await http.get("/video/call/default/flood", params={"connection_id": conn_id})).status_code == 200
    # the slow socket never reads from here on
    closed = False
    for i in range(300):
        await call.update(custom={"i": i})
        async with httpx.AsyncClient() as http:
            health = (await http.get(coordinator.url + "/healthz")).json()
        if health["connections"] == 1:  # only alice's socket is left: the slow one was dropped
            closed = True
            break
    assert closed, "the slow consumer was never disconnected"
    await call.update(custom={"still": "serving"})  # the coordinator keeps serving
    slow.close()
