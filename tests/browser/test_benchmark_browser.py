"""Smoke test of ``benchmarks/browser.py``: a quick run works and its records are well-formed.

Never asserts speed: only that each figure is a finite positive number next to its same-run
Python baseline, and that the page negotiated the codec asked for.
"""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import browser as bench
from tests.browser.conftest import require_browser

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


def test_quick_run_records(tmp_path, capsys):
    require_browser()
    out = tmp_path / "browser.json"
    assert bench.main(["--quick", "--json", str(out)]) == 0
    payload = json.loads(out.read_text(encoding="utf-8"))
    records = payload["records"]
    assert [r["name"] for r in records] == ["vp8: page load -> first remote frame (p50)",
                                            "vp8: bot join -> first frame in the page (p50)"]
    for r in records:
        assert r["unit"] == "ms" and r["baseline"], r
        for key in ("value", "baseline_value", "ratio"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert math.isclose(r["ratio"], r["value"] / r["baseline_value"], rel_tol=1e-9)
        assert r["extra"]["negotiated"] == ["vp8"] and len(r["extra"]["samples_ms"]) == 1
    assert "| vp8: page load -> first remote frame (p50) |" in capsys.readouterr().out
