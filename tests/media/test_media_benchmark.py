"""The pipeline benchmark runs end to end with tiny iteration counts and writes well-formed records.

Speed is never asserted here: on a shared CI machine numbers are noise; only their shape is checked.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

import benchmarks.__main__ as bench_cli
from benchmarks import idle, pipeline
from media._boundary import codecs_on_loop

pytestmark = pytest.mark.timeout(120)

FIELDS = {"name", "resolution", "value", "unit", "baseline", "baseline_value", "ratio"}


def test_pipeline_quick_writes_well_formed_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pipeline.json"
    md = tmp_path / "pipeline.md"
    assert pipeline.main(["--quick", "--json", str(out), "--markdown", str(md)]) == 0
    payload = json.loads(out.read_text())
    assert payload["machine"]
    records = payload["records"]
    names = [r["name"] for r in records]
    for r in records:
        assert FIELDS <= r.keys()
        assert isinstance(r["value"], float) and math.isfinite(r["value"]) and r["value"] >= 0
        assert r["unit"] in {"ms", "%cpu", "x"}
        assert r["baseline"] and isinstance(r["baseline_value"], float) and r["baseline_value"] > 0
        assert r["ratio"] == pytest.approx(r["value"] / r["baseline_value"])
    # Every part of the issue is present: stages, codecs, fan-out, end to end.
    for needle in ("BGR->I420", "wrap I420", "VP8 encode", "VP8 decode", "H264 encode", "H264 decode",
                   "-> NumPy", "Opus encode", "fan-out sender CPU, 1 peer", "fan-out sender CPU, 2 peers",
                   "end-to-end CPU per frame, callrt", "end-to-end CPU per frame, aiortc"):
        assert any(needle in n for n in names), needle
    fan = next(r for r in records if r["name"].startswith("fan-out sender CPU, 2 peers"))
    assert fan["extra"]["content_verified"] is True
    assert fan["extra"]["encodes_per_frame"] <= 1.0  # encode once, however many peers
    e2e = [r for r in records if r["name"] == "end-to-end CPU per frame, callrt"]
    assert all(r["extra"]["content_verified"] is True for r in e2e)
    # one end-to-end figure against both isolated baselines: paced like the pipeline, and back to back
    assert sorted(r["baseline"].rsplit(", ", 1)[1] for r in e2e) == ["back to back", "paced at 30 fps"]
    assert e2e[0]["value"] == e2e[1]["value"]
    # each turn's own ratio, for the spread on a machine whose speed drifts (quick: one turn)
    for r in e2e:
        ratios = r["extra"]["turn_ratios"]
        assert len(ratios) == 1 and all(isinstance(x, float) and x > 0 for x in ratios)
        # where the CPU went, by thread: the codecs ran on their threads, found by name
        threads = r["extra"]["cpu_by_thread_ms"]
        assert set(threads) == {"event loop", "encoder", "decoder", "helper threads", "other"}
        assert all(v >= 0 for v in threads.values())
        assert threads["event loop"] > 0
        if not codecs_on_loop():  # one CPU: the codecs run on the loop (media._boundary)
            assert threads["encoder"] > 0 and threads["decoder"] > 0
        assert sum(threads.values()) == pytest.approx(r["value"], rel=0.05)
        # what the isolated sum is made of, stage by stage
        stages = r["extra"]["isolated_by_stage_ms"]
        assert set(stages) == {"convert", "encode", "decode", "helper threads"}
        assert stages["convert"] > 0 and stages["encode"] > 0 and stages["decode"] > 0
        assert sum(stages.values()) == pytest.approx(r["baseline_value"], rel=1e-3)
    # the peers ran on the loop the callrt command runs participants on, and the record says which
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    assert {r["extra"]["loop"] for r in records if "peer" in r["name"] or "end-to-end" in r["name"]} == {loop}
    assert any(r["name"] == "VP8 frame -> RTP payloads" and r["ratio"] > 0 for r in records)
    captured = capsys.readouterr()
    assert "| measurement |" in captured.out and "[1/" in captured.err  # table on stdout, progress on stderr
    assert md.read_text().startswith("### Frame pipeline")


def test_idle_penalty_quick_writes_a_record_per_step_and_gap(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "idle.json"
    assert idle.main(["--quick", "--gaps", "1,2", "--json", str(out)]) == 0
    records = json.loads(out.read_text())["records"]
    assert len(records) == 4 * 2  # four steps of the media path, two gaps each
    for r in records:
        assert FIELDS <= r.keys() and r["unit"] == "us" and r["baseline"] == idle.WARM
        assert math.isfinite(r["value"]) and r["value"] > 0 and r["baseline_value"] > 0
        assert r["ratio"] == pytest.approx(r["value"] / r["baseline_value"])
        assert r["extra"]["gap_ms"] in (1.0, 2.0) and r["extra"]["second_after_gap_us"] > 0
    assert {r["name"].split(",")[0] for r in records} == {
        "SRTP protect", "UDP sendto over loopback", "VP8 frame -> RTP payloads (media.vp8_packetize)",
        "BGR -> I420 cv2.cvtColor into a reused buffer"}
    assert "| measurement |" in capsys.readouterr().out
    assert idle.main(["--gaps", "0"]) == 2  # a gap must be positive


def test_cli_skips_missing_programs_and_rejects_unknown(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bench_cli, "REGISTRY", {"later": "benchmarks.not_written_yet"})
    assert bench_cli.main(["--quick"]) == 0
    assert "skipping later" in capsys.readouterr().err
    assert bench_cli.main(["nope"]) == 2


def test_thread_roles_and_cpu_by_role() -> None:
    """Roles come from thread names; new threads count from zero; what ended in between is 'other'."""
    from benchmarks import _threads

    assert _threads.role("MainThread", main=True) == "event loop"
    assert _threads.role("callrt-enc-vp8_0") == _threads.role("uvloop_0") == _threads.role("asyncio_1") == "encoder"
    assert _threads.role("video-decoder") == "decoder"
    assert _threads.role(None) == "helper threads"
    assert _threads.role("callrt-mjpeg-server") == "other"
    before = _threads.CpuSnapshot(10.0, {1: 5.0, 2: 1.0, 3: 2.0}, {1: "event loop", 2: "encoder", 3: "helper threads"})
    # thread 3 ended (its last 0.5 s are only in the total); thread 4 started; the total counts everything
    after = _threads.CpuSnapshot(13.0, {1: 6.0, 2: 2.0, 4: 0.25}, {1: "event loop", 2: "encoder", 4: "decoder"})
    got = _threads.by_role(before, after)
    assert got == {"event loop": 1.0, "encoder": 1.0, "decoder": 0.25, "helper threads": 0.0, "other": 0.75}
    live = _threads.snapshot()
    assert live.total > 0 and live.roles and "event loop" in live.roles.values()
