"""One swarm participant as both engines see it: its sources, its receive checks, its result and verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from signaling.swarm.checks import AudioCheck, Timeline, VideoCheck, summarize_audio, summarize_video
from signaling.swarm.layout import Layout, MediaSpec
from signaling.swarm.stamped import MarkedTone, StampedTestPattern, ToneMarks, mark_offset

Verdict = Literal["real-time", "late", "lossy", "failed"]
VERDICT_ORDER: tuple[Verdict, ...] = ("real-time", "late", "lossy", "failed")


@dataclass(frozen=True)
class Thresholds:
    """When a participant stops counting as real-time."""

    min_rate: float = 0.96
    """Received frames/s per stream below this fraction of the source's rate: lossy (48 of 50 audio frames/s)."""
    max_loss: float = 0.02
    """More than this fraction of frames missing (index or RTP timestamp gaps): lossy."""
    late_ms: float = 250.0
    """Capture-to-receipt latency p95 above this: late."""
    trend_ms: float = 100.0
    """Latency growing by more than this between the first and last third of the run: late (falling behind)."""

    def as_dict(self) -> dict[str, float]:
        return {"min_rate": self.min_rate, "max_loss": self.max_loss, "late_ms": self.late_ms,
                "trend_ms": self.trend_ms}


class Participant:
    """Sources, checks and timings of participant ``index``; an engine makes it join and leave."""

    def __init__(self, index: int, layout: Layout, media: MediaSpec, timeline: Timeline, *,
                 preencode_audio: bool = False, preencode_video: bool = False) -> None:
        self.index = index
        self.layout = layout
        self.media = media
        self.timeline = timeline
        self.user_id = layout.user_id(index)
        self.call = layout.call_of(index)
        phase = layout.phase(index)
        self.tone = (MarkedTone(layout.tone_hz(index), phase=phase, preencode=preencode_audio)
                     if media.audio else None)
        v = media.video
        self.pattern = (StampedTestPattern(v.width, v.height, v.fps, phase=phase, preencode=preencode_video,
                                           codec=media.codec, bitrate=media.bitrate)
                        if v is not None else None)
        self.peers = layout.peers(index)
        self.video_checks: dict[int, VideoCheck] = {}
        self.audio_checks: dict[int, AudioCheck] = {}
        if v is not None:
            self.video_checks = {j: VideoCheck(j, timeline, v.fps) for j in self.peers}
        if media.audio:
            self.audio_checks = {
                j: AudioCheck(j, timeline, ToneMarks(mark_offset(layout.phase(j))))
                for j in self.peers}
        self.t_join: float | None = None
        """Wall clock when joining started."""
        self.join_ms: float | None = None
        self.joined = False
        self.error: str | None = None

    def streams_started(self) -> bool:
        """True once a first frame arrived from every sender this participant expects (or it failed)."""
        if self.error is not None:
            return True
        return all(c.first_at is not None for c in (*self.video_checks.values(), *self.audio_checks.values()))

    def open_window(self) -> None:
        """From now on received frames count towards the rates."""
        for c in (*self.video_checks.values(), *self.audio_checks.values()):
            c.window_open = True

    def result(self, window_end: float, thresholds: Thresholds, worker: int, engine: str) -> dict[str, Any]:
        firsts = [c.first_at for c in (*self.video_checks.values(), *self.audio_checks.values())
                  if c.first_at is not None]
        video = summarize_video(list(self.video_checks.values()), window_end) if self.video_checks else None
        audio = None
        if self.audio_checks:
            expected = {j: self.layout.tone_hz(j) for j in self.audio_checks}
            audio = summarize_audio(list(self.audio_checks.values()), expected, window_end)
        primary = video if video is not None else audio
        assert primary is not None
        out: dict[str, Any] = {
            "index": self.index, "user_id": self.user_id, "call": self.call, "worker": worker, "engine": engine,
            "join_ms": None if self.join_ms is None else round(self.join_ms, 1),
            "first_frame_ms": (round((min(firsts) - self.t_join) * 1000, 1)
                               if firsts and self.t_join is not None else None),
            "senders": len(self.peers),
            "rate": primary.get("fps", primary.get("rate")),
            "latency_ms_p50": primary["latency_ms_p50"],
            "latency_ms_p95": primary["latency_ms_p95"],
            "latency_ms_trend": primary["latency_ms_trend"],
            "loss": max((s["loss"] or 0.0) for s in (video, audio) if s is not None),
            "verified": all(s["verified"] for s in (video, audio) if s is not None),
            "video": video, "audio": audio, "error": self.error,
        }
        out["verdict"], out["reason"] = verdict(out, self.media, thresholds)
        return out


def verdict(p: dict[str, Any], media: MediaSpec, th: Thresholds) -> tuple[Verdict, str]:
    """The worst problem of a participant result, with every problem found as the reason."""
    problems: dict[Verdict, list[str]] = {"failed": [], "lossy": [], "late": []}
    if p.get("error"):
        problems["failed"].append(p["error"])
    kinds: list[tuple[str, dict[str, Any] | None, float]] = []
    if media.video is not None:
        kinds.append(("video", p.get("video"), media.video.fps))
    if media.audio:
        kinds.append(("audio", p.get("audio"), 50.0))
    for kind, s, nominal in kinds:
        if s is None:
            if not p.get("error"):
                problems["failed"].append(f"no {kind} result")
            continue
        if s["streams_received"] < s["streams"]:
            problems["failed"].append(f"{kind} from {s['streams_received']} of {s['streams']} senders")
            continue
        if not s["verified"]:
            problems["failed"].append(f"{kind} content not verified")
        rate = s.get("fps", s.get("rate")) or 0.0
        if rate < th.min_rate * nominal:
            problems["lossy"].append(f"{kind} {rate:.1f}/s < {th.min_rate * nominal:.1f}/s")
        if s["loss"] is not None and s["loss"] > th.max_loss:
            problems["lossy"].append(f"{kind} loss {s['loss'] * 100:.1f}%")
        p95, tr = s["latency_ms_p95"], s["latency_ms_trend"]
        if p95 is None:
            problems["late"].append(f"no {kind} latency measured")
        elif p95 > th.late_ms:
            problems["late"].append(f"{kind} latency p95 {p95:.0f} ms > {th.late_ms:.0f} ms")
        if tr is not None and tr > th.trend_ms:
            problems["late"].append(f"{kind} latency grew {tr:.0f} ms")
    order: tuple[Verdict, ...] = ("failed", "lossy", "late")
    for v in order:
        if problems[v]:
            reasons = [r for k in order for r in problems[k]]
            return v, "; ".join(reasons)
    return "real-time", ""


def failed_result(index: int, layout: Layout, worker: int | None, engine: str, reason: str) -> dict[str, Any]:
    """The result of a participant nobody reported on (its worker died, or no report covers it)."""
    return {
        "index": index, "user_id": layout.user_id(index), "call": layout.call_of(index), "worker": worker,
        "engine": engine, "join_ms": None, "first_frame_ms": None, "senders": layout.per_call - 1, "rate": None,
        "latency_ms_p50": None, "latency_ms_p95": None, "latency_ms_trend": None, "loss": None,
        "verified": False, "video": None, "audio": None, "error": reason, "verdict": "failed", "reason": reason,
    }
