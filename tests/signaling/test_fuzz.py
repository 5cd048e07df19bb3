"""Property-based fuzzing of every REST route (from the OpenAPI schema) and of the WebSocket messages.

Every response must be a typed JSON error or a success, never a 5xx; a refused request changes
no call state; the server keeps serving. The number of cases run is printed (pytest -s).
"""

from __future__ import annotations

import json
import re

import httpx
import pytest
import websockets.sync.client as ws_sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signaling.server import EmbeddedCoordinator
from tests.conftest import API_KEY, make_config

pytestmark = pytest.mark.timeout(300)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
path_params = st.one_of(st.sampled_from(["sentinel", "default", "x", "my-call-id", "a" * 64, "a" * 65, "", " ",
                                          "..", "%00", "ünï", "a/b", "default:x"]),
                        st.text(max_size=20))
VALID_BODIES = [
    {"data": {"custom": {"c": 1}, "members": [{"user_id": "bob", "role": "admin"}]}, "ring": True},
    {"custom": {"k": "v"}, "settings_override": {"audio": {"mic_default_on": False}}},
    {"update_members": [{"user_id": "carol"}], "remove_members": ["bob"]},
    {"session_id": "abc"}, {"create": True, "data": {"team": "red"}},
    {"name": "fuzz-type", "grants": {"user": ["join-call"]}, "settings": {"video": {"fps": 15}}},
    {"users": [{"id": "u1", "role": "user", "teams": ["red"]}]},
]


def _mutate(body: dict, key: str, value: object) -> dict:
    out = json.loads(json.dumps(body))
    target = out
    while isinstance(target, dict) and target and isinstance(next(iter(target.values())), dict):
        target = next(iter(target.values()))
    if isinstance(target, dict):
        target[key or "k"] = value
    return out


bodies = st.one_of(
    json_values,
    st.builds(_mutate, st.sampled_from(VALID_BODIES), st.text(max_size=10), json_values),
    st.sampled_from(VALID_BODIES),
)


MEDIA_TYPE = "media_fuzz_5f3a"
"""Call type of the media-socket fuzzing's call (not in the REST fuzzing's path parameters)."""


@pytest.fixture(scope="module")
def fuzz_target():
    with EmbeddedCoordinator(make_config(rate_limit_per_s=0)) as coord:
        routes = []
        for path, methods in httpx.get(coord.url + "/openapi.json").json()["paths"].items():
            for method in methods:
                routes.append((method.upper(), path))
        headers = {"X-Api-Key": API_KEY, "Authorization": "Bearer " + coord.user_token("fuzzer")}
        server = {"X-Api-Key": API_KEY, "Authorization": "Bearer " + coord.server_token()}
        with httpx.Client(base_url=coord.url, timeout=10) as http:
            owner = {"X-Api-Key": API_KEY, "Authorization": "Bearer " + coord.user_token("owner")}
            http.post("/video/call/default/sentinel", headers=owner,
                      json={"data": {"custom": {"keep": 1}, "members": [{"user_id": "fuzzer"}]}})
            # The media-socket fuzzing joins a call of a type the REST fuzzing cannot name: that one may
            # legitimately end "sentinel" or change the "default" grants (with the server token), after
            # which a join there is rightly refused.
            default = http.get("/video/calltypes/default", headers=server).json()
            http.post("/video/calltypes", headers=server,
                      json={"name": MEDIA_TYPE, "grants": default["grants"], "settings": default["settings"]})
            http.post(f"/video/call/{MEDIA_TYPE}/sentinel", headers=owner,
                      json={"data": {"custom": {"keep": 1}, "members": [{"user_id": "fuzzer"}]}})
            yield coord, http, routes, headers, server


def sentinel_version(http: httpx.Client, server: dict, call_type: str = "default") -> int:
    return http.get(f"/video/call/{call_type}/sentinel", headers=server).json()["call"]["version"]


