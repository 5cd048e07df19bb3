"""Real swarms: a real coordinator, worker processes, real peer connections, every participant verified."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from signaling.swarm.layout import MediaSpec, parse_video
from signaling.swarm.participant import Thresholds
from signaling.swarm.report import load, merge, render
from signaling.swarm.runner import SwarmOptions, SwarmRunner

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]
LOOP = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"  # an optional dependency


async def test_small_swarm_verifies_every_participant(tmp_path):
    lenient = Thresholds(late_ms=5000, trend_ms=5000, min_rate=0.5, max_loss=0.5)  # no speed asserts
    opts = SwarmOptions(calls=3, per_call=2, media=MediaSpec(audio=True, video=parse_video("160x120@15")),
                        seconds=3.0, processes=2, live=False, thresholds=lenient)
    samples = []
    report = await SwarmRunner(opts, on_sample=lambda engine, s: samples.append(s)).run()
    run = report["runs"]["callrt"]
    assert [w["worker"] for w in run["workers"]] == [0, 1] and {w["cpu"] for w in run["workers"]} <= {0, 1}
    # the window opened once every expected stream had delivered a first frame (not on a timeout)
    from signaling.swarm.worker import STREAMS_START_TIMEOUT_S, WARMUP_MAX_S, WARMUP_S
    assert all(0 <= w["streams_started_s"] < STREAMS_START_TIMEOUT_S for w in run["workers"])
    # then a warm-up of at least WARMUP_S, ended by a settled loop or by WARMUP_MAX_S
    assert all(WARMUP_S <= w["warmup_s"] <= WARMUP_MAX_S + 1 and isinstance(w["settled"], bool)
               for w in run["workers"])
    assert all(w["settled"] or w["warmup_s"] >= WARMUP_MAX_S for w in run["workers"])
    assert len(run["participants"]) == 6 and not run["failures"]
    for p in run["participants"]:
        assert p["verdict"] == "real-time", p
        assert p["verified"] and p["video"]["frames_verified"] > 0 and p["video"]["frames_out_of_order"] == 0
        assert p["audio"]["verified"] and p["audio"]["hz"]  # each sender's own tone, by FFT
        assert p["join_ms"] > 0 and p["first_frame_ms"] > 0 and p["latency_ms_p50"] is not None
    assert report["ok"] and run["summary"]["real_time"] == 6
    assert report["media"]["video_encoding"] == report["media"]["audio_encoding"] == "replay"  # the defaults
    assert any(s["phase"] == "running" for s in samples), "no live samples"
    # the report is well-formed JSON and merges again into the same figures
    path = tmp_path / "swarm.json"
    path.write_text(json.dumps(report))
    again = merge([load(path)])
    assert again["runs"]["callrt"]["summary"]["real_time"] == 6
    text = render(again)
    assert "participants real-time" in text and "OK: 6 of 6" in text


async def test_killed_worker_is_reported_as_failed_participants():
    opts = SwarmOptions(calls=2, per_call=2, media=MediaSpec(audio=True), seconds=4.0, processes=2, live=False)
    runner: SwarmRunner
    killed: list[int] = []

    def on_sample(engine: str, s: dict) -> None:
        if s["worker"] == 1 and s["phase"] == "running" and not killed:
            pid = runner._workers[1].proc.pid  # type: ignore[union-attr]
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

    runner = SwarmRunner(opts, on_sample=on_sample)
    t0 = time.monotonic()
    report = await runner.run()
    assert time.monotonic() - t0 < 60 and killed
    run = report["runs"]["callrt"]
    by_worker = {w: [p for p in run["participants"] if p["worker"] == w] for w in (0, 1)}
    assert all(p["verdict"] == "real-time" for p in by_worker[0])
    assert len(by_worker[1]) == 2 and all(p["verdict"] == "failed" for p in by_worker[1])
    assert all("killed by signal 9" in p["reason"] for p in by_worker[1])
    assert not report["ok"] and run["failures"][0]["worker"] == 1
    assert (Path(report["logs"]) / "callrt-worker1.log").exists()  # logs are kept when a worker failed
    shutil.rmtree(report["logs"])
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_sigint_leaves_no_process_behind(tmp_path):
    out = tmp_path / "report.json"
    proc = subprocess.Popen([sys.executable, "-m", "signaling.swarm", "--calls", "2", "--per-call", "2",
                             "--seconds", "60", "--processes", "2", "--json", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        workers: list[psutil.Process] = []
        deadline = time.monotonic() + 40
        assert proc.stderr is not None
        while time.monotonic() < deadline:  # the live view prints plain lines: wait until the calls run
            line = proc.stderr.readline()
            if "4/4 joined" in line:
                break
            assert line or proc.poll() is None, "swarm exited early"
        workers = _descendants(proc.pid)
        assert len(workers) >= 2
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group gets it
        rc = proc.wait(30)
        assert rc == 130
        _gone, alive = psutil.wait_procs(workers, timeout=5)
        assert not alive, f"left behind: {alive}"
        report = json.loads(out.read_text())
        assert report["interrupted"] and report["runs"]["callrt"]["workers"]
        assert all(w["interrupted"] for w in report["runs"]["callrt"]["workers"])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def test_baseline_and_prototypes_run_verified_next_to_each_other():
    lenient = Thresholds(late_ms=5000, trend_ms=5000, min_rate=0.5, max_loss=0.5)
    opts = SwarmOptions(calls=1, per_call=2, media=MediaSpec(audio=True, video=parse_video("160x120@15"),
                                                            audio_encoding="live", video_encoding="live"),
                        seconds=2.0, processes=1, live=False, thresholds=lenient, baseline=True, loop=LOOP,
                        experiments=["no-remb"])
    report = await SwarmRunner(opts).run()
    assert set(report["runs"]) == {"callrt", "aiortc"}
    for engine, run in report["runs"].items():
        assert run["workers"][0]["loop"] == LOOP
        assert run["workers"][0]["experiments"] == (["no-remb"] if engine == "callrt" else [])
        for p in run["participants"]:
            assert p["verdict"] == "real-time" and p["audio"]["verified"] and p["video"]["verified"], (engine, p)
    text = render(report)
    assert "plain aiortc" in text and "aiortc verdict" in text
