"""Every class of bad input gets its typed error and leaves the coordinator's state unchanged."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import jwt
import pytest
import websockets

from signaling import CallNotFound, CallTypeNotFound, InvalidRequest, PayloadTooLarge, Unauthenticated
from signaling.models import CUSTOM_MAX_BYTES, MAX_BODY_BYTES
from signaling.server.records import MemberRecord
from signaling.server.store import SQLiteStore
from tests.conftest import API_KEY, API_SECRET


@pytest.fixture
async def seeded(client_for):
    """alice's call ``default:c`` with custom data and one member, plus a raw HTTP client as alice."""
    alice = await client_for("alice")
    call = alice.call("default", "c")
    await call.get_or_create(data={"custom": {"v": 1}, "members": [{"user_id": "bob"}]})
    http = httpx.AsyncClient(base_url=alice.url, headers={"X-Api-Key": API_KEY,
                                                          "Authorization": f"Bearer {alice._token}"})
    yield call, http
    await http.aclose()


async def assert_unchanged(call) -> None:
    before = call.state.version
    await call.get()
    assert call.state.version == before
    assert call.state.custom == {"v": 1} and set(call.state.members) == {"bob"}


def expect(resp: httpx.Response, status: int, code: str) -> dict:
    body = resp.json()
    assert resp.status_code == status, body
    assert body["code"] == code and body["status"] == status and body["message"]
    assert "Traceback" not in resp.text
    return body


async def test_malformed_json(seeded):
    call, http = seeded
    json_header = {"content-type": "application/json"}
    expect(await http.patch("/video/call/default/c", content=b"{not json", headers=json_header), 400, "invalid_request")
    expect(await http.post("/video/call/default/c/members", json=["a", "list"]), 400, "invalid_request")
    await assert_unchanged(call)


async def test_invalid_call_id(seeded, client_for):
    call, http = seeded
    expect(await http.post("/video/call/default/" + "x" * 65), 400, "invalid_request")
    expect(await http.post("/video/call/default/bad%20id"), 400, "invalid_request")
    expect(await http.post("/video/call/Bad-Type/c"), 400, "invalid_request")
    alice = await client_for("alice2")
    with pytest.raises(InvalidRequest):
        alice.call("default", "no spaces allowed")
    await assert_unchanged(call)


async def test_custom_data_cap(seeded):
    call, http = seeded
    big = {"blob": "x" * (CUSTOM_MAX_BYTES + 1)}
    expect(await http.patch("/video/call/default/c", json={"custom": big}), 413, "payload_too_large")
    expect(await http.post("/video/call/default/new", json={"data": {"custom": big}}), 413, "payload_too_large")
    with pytest.raises(PayloadTooLarge):
        await call.update(custom=big)
    with pytest.raises(CallNotFound):
        await call.client.call("default", "new").get()
    await assert_unchanged(call)


async def test_request_body_cap(seeded):
    call, http = seeded
    body = b'{"custom": {"a": "' + b"x" * MAX_BODY_BYTES + b'"}}'
    expect(await http.patch("/video/call/default/c", content=body, headers={"content-type": "application/json"}),
           413, "payload_too_large")
    await assert_unchanged(call)


async def test_unknown_call_type(seeded):
    call, http = seeded
    expect(await http.post("/video/call/nope/c2"), 404, "call_type_not_found")
    with pytest.raises(CallTypeNotFound):
        await call.client.call("nope", "c2").get_or_create()


async def test_unknown_role_refused_and_no_partial_member_write(seeded):
    call, http = seeded
    body = {"update_members": [{"user_id": "carol"}, {"user_id": "dave", "role": "emperor"}]}
    expect(await http.post("/video/call/default/c/members", json=body), 400, "invalid_request")
    with pytest.raises(InvalidRequest):  # also refused client-side, before sending
        await call.update_call_members(update_members=body["update_members"])
    await assert_unchanged(call)


async def test_unknown_capability_refused(server_client):
    with pytest.raises(InvalidRequest):
        await server_client.create_call_type("typo", grants={"user": ["join-cal"]})
    http = server_client._http
    expect(await http.post("/video/calltypes", json={"name": "typo", "grants": {"user": ["fly"]}}),
           400, "invalid_request")
    expect(await http.post("/video/calltypes", json={"name": "typo", "grants": {"wizard": ["join-call"]}}),
           400, "invalid_request")
    with pytest.raises(CallTypeNotFound):
        await server_client.get_call_type("typo")


