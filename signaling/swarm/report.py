"""Swarm reports: merge worker reports into one, summarise each engine, check the targets, render text.

A worker report (``kind: callrt-swarm-worker``) holds one worker's participants and timeline.
A swarm report (``kind: callrt-swarm-report``) holds, per engine (``callrt`` and, with
``--baseline``, ``aiortc``), the workers (without their participants), every participant of the
layout (those no report covers are ``failed``, with the reason), and a summary. ``merge`` accepts
either kind, so reports of workers on several machines, or of several swarm runs over parts of one
layout, merge into one.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from signaling.swarm.errors import ReportError
from signaling.swarm.layout import Layout, MediaSpec
from signaling.swarm.participant import VERDICT_ORDER, failed_result
from signaling.swarm.stats import percentile_r1
from signaling.swarm.worker import REPORT_KIND, REPORT_VERSION

SWARM_KIND = "callrt-swarm-report"
ENGINES = ("callrt", "aiortc")
ENGINE_LABEL = {"callrt": "callrt", "aiortc": "plain aiortc"}
MAX_ROWS = 40


def load(path: str | Path) -> dict[str, Any]:
    """A worker or swarm report from ``path`` (raises ``ReportError`` when it is neither)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: cannot read a report ({exc})") from exc
    if not isinstance(data, dict) or data.get("kind") not in (REPORT_KIND, SWARM_KIND):
        raise ReportError(f"{path}: not a swarm report")
    if data.get("version") != REPORT_VERSION:
        raise ReportError(f"{path}: report version {data.get('version')!r}, this callrt reads {REPORT_VERSION}")
    return data


