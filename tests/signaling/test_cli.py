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


def start_serve(env, port, *args):
    """``callrt serve --port PORT ARGS`` in its own process, once it answers ``/healthz``; stdout and stderr
    merged (with ``--json`` its first line is the server's JSON info)."""
    proc = subprocess.Popen([*CALLRT, "serve", "--port", str(port), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"callrt serve did not start: {proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.1)


def stop(proc):
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def served(tmp_path):
    """``callrt serve`` in its own process on a fresh SQLite file."""
    port = free_port()
    env = {**os.environ, "CALLRT_API_KEY": KEY, "CALLRT_API_SECRET": SECRET,
           "CALLRT_URL": f"http://127.0.0.1:{port}"}
    proc = start_serve(env, port, "--db", str(tmp_path / "cli.db"))
    yield env
    stop(proc)


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


# ---------------------------------------------------------------- options before or after the command

DEAD_URL = "http://127.0.0.1:1"


def without_keys(env):
    return {k: v for k, v in env.items() if k not in ("CALLRT_API_KEY", "CALLRT_API_SECRET", "CALLRT_URL")}


@pytest.mark.parametrize("where", ["before", "between", "after", "both"])
def test_common_options_count_before_or_after_the_command(served, where):
    """``callrt --url U --api-key K --api-secret S --json call list`` and every other position; given twice,
    the later one wins."""
    good = ["--url", served["CALLRT_URL"], "--api-key", KEY, "--api-secret", SECRET, "--json"]
    argv = {"before": [*good, "call", "list"], "between": ["call", *good, "list"], "after": ["call", "list", *good],
            "both": ["--url", DEAD_URL, "--api-key", "wrong", "--api-secret", "wrong" * 8, "call", "list", *good]}
    run(served, "call", "create", "default", f"where-{where}", "--created-by", "alice")
    result = run({**without_keys(served), "CALLRT_URL": DEAD_URL}, *argv[where])
    assert f"default:where-{where}" in {c["cid"] for c in json.loads(result.stdout)}


# ---------------------------------------------------------------- bad values: clean errors, exit 2

CREATE = ["call", "create", "default", "c2", "--created-by", "alice"]


@pytest.mark.parametrize(("argv", "message"), [
    (["demo", "--resolution", "641x480"], "argument --resolution: resolution '641x480': width and height must be even"),
    (["demo", "--resolution", "0x0"], "argument --resolution: resolution '0x0': width and height must be even"),
    (["demo", "--resolution", "abc"], "argument --resolution: resolution 'abc': expected WxH, e.g. 640x480"),
    (["bot", "--call", "default:x", "--resolution", "640x481"], "argument --resolution: resolution '640x481'"),
    (["demo", "--bots", "1"], "argument --bots: expected an integer >= 2, got '1'"),
    (["demo", "--bots", "0"], "argument --bots: expected an integer >= 2, got '0'"),
    (["demo", "--bots", "-1"], "argument --bots: expected an integer >= 2, got '-1'"),
    (["demo", "--seconds", "0"], "argument --seconds: expected a number > 0, got '0'"),
    (["demo", "--seconds", "-5"], "argument --seconds: expected a number > 0, got '-5'"),
    (["bot", "--call", "default:x", "--seconds", "-1"], "argument --seconds: expected a number >= 0, got '-1'"),
    (["bot", "--call", "default:x", "--stats-interval", "0"], "argument --stats-interval: expected a number > 0"),
    ([*CREATE, "--custom", "{x:1}"], "argument --custom: expected a JSON object"),
    ([*CREATE, "--custom", "[1]"], "argument --custom: expected a JSON object, e.g. '{\"color\": \"blue\"}', "
                                   "got a JSON array"),
    ([*CREATE, "--starts-at", "tomorrow"], "argument --starts-at: expected an ISO 8601 time"),
    (["serve", "--port", "99999"], "argument --port: expected an integer 1..65535, got '99999'"),
    (["serve", "--rate-limit", "-1"], "argument --rate-limit: expected a number >= 0"),
    (["serve", "--rate-burst", "0"], "argument --rate-burst: expected an integer >= 1"),
    (["token", "alice", "--expires-in", "-60"], "argument --expires-in: expected a number > 0"),
])
def test_bad_option_values_are_usage_errors(argv, message):
    result = run(dict(os.environ), *argv, check=False)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.startswith("usage: callrt ")


@pytest.mark.parametrize(("argv", "message"), [
    (["token", "bad id!"], "invalid user id 'bad id!': 1 to 64 letters, digits and @ _ . -"),
    (["bot", "--call", "default:x", "--user", "bad id!"], "invalid user id 'bad id!'"),
    (["bot", "--call", "default:x", "--video", "pattern:641x480"], "--video pattern:641x480: resolution '641x480'"),
    (["bot", "--call", "default:x", "--audio", "tone:abc"], "--audio tone:abc: the tone's frequency must be"),
    (["demo", "--snapshot", "/nonexistent/dir/x.png"], "--snapshot /nonexistent/dir/x.png: the folder "
                                                       "/nonexistent/dir does not exist"),
    (["demo", "--snapshot", "{tmp}/noext"], "OpenCV cannot write this kind of image; end the name with .png or .jpg"),
    (["demo", "--snapshot", "{tmp}"], "is a folder"),
    (["serve", "--db", "/nonexistent/dir/x.db"], "--db /nonexistent/dir/x.db: cannot use it"),
])
def test_bad_values_found_after_parsing_are_typed_errors_up_front(tmp_path, argv, message):
    """Refused before anything starts (the demo would run 10 s, a bot would try to connect): exit 2, code
    ``invalid_request``, in JSON with ``--json``."""
    env = {**os.environ, "CALLRT_API_KEY": KEY, "CALLRT_API_SECRET": SECRET, "CALLRT_URL": DEAD_URL}
    t0 = time.monotonic()
    result = run(env, *(a.replace("{tmp}", str(tmp_path)) for a in argv), "--json", check=False)
    assert result.returncode == 2, result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "invalid_request" and message in error["message"].replace(str(tmp_path), "{tmp}")
    assert "Traceback" not in result.stderr and time.monotonic() - t0 < 8


def test_demo_snapshot_that_cannot_be_written_fails(tmp_path):
    """The folder goes away while the demo runs: a typed error, not "received frames saved to"."""
    folder = tmp_path / "gone"
    folder.mkdir()
    proc = subprocess.Popen([*CALLRT, "demo", "--seconds", "2", "--snapshot", str(folder / "snap.png")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # announced once its arguments are checked and the coordinator is up
        if line.startswith("call default:"):
            break
    folder.rmdir()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert f"callrt: error [snapshot_failed]: --snapshot {folder / 'snap.png'}: OpenCV could not write it" in err
    assert "saved" not in out and "Traceback" not in err


# ---------------------------------------------------------------- bench, swarm help


@pytest.mark.parametrize("argv", [
    ["bench", "--quick", "idle", "--json", "{out}"],
    ["bench", "idle", "--quick", "--json", "{out}"],
    ["-v", "--url", DEAD_URL, "bench", "--json", "{out}", "--quick", "idle"],
])
def test_everything_after_bench_goes_to_the_benchmarks(tmp_path, argv):
    run(dict(os.environ), *(a.replace("{out}", str(tmp_path)) for a in argv))
    assert json.loads((tmp_path / "idle.json").read_text())["records"]


def test_bench_help_is_the_benchmarks_help():
    out = run(dict(os.environ), "bench", "--help").stdout
    assert out.startswith("usage: callrt bench ") and "--quick" in out
    assert "coordinator" in out and "idle" in out


@pytest.mark.parametrize("command", [[*CALLRT, "swarm"], [sys.executable, "-m", "signaling.swarm"]])
def test_swarm_help_is_written_for_users(command):
    out = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "Put many bots into calls and verify every stream they receive" in out and "--calls" in out
    for developer_note in ("add_swarm_parser", "signaling/cli.py", "Wire it", "``"):
        assert developer_note not in out


# ---------------------------------------------------------------- development keys survive a restart


def test_serve_keeps_its_development_keys_across_restarts(tmp_path):
    env = without_keys(os.environ)
    db = str(tmp_path / "dev.db")
    port = free_port()
    proc = start_serve(env, port, "--db", db)
    stop(proc)
    assert proc.stdout is not None
    text = proc.stdout.read()
    assert f"using the development pair (kept in {db})" in text
    export = next(line for line in text.splitlines() if line.strip().startswith("export CALLRT_URL="))
    exported = dict(item.split("=", 1) for item in export.split()[1:])
    assert exported["CALLRT_API_KEY"].startswith("dev-")

    port = free_port()
    proc = start_serve(env, port, "--db", db, "--json")
    try:
        assert proc.stdout is not None
        info = json.loads(next(line for line in proc.stdout if line.startswith("{")))
        assert info["dev_keys"] is True
        assert (info["api_key"], info["api_secret"]) == (exported["CALLRT_API_KEY"], exported["CALLRT_API_SECRET"])
        client = {**env, **exported, "CALLRT_URL": f"http://127.0.0.1:{port}"}
        assert json.loads(run(client, "call", "list", "--json").stdout) == []  # the old exports still work
        refused = run({**client, "CALLRT_API_KEY": "dev-other"}, "call", "list", "--json", check=False)
        assert json.loads(refused.stdout)["error"]["code"] == "unauthenticated"
    finally:
        stop(proc)


def test_development_keys_are_per_database(served, tmp_path):
    from signaling.server.config import stored_dev_keys

    assert stored_dev_keys(":memory:") != stored_dev_keys(":memory:")  # nothing kept: fresh each start
    db = str(tmp_path / "cli.db")  # `served` runs on it with explicit keys, which are not stored
    assert stored_dev_keys(db) == stored_dev_keys(db) != (KEY, SECRET)
    assert stored_dev_keys(db) != stored_dev_keys(str(tmp_path / "other.db"))


# ---------------------------------------------------------------- call state


def test_call_list_and_get_name_the_state_alike(served):
    run(served, "call", "create", "default", "state-call", "--created-by", "alice")

    def shown():
        row = next(r for r in run(served, "call", "list").stdout.splitlines() if r.startswith("default:state-call"))
        return row.split(), run(served, "call", "get", "default", "state-call").stdout

    row, summary = shown()
    assert row == ["default:state-call", "open", "alice", "0"]
    assert summary.startswith("default:state-call: open, created by alice")
    assert "participants (0): -" in summary
    run(served, "call", "end", "default", "state-call")
    row, summary = shown()
    assert row[1] == "ended" and summary.startswith("default:state-call: ended,")
