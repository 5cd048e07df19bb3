"""The ``callrt`` command line, run as a user would: real processes, real coordinator."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from signaling.walkthrough import run_embedded_walkthrough

CALLRT = [sys.executable, "-m", "signaling.cli"]
KEY, SECRET = "cli-key", "cli-secret-" + "z" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    """``callrt serve`` in its own process on a fresh SQLite file."""
    port = free_port()
    env = {**os.environ, "CALLRT_API_KEY": KEY, "CALLRT_API_SECRET": SECRET,
           "CALLRT_URL": f"http://127.0.0.1:{port}"}
    proc = subprocess.Popen([*CALLRT, "serve", "--port", str(port), "--db", str(tmp_path / "cli.db")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"callrt serve did not start: {proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.1)
    yield env
    proc.terminate()
    proc.wait(10)


def run(env, *args, check=True):
    result = subprocess.run([*CALLRT, *args], env=env, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"callrt {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def test_dashboard_steps_are_one_command_each(served):
    created = json.loads(run(served, "call-type", "create", "my-call-type", "--from", "default", "--json").stdout)
    assert "join-call" in created["grants"]["user"]
    revoked = json.loads(run(served, "call-type", "revoke", "my-call-type", "user", "join-call", "--json").stdout)
    assert "join-call" not in revoked["grants"]["user"]
    granted = json.loads(run(served, "call-type", "grant", "my-call-type", "call_member", "join-call",
                             "--json").stdout)
    assert "join-call" in granted["grants"]["call_member"]
    shown = run(served, "call-type", "show", "my-call-type").stdout
    assert "capability" in shown and "join-call" in shown
    changed = json.loads(run(served, "call-type", "set", "my-call-type", "backstage.enabled=true", "--json").stdout)
    assert changed["settings"]["backstage"]["enabled"] is True


def test_calls_from_the_command_line(served):
    out = json.loads(run(served, "call", "create", "default", "cli-call", "--created-by", "alice",
                         "--member", "bob", "--member", "carol:admin", "--custom", '{"color": "blue"}',
                         "--settings", "audio.mic_default_on=false", "--json").stdout)
    call = out["call"]
    assert call["created_by"] == "alice" and call["custom"] == {"color": "blue"}
    assert {m["user_id"]: m["role"] for m in call["members"]} == {"bob": None, "carol": "admin"}
    assert call["settings"]["audio"]["mic_default_on"] is False
    human = run(served, "call", "get", "default", "cli-call").stdout
    assert "default:cli-call" in human and "carol(admin)" in human
    assert "default:cli-call" in run(served, "call", "list").stdout
    ended = json.loads(run(served, "call", "end", "default", "cli-call", "--json").stdout)
    assert ended["call"]["ended_at"] is not None


def test_errors_are_typed_with_exit_code_2(served):
    result = run(served, "call", "get", "default", "nope", "--json", check=False)
    assert result.returncode == 2
    assert json.loads(result.stdout)["error"]["code"] == "call_not_found"
    result = run(served, "call-type", "show", "nope", check=False)
    assert result.returncode == 2 and "[call_type_not_found]" in result.stderr
    no_keys = {k: v for k, v in served.items() if k not in ("CALLRT_API_KEY", "CALLRT_API_SECRET")}
    result = run(no_keys, "call", "list", check=False)
    assert result.returncode == 2 and "CALLRT_API_SECRET" in result.stderr
    result = run({**served, "CALLRT_LOOP": "nonsense"}, "call", "list", "--json", check=False)
    assert result.returncode == 2 and json.loads(result.stdout)["error"]["code"] == "invalid_request"


def test_token_is_a_verifiable_user_jwt(served):
    import jwt

    token = run(served, "token", "alice", "--expires-in", "60").stdout.strip()
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["user_id"] == "alice" and claims["exp"] - claims["iat"] == 60


def test_bot_joins_reports_and_leaves_on_sigterm(served):
    bots = [subprocess.Popen([*CALLRT, "bot", "--call", "default:bots", "--user", f"b{i}", "--create",
                              "--audio", f"tone:{440 + 220 * i}", "--video", "pattern:320x240", "--json",
                              "--stats-interval", "0.5"], env=served, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for i in range(2)]
    time.sleep(5)
    for bot in bots:
        bot.send_signal(signal.SIGTERM)
    outputs = [bot.communicate(timeout=20) for bot in bots]
    for bot, (out, err) in zip(bots, outputs, strict=True):
        assert bot.returncode == 0, err
        records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert records[0]["event"] == "joined"
        assert records[-1]["event"] == "left"
        stats = [r for r in records if r["event"] == "stats" and r["remote"]]
        assert stats and stats[-1]["remote"][0]["video"]["received"] > 10
        assert stats[-1]["remote"][0]["audio"]["received"] > 10


def test_demo_json_verifies_every_participant(tmp_path):
    snapshot = tmp_path / "snap.png"
    result = subprocess.run([*CALLRT, "demo", "--bots", "3", "--seconds", "3", "--json", "--snapshot",
                             str(snapshot)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and len(report["participants"]) == 3
    for p in report["participants"]:
        for key in ("join_ms", "first_frame_ms", "video_fps", "frames_verified", "audio_verified",
                    "latency_ms_p95", "cpu_percent"):
            assert key in p
        assert p["audio_verified"] is True
        assert p["frames_verified"] > 20 and p["frames_out_of_order"] == 0
        assert p["latency_ms_p95"] is not None and p["latency_ms_p95"] > 0
    assert snapshot.stat().st_size > 1000
    # the bots ran on the loop the callrt command picks (signaling.event_loop): uvloop when installed
    assert report["loop"] == ("uvloop" if importlib.util.find_spec("uvloop") else "asyncio")


async def test_walkthrough_covers_the_reference():
    report = await run_embedded_walkthrough()
    assert report.ok, [s for s in report.steps if not s.ok]
    assert len(report.steps) >= 9


def test_readme_commands_exist():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    head = readme.split("```", 2)[1]
    assert "make demo" in head and "make test" in head
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert "make test" in ci


def test_demo_against_a_served_coordinator_names_its_call(served):
    result = subprocess.run([*CALLRT, "demo", "--against-url", "--call-id", "watch-me", "--seconds", "2",
                             "--json"], env=served, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True
    shown = json.loads(run(served, "call", "get", "default", "watch-me", "--json").stdout)
    assert {m["user_id"] for m in shown["call"]["session"]["participants"]} == set()  # the bots left
    assert shown["call"]["created_by"] == "bot0"
