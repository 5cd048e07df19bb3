"""Smoke test of ``benchmarks/e2e.py``: a quick run works, its records are well-formed, media was verified.

Never asserts speed: only that every figure exists, is a finite positive number next to a
same-run baseline, that the ratio is ``value / baseline_value``, and that both the callrt
call and the bare aiortc pair delivered verified frames.
"""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from benchmarks import e2e

pytestmark = pytest.mark.slow

QUICK_NAMES = [
    "vp8, 2 participants: join time p50",
    "vp8, 2 participants: join time p95",
    "vp8, 2 participants: time to first frame p50 (from join start)",
    "vp8, 2 participants: received fps per stream (verified)",
    "vp8, 2 participants: latency p95 (capture -> received)",
    "vp8, 2 participants: CPU per participant (process / N)",
]
UNITS = {"join time": "ms", "first frame": "ms", "fps": "fps", "latency": "ms", "CPU": "%cpu"}


def test_quick_run_records(tmp_path, capsys):
    out_json, out_md = tmp_path / "e2e.json", tmp_path / "e2e.md"
    assert e2e.main(["--quick", "--json", str(out_json), "--markdown", str(out_md)]) == 0

    payload = json.loads(out_json.read_text(encoding="utf-8"))
    assert payload["machine"]
    records = payload["records"]
    assert [r["name"] for r in records] == QUICK_NAMES
    for r in records:
        assert set(r) >= {"name", "resolution", "value", "unit", "baseline", "baseline_value", "ratio", "extra"}
        assert r["resolution"] == "320x240", r
        assert r["baseline"], r
        assert r["unit"] == next(u for key, u in UNITS.items() if key in r["name"]), r
        for key in ("value", "baseline_value", "ratio"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert math.isclose(r["ratio"], r["value"] / r["baseline_value"], rel_tol=1e-9), r
        extra = r["extra"]
        assert extra["participants"] == 2 and extra["codec"] == "vp8"
        assert extra["negotiated"] == ["vp8"]
        assert extra["streams_expected"] == 2 and extra["streams_missing"] == []
        assert extra["frames_verified"] > 0 and extra["frames_out_of_order"] == 0
        assert extra["baseline_frames_verified"] > 0
        assert extra["bare"]["negotiated"] == "vp8"
        assert extra["audio_verified"] is True
        assert extra["loop"] == ("uvloop" if importlib.util.find_spec("uvloop") else "asyncio")
        assert len(extra["join_ms"]) == 2

    printed = capsys.readouterr().out
    assert "| measurement |" in printed and "received fps per stream" in printed
    assert out_md.read_text(encoding="utf-8").strip() == printed.strip()


def test_bad_flags_are_refused(capsys):
    for argv in (["--participants", "1"], ["--resolutions", "640"], ["--codecs", "av1"], ["--seconds", "0"]):
        with pytest.raises(SystemExit) as exc:
            e2e.main(argv)
        assert exc.value.code == 2
    assert "participants" in capsys.readouterr().err


def test_sdp_video_codec_and_percentile():
    sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n" \
          "m=video 9 UDP/TLS/RTP/SAVPF 102 97\r\na=rtpmap:97 VP8/90000\r\na=rtpmap:102 H264/90000\r\n"
    assert e2e.sdp_video_codec(sdp) == "h264"
    assert e2e.sdp_video_codec(None) is None
    assert e2e.percentile([1.0, 2.0, 3.0], 50) == 2.0
    assert e2e.percentile([0.0, 10.0], 95) == pytest.approx(9.5)
