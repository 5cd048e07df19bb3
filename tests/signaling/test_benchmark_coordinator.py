"""Smoke test of ``benchmarks/coordinator.py``: it runs (quick counts), and its records are well-formed.

Never asserts speed: only that every figure exists, is a finite positive number next to a
same-run baseline, and that the ratio is ``value / baseline_value``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import psutil
import pytest

from benchmarks import coordinator

pytestmark = pytest.mark.slow


def expected_names(clients: int, watchers: int) -> list[str]:
    names = []
    for op in ("get_or_create", "join"):
        for who in ("1 client", f"{clients} concurrent clients"):
            names += [f"{op} latency p50, {who}", f"{op} latency p95, {who}", f"{op} throughput, {who}"]
    names += [f"call.updated fan-out latency {q}, {watchers} watchers" for q in ("p50", "p95", "max")]
    return names


def check_records(path: Path, clients: int, watchers: int) -> list[dict[str, object]]:
    payload = json.loads(path.read_text(encoding="utf-8"))
    assert payload["machine"]
    records = payload["records"]
    assert [r["name"] for r in records] == expected_names(clients, watchers)
    for r in records:
        assert set(r) >= {"name", "resolution", "value", "unit", "baseline", "baseline_value", "ratio", "extra"}
        assert r["unit"] == ("ops/s" if "throughput" in r["name"] else "ms"), r
        assert r["baseline"], r
        for key in ("value", "baseline_value", "ratio"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert math.isclose(r["ratio"], r["value"] / r["baseline_value"], rel_tol=1e-9), r
        if "fan-out" in r["name"]:
            assert r["extra"]["missing_deliveries"] == 0, r["extra"]
    return records


def leftover_helpers() -> list[str]:
    """Helper processes of the benchmark still running (the coordinator, the broadcast floor)."""
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "signaling.cli" in cmdline or "benchmarks.coordinator" in cmdline:
            out.append(cmdline)
    return out


def test_quick_embedded(tmp_path, capsys):
    out_json, out_md = tmp_path / "c.json", tmp_path / "c.md"
    assert coordinator.main(["--quick", "--embedded", "--json", str(out_json), "--markdown", str(out_md)]) == 0
    records = check_records(out_json, clients=8, watchers=16)
    assert all(r["extra"]["coordinator"] == "embedded thread" for r in records)
    printed = capsys.readouterr().out
    assert "| measurement |" in printed and "call.updated fan-out latency p50" in printed
    assert out_md.read_text(encoding="utf-8").strip() == printed.strip()


def test_quick_separate_process_is_released(tmp_path):
    out_json = tmp_path / "c.json"
    argv = ["--quick", "--clients", "3", "--watchers", "5", "--json", str(out_json)]
    assert coordinator.main(argv) == 0
    records = check_records(out_json, clients=3, watchers=5)
    assert all(r["extra"]["coordinator"] == "separate process" for r in records)
    assert "separate process" in records[-1]["baseline"]
    assert leftover_helpers() == []


def test_percentile():
    assert coordinator.percentile([3.0], 95) == 3.0
    assert coordinator.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert coordinator.percentile([0.0, 10.0], 95) == pytest.approx(9.5)
    assert coordinator.percentile([5.0, 1.0, 9.0], 100) == 9.0
    with pytest.raises(ValueError):
        coordinator.percentile([], 50)


def test_bad_counts_are_refused(capsys):
    assert coordinator.main(["--quick", "--clients", "0"]) == 2
    assert "--clients" in capsys.readouterr().err
