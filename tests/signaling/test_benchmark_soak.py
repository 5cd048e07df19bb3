"""Smoke test of ``benchmarks/soak.py``: the quick run passes its store checks and verifies its audio.

Never asserts speed: only behaviour (exit status 0 means every store check passed and every
audio stream was verified; zero errors; audio verified in every call) and that every figure is
a finite positive number next to a same-run baseline, with ``ratio == value / baseline_value``.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import psutil
import pytest

from benchmarks import soak

pytestmark = pytest.mark.slow

QUICK_CLIENTS = 20
QUICK_CALLS = 2


def leftover_helpers() -> list[str]:
    """Coordinator processes the benchmark started and did not stop."""
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "signaling.cli" in cmdline:
            out.append(cmdline)
    return out


def check_well_formed(records: list[dict[str, Any]]) -> None:
    for r in records:
        assert set(r) >= {"name", "resolution", "value", "unit", "baseline", "baseline_value", "ratio", "extra"}
        assert r["baseline"], r
        for key in ("value", "baseline_value", "ratio"):
            v = r[key]
            assert isinstance(v, float) and math.isfinite(v) and v > 0, (key, r["name"], v)
        assert math.isclose(r["ratio"], r["value"] / r["baseline_value"], rel_tol=1e-9), r["name"]


def test_quick(tmp_path, capsys):
    out_json, out_md = tmp_path / "soak.json", tmp_path / "soak.md"
    assert soak.main(["--quick", "--json", str(out_json), "--markdown", str(out_md)]) == 0
    assert leftover_helpers() == []

    payload = json.loads(out_json.read_text(encoding="utf-8"))
    assert payload["machine"]
    assert payload["failures"] == []
    records = payload["records"]
    check_well_formed(records)
    names = [r["name"] for r in records]

    # part 1: the REST soak
    who = f"{QUICK_CLIENTS} clients"
    for q in ("p50", "p95", "p99"):
        assert f"soak: all ops latency {q}, {who}" in names
    assert f"soak: throughput, {who}" in names
    for op in soak.OPS:
        assert f"soak: {op} latency p99, {who}" in names
    rest = [r for r in records if r["name"].startswith("soak:")]
    extra = rest[0]["extra"]
    assert extra["errors_total"] == 0, extra["errors"]
    assert extra["errors"] == {} and payload["errors"] == {}
    assert extra["store_checks_passed"] is True
    assert payload["store_checks"] and all(c["ok"] for c in payload["store_checks"])
    counts = payload["store_counts"]
    assert counts["acknowledged_writes"] > 0
    assert counts["acknowledged_joins"] == counts["acknowledged_leaves"] == counts["acknowledged_writes"]
    assert counts["participant_rows_left"] == 0
    for op in soak.OPS:
        assert extra["per_op"][op]["ops"] > 0
    for r in rest:
        assert r["unit"] == ("ops/s" if "throughput" in r["name"] else "ms"), r["name"]
    # the paced (open-loop) phase: same clients, same ledger (the store checks above cover its writes)
    paced = [r for r in records if r["name"].startswith("soak paced at 50% of saturation")]
    suffixes = [r["name"].rsplit(": all ops latency ", 1)[1] for r in paced]
    assert suffixes == [f"{q}, {who}" for q in ("p50", "p95", "p99")]
    p_extra = paced[0]["extra"]
    assert p_extra["errors_total"] == 0 and p_extra["achieved_ops_per_s"] > 0 and p_extra["offered_ops_per_s"] > 0
    assert all(p_extra["per_op_p99_ms"][op] > 0 for op in soak.OPS)

    # part 2: audio calls, verified in every call
    audio = [r for r in records if r["name"].startswith("audio:")]
    assert len(audio) == 5
    a_extra = audio[0]["extra"]
    assert a_extra["calls"] == QUICK_CALLS
    assert len(a_extra["per_call"]) == QUICK_CALLS
    for call in a_extra["per_call"]:
        assert call["verified"], call
        for direction in ("a_to_b", "b_to_a"):
            s = call[direction]
            assert s["verified"] and s["frames"] > 0 and s["video_frames"] == 0, s
            assert abs(s["heard_hz"] - s["sent_hz"]) <= soak.FREQ_TOLERANCE_HZ, s
    assert a_extra["calls_verified"] == QUICK_CALLS == payload["audio_calls_verified"]
    assert all(s["verified"] for s in a_extra["baseline_streams"])
    verified = next(r for r in audio if "streams verified" in r["name"])
    assert verified["value"] == verified["baseline_value"] == 100.0

    printed = capsys.readouterr().out
    assert "| measurement |" in printed and "PASS: no orphan participant rows" in printed
    assert "FAIL" not in printed
    assert out_md.read_text(encoding="utf-8").strip() == printed.strip()


def _ledger_db(tmp_path: Path) -> Path:
    """A store file with one call and one participant row, as the coordinator writes them."""
    from signaling.server.store import _SCHEMA

    path = tmp_path / "store.db"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA)
    db.execute("INSERT INTO calls (cid, type, id, created_by, created_at, updated_at, custom, settings_override,"
               " session_id, version) VALUES ('soak:c1', 'soak', 'c1', 'u', 0, 0, ?, '{}', 's_x', 4)",
               (json.dumps({"writer": 0, "seq": 1, "run": "t"}),))
    db.execute("INSERT INTO participants (session_id, cid, user_id, joined_at, last_seen, published_tracks)"
               " VALUES ('left-already', 'soak:c1', 'u', 0, 0, '[]')")
    db.commit()
    db.close()
    return path


def test_audit_finds_orphans_and_lost_writes(tmp_path):
    """The audit is not a rubber stamp: a stale write, an orphan row and an open empty session fail it."""
    ledger = soak.Ledger()
    ledger.calls_acked = {"soak:c1", "soak:missing"}
    ledger.writes["soak:c1"] = [soak.Write({"writer": 0, "seq": 1, "run": "t"}, 2, 1.0),
                                soak.Write({"writer": 1, "seq": 1, "run": "t"}, 3, 2.0)]
    ledger.joins["soak:c1"] = 1
    ledger.leaves["soak:c1"] = 1
    ledger.sessions = ["left-already"]
    ledger.left = {"left-already"}
    checks, counts = soak.audit_store(_ledger_db(tmp_path), ledger)
    failed = {c.name for c in checks if not c.ok}
    assert "every acknowledged call exists" in failed
    assert "last acknowledged custom write is the stored one" in failed
    assert "version == 1 + acknowledged joins + updates + leaves" in failed  # v4 < 1 + 1 + 2 + 1
    assert "no orphan participant rows" in failed
    assert "no participant session twice" not in failed
    assert counts["participant_rows_left"] == 1


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        soak.main(["--clients", "0"])
    assert soak.main(["--skip-rest", "--skip-audio"]) == 2
    assert "nothing to do" in capsys.readouterr().err
