"""``signaling.gc_tuning``: process-wide, so each case runs in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import gc, json, logging
logging.basicConfig(level=logging.WARNING)
from signaling.gc_tuning import THRESHOLDS, tune_gc
before = gc.get_threshold()
applied = tune_gc()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                  "applied": applied, "default": THRESHOLDS}))
"""


def _probe(setting: str | None) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if k != "CALLRT_GC"}
    if setting is not None:
        env["CALLRT_GC"] = setting
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60,
                         check=True)
    return json.loads(out.stdout), out.stderr


def test_tune_gc_raises_thresholds_and_freezes_startup_objects():
    result, _ = _probe(None)
    assert result["applied"] is True
    assert result["after"] == result["default"] != result["before"]
    assert result["frozen"] > 1000  # the interpreter, pydantic and callrt's modules are out of later scans


def test_callrt_gc_default_leaves_the_interpreter_alone():
    result, _ = _probe("default")
    assert result["applied"] is False
    assert result["after"] == result["before"]
    assert result["frozen"] == 0


@pytest.mark.parametrize(("setting", "expected"), [("12000,5,7", [12000, 5, 7]), ("nonsense", None)])
def test_callrt_gc_picks_thresholds_or_warns(setting, expected):
    result, stderr = _probe(setting)
    if expected is None:
        assert result["after"] == result["default"]
        assert "ignoring CALLRT_GC='nonsense'" in stderr
    else:
        assert result["after"] == expected