def test_openapi_lists_every_route(fuzz_target):
    _, _, routes, _, _ = fuzz_target
    paths = {p for _, p in routes}
    for expected in ("/video/call/{call_type}/{call_id}", "/video/call/{call_type}/{call_id}/join",
                     "/video/call/{call_type}/{call_id}/members", "/video/calltypes", "/video/users"):
        assert expected in paths


counter = {"rest": 0, "ws": 0, "media": 0}


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_rest_routes_never_fail_with_5xx(fuzz_target, data):
    _, http, routes, user_headers, server = fuzz_target
    method, template = data.draw(st.sampled_from(routes))
    path = re.sub(r"\{[^}]+\}", lambda m: data.draw(path_params), template)
    headers = data.draw(st.sampled_from([user_headers, server, {"X-Api-Key": API_KEY}]))
    body = data.draw(bodies)
    before = sentinel_version(http, server)
    try:
        resp = http.request(method, path, headers=headers, json=body if method != "GET" else None)
    except httpx.InvalidURL:
        return
    counter["rest"] += 1
    assert resp.status_code < 500, (method, path, body, resp.text)
    if resp.status_code >= 400 and resp.text:
        payload = resp.json()
        assert {"code", "message", "status"} <= set(payload) and payload["status"] == resp.status_code
    if resp.status_code >= 400:
        assert sentinel_version(http, server) == before, (method, path, body)


messages = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.builds(lambda t, extra: json.dumps({"type": t, **extra}),
              st.sampled_from(["auth", "health.check", "signal", "publish", "join", "ping", "watch", "x"]),
              st.dictionaries(st.sampled_from(["to", "token", "description", "tracks", "sdp", "from"]),
                              json_values, max_size=3)),
)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(messages, min_size=1, max_size=8))
def test_event_socket_survives_garbage(fuzz_target, batch):
    coord, http, _, _, server = fuzz_target
    before = sentinel_version(http, server)
    with ws_sync.connect(coord.url.replace("http", "ws") + "/video/connect", max_size=2**20) as ws:
        ws.send(json.dumps({"type": "auth", "api_key": API_KEY, "token": coord.user_token("fuzzer")}))
        assert json.loads(ws.recv(timeout=5))["type"] == "connection.ok"
        for raw in batch:
            ws.send(raw)
            counter["ws"] += 1
        ws.send(json.dumps({"type": "health.check"}))
        while True:  # every garbage message got an error; the heartbeat is still answered
            reply = json.loads(ws.recv(timeout=5))
            if reply["type"] == "health.check":
                break
            assert reply["type"] == "error" and reply["error"]["code"] == "invalid_request"
    assert sentinel_version(http, server) == before


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(messages, min_size=1, max_size=8))
def test_media_socket_survives_garbage(fuzz_target, batch):
    _, http, _, user_headers, server = fuzz_target
    resp = http.post(f"/video/call/{MEDIA_TYPE}/sentinel/join", headers=user_headers, json={})
    assert resp.status_code in (200, 201), resp.text
    join = resp.json()
    before = sentinel_version(http, server, MEDIA_TYPE)
    with ws_sync.connect(join["credentials"]["url"], max_size=2**20) as ws:
        ws.send(json.dumps({"type": "join", "token": join["credentials"]["token"]}))
        assert json.loads(ws.recv(timeout=5))["type"] == "joined"
        for raw in batch:
            ws.send(raw)
            counter["media"] += 1
        ws.send(json.dumps({"type": "ping"}))
        while True:
            reply = json.loads(ws.recv(timeout=5))
            if reply["type"] == "pong":
                break
            assert reply["type"] in ("error", "peer_joined", "peer_left", "peer_updated"), reply
    assert sentinel_version(http, server, MEDIA_TYPE) == before
    http.post(f"/video/call/{MEDIA_TYPE}/sentinel/leave", headers=user_headers,
              json={"session_id": join["participant"]["session_id"]})


def test_report_case_counts():
    print(f"\nfuzzing ran {counter['rest']} REST requests, {counter['ws']} event-socket messages and "
          f"{counter['media']} media-socket messages")
    assert counter["rest"] >= 100 and counter["ws"] >= 50 and counter["media"] >= 50
