"""benchmarks/devices.py --quick runs in seconds and reports every figure next to its baseline."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from benchmarks import devices as bench


def test_quick_benchmark_writes_records_with_baselines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "devices.json"
    t0 = time.monotonic()
    assert bench.main(["--quick", "--json", str(out)]) == 0
    assert time.monotonic() - t0 < 30
    records = json.loads(out.read_text())["records"]
    kinds = {r["name"].split(":")[0] for r in records}
    assert {"test pattern", "file (H.264 mp4)", "camera (OpenCV, MJPEG/HTTP)"} <= kinds
    for r in records:
        assert r["value"] >= 0 and r["baseline_value"] is not None and r["baseline"], r
        if r["unit"] == "ms":
            assert r["extra"]["fps"] > 20, r  # the source kept its real rate
    table = capsys.readouterr().out
    assert "| measurement |" in table and "capture→recv latency" in table