def _flatten(reports: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(workers, participants) from worker and swarm reports."""
    workers: list[dict[str, Any]] = []
    participants: list[dict[str, Any]] = []
    for r in reports:
        if r.get("kind") == SWARM_KIND:
            for run in r.get("runs", {}).values():
                workers += [dict(w) for w in run["workers"]]
                participants += [p for p in run["participants"] if not p.get("unreported")]
        else:
            workers.append({k: v for k, v in r.items() if k != "participants"})
            participants += r["participants"]
    return workers, participants


def merge(reports: Sequence[dict[str, Any]], failures: Sequence[dict[str, Any]] = (),
          *, machine: str | None = None) -> dict[str, Any]:
    """One swarm report from worker/swarm reports of one run.

    ``failures``: workers that did not report, as ``{engine, worker, range: [a, b], reason}``; their
    participants are ``failed`` with that reason.
    """
    workers, participants = _flatten(reports)
    if not workers and not failures:
        raise ReportError("nothing to merge")
    first = workers[0] if workers else failures[0]
    run_id, layout_d, media_d = first["run_id"], first["layout"], first["media"]
    for w in workers[1:]:
        if w["run_id"] != run_id:
            raise ReportError(f"reports of different runs: {run_id} and {w['run_id']}")
        if w["layout"] != layout_d or w["media"] != media_d:
            raise ReportError(f"worker {w['worker']} of {w['engine']} ran another layout or media")
    layout = Layout(run_id, layout_d["calls"], layout_d["per_call"])
    engines = [e for e in ENGINES if any(w["engine"] == e for w in workers)
               or any(f["engine"] == e for f in failures)]
    runs: dict[str, Any] = {}
    for engine in engines:
        by_index: dict[int, dict[str, Any]] = {}
        for p in participants:
            if p["engine"] != engine:
                continue
            if p["index"] in by_index:
                raise ReportError(f"participant {p['index']} ({engine}) is in two reports")
            by_index[p["index"]] = p
        reasons: dict[int, tuple[int | None, str]] = {}
        for f in failures:
            if f["engine"] == engine:
                for k in range(*f["range"]):
                    reasons[k] = (f["worker"], f["reason"])
        for k in range(layout.total):
            if k not in by_index:
                worker, reason = reasons.get(k, (None, "no report covers this participant"))
                by_index[k] = {**failed_result(k, layout, worker, engine, reason), "unreported": True}
        run_workers = sorted((w for w in workers if w["engine"] == engine), key=lambda w: w["worker"])
        run_participants = [by_index[k] for k in sorted(by_index)]
        runs[engine] = {"engine": engine, "workers": run_workers, "participants": run_participants,
                        "failures": [f for f in failures if f["engine"] == engine],
                        "summary": summarize(run_workers, run_participants,
                                             _expected_rx(MediaSpec.from_dict(media_d), layout.per_call))}
    report: dict[str, Any] = {
        "kind": SWARM_KIND, "version": REPORT_VERSION, "run_id": run_id, "layout": layout_d,
        "media": media_d, "seconds": first.get("seconds"), "machine": machine, "runs": runs,
    }
    report["targets"] = targets(report)
    report["ok"] = all(r["summary"]["failed"] == 0 for r in runs.values())
    return report


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def _expected_rx(media: MediaSpec, per_call: int) -> float:
    """Frames per second one participant should receive."""
    per_sender = (50.0 if media.audio else 0.0) + (media.video.fps if media.video is not None else 0.0)
    return (per_call - 1) * per_sender


def summarize(workers: list[dict[str, Any]], participants: list[dict[str, Any]],
              expected_rx: float | None = None) -> dict[str, Any]:
    counts = {v: sum(1 for p in participants if p["verdict"] == v) for v in VERDICT_ORDER}
    cores = {(w["host"], w["cpu"]) for w in workers if w.get("cpu") is not None}
    n_cores = len(cores) or len(workers) or 1
    col = lambda key: [p[key] for p in participants if p.get(key) is not None]  # noqa: E731
    cpu = [w["cpu_percent"] for w in workers if w.get("cpu_percent") is not None]
    others = [w["core_percent"] - w["cpu_percent"] for w in workers
              if w.get("core_percent") is not None and w.get("cpu_percent") is not None]
    lags = [w["loop_lag_ms_p95"] for w in workers if w.get("loop_lag_ms_p95") is not None]
    return {
        "participants": len(participants),
        "real_time": counts["real-time"], "late": counts["late"], "lossy": counts["lossy"],
        "failed": counts["failed"],
        "workers": len(workers), "cores": n_cores,
        "real_time_per_core": round(counts["real-time"] / n_cores, 1),
        "rx_frames_per_s": round(sum(w.get("rx_frames_per_s") or 0.0 for w in workers), 1),
        "rate_p50": _median(col("rate")),
        "rate_min": round(min(col("rate")), 1) if col("rate") else None,
        "latency_ms_p50": _median(col("latency_ms_p50")),
        "latency_ms_p95": percentile_r1(col("latency_ms_p95"), 0.95),
        "latency_ms_worst": max(col("latency_ms_p95"), default=None),
        "latency_ms_trend_worst": max(col("latency_ms_trend"), default=None),
        "loss_worst": max(col("loss"), default=None),
        "join_ms_p50": _median(col("join_ms")), "join_ms_p95": percentile_r1(col("join_ms"), 0.95),
        "first_frame_ms_p50": _median(col("first_frame_ms")),
        "first_frame_ms_p95": percentile_r1(col("first_frame_ms"), 0.95),
        "cpu_percent_total": round(sum(cpu), 1),
        "cpu_percent_per_participant": round(sum(cpu) / len(participants), 2) if participants and cpu else None,
        "capacity_per_core_est": _capacity(workers, cpu, expected_rx),
        "others_percent_on_cores": round(statistics.fmean(others), 1) if others else None,
        "loop_lag_ms_p95": max(lags, default=None),
        "threads": sum(w.get("threads") or 0 for w in workers),
        "rss_mb": round(sum(w.get("rss_mb") or 0.0 for w in workers), 1),
    }


def _capacity(workers: list[dict[str, Any]], cpu: list[float], expected_rx: float | None) -> float | None:
    """Participants one core would keep fed: frames delivered per core-second over what one participant needs.

    Works below saturation (where it is ~100 / CPU % per participant) and at it (where the CPU
    figure is capped at 100 % but the frames delivered show what the core managed).
    """
    total_cpu = sum(cpu)
    rx = sum(w.get("rx_frames_per_s") or 0.0 for w in workers)
    if not expected_rx or total_cpu <= 0 or rx <= 0:
        return None
    return round(rx / (total_cpu / 100.0) / expected_rx, 1)


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 7's benchmark targets that this run's shape speaks to (printed, never asserted)."""
    media = MediaSpec.from_dict(report["media"])
    layout = report["layout"]
    runs = report["runs"]
    out = []

    total = layout["calls"] * layout["per_call"]

    def target(name: str, need: int) -> None:
        value = runs.get("callrt", {}).get("summary", {}).get("real_time")
        base = runs.get("aiortc", {}).get("summary", {}).get("real_time")
        met = None if total < need else (value is not None and value >= need)
        out.append({"name": name, "need": need, "value": value, "baseline_value": base, "met": met})

    if media.video is None and media.audio and layout["per_call"] == 2:
        target(">= 100 audio-only participants (two-party calls) in real time", 100)
    v = media.video
    if v is not None and (v.width, v.height, round(v.fps)) == (640, 480, 30) and media.codec == "vp8" \
            and layout["per_call"] == 4:
        target(">= 12 video participants at 640x480 30 fps VP8 in 4-party calls in real time", 12)
    return out


# ---------------------------------------------------------------- text


def _warmup(w: dict[str, Any]) -> str:
    """Seconds between the last stream starting and the window opening; flagged when the loop never settled."""
    if w.get("warmup_s") is None:
        return "-"
    return f"{w['warmup_s']:.1f}" + ("" if w.get("settled") else " (unsettled)")


def _f(v: Any, unit: str = "", digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        v = f"{v:.{digits}f}"
    return f"{v}{unit}"


def _table(rows: list[list[str]], head: list[str]) -> str:
    from signaling.tables import table

    return table(rows, head)


def render(report: dict[str, Any], *, all_rows: bool = False) -> str:
    runs = report["runs"]
    engines = [e for e in ENGINES if e in runs]
    media = MediaSpec.from_dict(report["media"])
    layout = report["layout"]
    total = layout["calls"] * layout["per_call"]
    lines = [f"callrt swarm {report['run_id']}: {layout['calls']} calls x {layout['per_call']} = {total} "
             f"participants, {media.describe()}, {_f(report.get('seconds'))} s measured"]
    if report.get("machine"):
        lines.append(f"machine: {report['machine']}")
    for e in engines:
        ws = runs[e]["workers"]
        if ws:
            pins = ",".join("-" if w.get("cpu") is None else str(w["cpu"]) for w in ws)
            lines.append(f"{ENGINE_LABEL[e]}: {len(ws)} workers (cores {pins}), loop {ws[0].get('loop')}"
                         + (f", experiments {','.join(ws[0]['experiments'])}" if ws[0].get("experiments") else ""))
    lines.append("")
    s = {e: runs[e]["summary"] for e in engines}
    rows = [
        ("participants real-time", lambda x: f"{x['real_time']}/{x['participants']}"),
        ("late / lossy / failed", lambda x: f"{x['late']} / {x['lossy']} / {x['failed']}"),
        ("real-time per core", lambda x: _f(x["real_time_per_core"], digits=1)),
        ("received frames/s (all)", lambda x: _f(x["rx_frames_per_s"])),
        ("rate per stream p50 / min", lambda x: f"{_f(x['rate_p50'], digits=1)} / {_f(x['rate_min'], digits=1)}"),
        ("latency ms p50 / p95 / worst", lambda x: f"{_f(x['latency_ms_p50'])} / {_f(x['latency_ms_p95'])} / "
                                                   f"{_f(x['latency_ms_worst'])}"),
        ("latency trend ms (worst)", lambda x: _f(x["latency_ms_trend_worst"])),
        ("loss (worst)", lambda x: _f(None if x["loss_worst"] is None else x["loss_worst"] * 100, "%", 1)),
        ("join ms p50 / p95", lambda x: f"{_f(x['join_ms_p50'])} / {_f(x['join_ms_p95'])}"),
        ("first frame ms p50 / p95", lambda x: f"{_f(x['first_frame_ms_p50'])} / {_f(x['first_frame_ms_p95'])}"),
        ("CPU % per participant", lambda x: _f(x["cpu_percent_per_participant"], digits=2)),
        ("CPU % of workers (sum)", lambda x: _f(x["cpu_percent_total"])),
        ("participants one core feeds (est.)", lambda x: _f(x["capacity_per_core_est"], digits=1)),
        ("others' CPU % on our cores", lambda x: _f(x["others_percent_on_cores"])),
        ("loop lag p95 ms (worst worker)", lambda x: _f(x["loop_lag_ms_p95"], digits=1)),
        ("threads (all workers)", lambda x: _f(x["threads"])),
        ("memory MB (all workers)", lambda x: _f(x["rss_mb"])),
    ]
    lines.append(_table([[name, *(fn(s[e]) for e in engines)] for name, fn in rows],
                        ["", *(ENGINE_LABEL[e] for e in engines)]))
    lines += ["", "workers"]
    wrows = []
    for e in engines:
        for w in runs[e]["workers"]:
            n = sum(1 for p in runs[e]["participants"] if p["worker"] == w["worker"])
            rt = sum(1 for p in runs[e]["participants"] if p["worker"] == w["worker"] and p["verdict"] == "real-time")
            wrows.append([ENGINE_LABEL[e], w["worker"], _f(w.get("cpu")), f"{w['participants_range'][0]}-"
                          f"{w['participants_range'][1] - 1}", f"{rt}/{n}", _f(w.get("rx_frames_per_s")),
                          _f(w.get("cpu_percent")), _f(w.get("core_percent")),
                          f"{_f(w.get('loop_lag_ms_p50'), digits=1)} / {_f(w.get('loop_lag_ms_p95'), digits=1)} / "
                          f"{_f(w.get('loop_lag_ms_max'))}", _f(w.get("threads")), _warmup(w),
                          "interrupted" if w.get("interrupted") else ""])
        for f in runs[e]["failures"]:
            wrows.append([ENGINE_LABEL[e], f["worker"], "-", f"{f['range'][0]}-{f['range'][1] - 1}", "0", "-", "-",
                          "-", "-", "-", "-", f"FAILED: {f['reason']}"])
    lines.append(_table(wrows, ["engine", "worker", "core", "participants", "real-time", "rx/s", "CPU %",
                                "core %", "loop lag p50/p95/max ms", "threads", "warm-up s", ""]))
    lines += ["", *_participant_table(runs, engines, all_rows)]
    if report.get("targets"):
        lines += ["", "targets (issue 7; printed, not asserted)"]
        for t in report["targets"]:
            base = "" if t["baseline_value"] is None else f", plain aiortc {t['baseline_value']}"
            verdict = ("met" if t["met"] else "NOT met") if t["met"] is not None else \
                f"not tested (this run has {total} participants)"
            lines.append(f"  {t['name']}: callrt {_f(t['value'])}{base} -> {verdict}")
    lines.append("")
    c = s.get("callrt") or s[engines[0]]
    lines.append(f"{'OK' if report['ok'] else 'FAILED'}: {c['real_time']} of {c['participants']} participants "
                 f"real-time, {c['failed']} failed")
    return "\n".join(lines)


def _participant_table(runs: dict[str, Any], engines: list[str], all_rows: bool) -> list[str]:
    """callrt's participants (with plain aiortc's p95 and verdict beside them when it ran).

    Up to ``MAX_ROWS`` rows: every participant when there are few, else those that are not real-time
    in either engine.
    """
    main = runs[engines[0]]["participants"]
    base = {p["index"]: p for p in runs["aiortc"]["participants"]} if "aiortc" in runs and engines[0] != "aiortc" \
        else None

    def trouble(p: dict[str, Any]) -> bool:
        b = base.get(p["index"], {}) if base is not None else {}
        return p["verdict"] != "real-time" or b.get("verdict", "real-time") != "real-time"

    troubled = [p for p in main if trouble(p)]
    shown = main if all_rows or len(main) <= MAX_ROWS else troubled[:MAX_ROWS]
    head = ["participant", "worker", "join ms", "first frame ms", "rate/s", "verified", "latency p50", "p95",
            "trend", "loss %", "verdict"]
    if base is not None:
        head += ["aiortc p95", "aiortc verdict"]
    head.append("reason")
    rows = []
    for p in shown:
        row = [p["user_id"], _f(p["worker"]), _f(p["join_ms"]), _f(p["first_frame_ms"]), _f(p["rate"], digits=1),
               "yes" if p["verified"] else "NO", _f(p["latency_ms_p50"]), _f(p["latency_ms_p95"]),
               _f(p["latency_ms_trend"]), _f(None if p["loss"] is None else p["loss"] * 100, digits=1), p["verdict"]]
        reason = p["reason"] or ""
        if base is not None:
            b = base.get(p["index"], {})
            row += [_f(b.get("latency_ms_p95")), b.get("verdict", "-")]
            if not reason and b.get("reason"):
                reason = f"(aiortc) {b['reason']}"
        row.append(reason)
        rows.append(row)
    title = f"participants ({ENGINE_LABEL[engines[0]]})"
    if not shown:
        return [f"{title}: all {len(main)} real-time (--all-rows lists them)"]
    if len(shown) < len(main):
        title += (f": {len(troubled)} of {len(main)} not real-time in some engine, the first {len(shown)} shown "
                  f"(--all-rows for every one, --json for everything)")
    return [title, _table(rows, head)]


def render_worker(report: dict[str, Any], *, all_rows: bool = False) -> str:
    """A worker's own report as text (``callrt swarm --worker`` without ``--ipc``)."""
    w = report
    ps = w["participants"]
    rt = sum(1 for p in ps if p["verdict"] == "real-time")
    a, b = w["participants_range"]
    lines = [f"swarm {w['run_id']} worker {w['worker']} ({ENGINE_LABEL.get(w['engine'], w['engine'])}) on "
             f"{w['host']}, participants {a}-{b - 1}, core {_f(w.get('cpu'))}: {rt}/{len(ps)} real-time, "
             f"rx {_f(w.get('rx_frames_per_s'))} frames/s, CPU {_f(w.get('cpu_percent'))}%, loop lag p95 "
             f"{_f(w.get('loop_lag_ms_p95'), digits=1)} ms" + (" (interrupted)" if w.get("interrupted") else ""),
             ""]
    lines += _participant_table({w["engine"]: {"participants": ps}}, [w["engine"]], all_rows)
    return "\n".join(lines)