async def test_unknown_and_wrongly_typed_settings(seeded):
    call, http = seeded
    expect(await http.patch("/video/call/default/c", json={"settings_override": {"video": {"fps": "fast"}}}),
           400, "invalid_request")
    expect(await http.patch("/video/call/default/c", json={"settings_override": {"colour": {"x": 1}}}),
           400, "invalid_request")
    expect(await http.post("/video/call/default/c3", json={"data": {"settings_override": {"audio": {"nope": 1}}}}),
           400, "invalid_request")
    expect(await http.post("/video/call/default/c3", json={"data": {"unknown_option": 1}}), 400, "invalid_request")
    await assert_unchanged(call)
    with pytest.raises(CallNotFound):
        await call.client.call("default", "c3").get()


@pytest.mark.parametrize("case", ["missing", "malformed", "wrong_secret", "expired", "wrong_api_key",
                                  "media_token"])
async def test_bad_tokens_refused(seeded, coordinator, case):
    call, _ = seeded
    now = int(time.time())
    headers = {"X-Api-Key": API_KEY}
    if case == "malformed":
        headers["Authorization"] = "Bearer not.a.jwt"
    elif case == "wrong_secret":
        other_secret = "other-secret-" + "y" * 32
        headers["Authorization"] = "Bearer " + jwt.encode({"user_id": "alice", "iat": now}, other_secret, "HS256")
    elif case == "expired":
        headers["Authorization"] = "Bearer " + jwt.encode({"user_id": "alice", "iat": now - 100, "exp": now - 60},
                                                          API_SECRET, "HS256")
    elif case == "wrong_api_key":
        headers = {"X-Api-Key": "nope", "Authorization": "Bearer " + coordinator.user_token("alice")}
    elif case == "media_token":
        headers["Authorization"] = "Bearer " + coordinator.tokens.create_media_token("alice", "default:c", "s1")
    async with httpx.AsyncClient(base_url=coordinator.url, headers=headers) as http:
        body = expect(await http.patch("/video/call/default/c", json={"custom": {"v": 2}}), 401, "unauthenticated")
    assert API_SECRET not in json.dumps(body)
    await assert_unchanged(call)


async def test_expired_token_refused_by_client(coordinator):
    from signaling import Client

    token = coordinator.user_token("alice", expires_in=-60)
    client = Client(coordinator.url, api_key=API_KEY, token=token)
    with pytest.raises(Unauthenticated) as info:
        await client.connect()
    assert info.value.code == "unauthenticated"
    await client.aclose()


async def test_event_socket_refuses_bad_auth_and_huge_messages(coordinator, seeded):
    call, _ = seeded
    ws_url = coordinator.url.replace("http", "ws") + "/video/connect"
    async with websockets.connect(ws_url) as ws:
        await ws.send("garbage")
        reply = json.loads(await ws.recv())
        assert reply["type"] == "connection.error" and reply["error"]["code"] == "invalid_request"
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"type": "auth", "api_key": API_KEY, "token": "x.y.z"}))
        reply = json.loads(await ws.recv())
        assert reply["error"]["code"] == "unauthenticated"
    async with websockets.connect(ws_url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "auth", "api_key": API_KEY, "token": coordinator.user_token("eve")}))
        assert json.loads(await ws.recv())["type"] == "connection.ok"
        await ws.send(json.dumps({"type": "nonsense"}))
        assert json.loads(await ws.recv())["error"]["code"] == "invalid_request"
        await ws.send("x" * 200_000)  # over the message cap: the server closes this socket only
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    await assert_unchanged(call)  # and the server keeps serving


async def test_store_rolls_back_a_failing_member_update():
    store = SQLiteStore(":memory:")
    from signaling.server.records import CallRecord

    now = time.time()
    await store.create_call(CallRecord(type="default", id="c", created_by="a", created_at=now, updated_at=now),
                            [MemberRecord(user_id="bob")])
    poisoned = MemberRecord(user_id="dave", custom={"bad": object()})  # not JSON-serialisable: fails mid-write
    with pytest.raises(TypeError):
        await store.update_members("default:c", [MemberRecord(user_id="carol"), poisoned], ["bob"])
    call = await store.get_call("default:c")
    assert set(call.members) == {"bob"} and call.version == 1
    await store.close()


async def test_a_remembered_token_is_still_refused_once_it_expires(coordinator):
    """The coordinator remembers verified tokens (no HMAC per request); expiry still applies on every use."""
    token = coordinator.user_token("alice", expires_in=1)
    headers = {"X-Api-Key": API_KEY, "Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=coordinator.url, headers=headers) as http:
        for _ in range(3):  # verified once, then served from memory
            assert (await http.post("/video/call/default/remembered", json={})).status_code == 200
        await asyncio.sleep(3.5)  # past exp + the 2 s leeway
        body = expect(await http.get("/video/call/default/remembered"), 401, "unauthenticated")
        assert "expired" in body["message"]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    async with httpx.AsyncClient(base_url=coordinator.url,
                                 headers={"X-Api-Key": API_KEY, "Authorization": f"Bearer {forged}"}) as http:
        expect(await http.get("/video/call/default/remembered"), 401, "unauthenticated")
