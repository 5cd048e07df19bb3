"""Receive-side checks of one participant: every frame verified as it arrives, cheaply.

A ``Participant`` holds one ``VideoCheck`` and/or ``AudioCheck`` per expected sender. Both engines
(callrt and the plain-aiortc baseline) feed them the same way, so the checking costs the same in
both. Per frame: video reads the index (``read_index``, ``devices.read_frame_index`` in one
gather) and the capture stamp (``read_capture_ms``), unwraps the stamp (the pattern repeats every
10 s), checks the order, counts gaps as loss and records the latency; audio computes the block's
RMS into a reused buffer, copies it into a 1 s ring (for the FFT at the end), counts RTP
timestamp gaps as loss and hands the block to ``ToneMarks`` for latency. Loss and latency count
once the measuring window is open (after the joins and a warm-up), content checks from the first
frame. ``Timeline`` sums what a worker received per second, for the live view and the plot.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from devices import dominant_frequency
from devices.tone import FREQ_TOLERANCE_HZ
from media.frames import AUDIO_SAMPLE_RATE, VideoFrame
from signaling.swarm.stamped import (
    BLOCK,
    VIDEO_CYCLE_MS,
    ToneMarks,
    cycle_frames,
    latency_ms,
    read_capture_ms,
    read_index,
)
from signaling.swarm.stats import percentile_r1, r1

RING_SAMPLES = AUDIO_SAMPLE_RATE  # the last second of each received tone, for the FFT


def trend(values: list[float]) -> float | None:
    """Median of the last third minus the first third (ms): a growing latency means falling behind."""
    if len(values) < 6:
        return None
    third = len(values) // 3
    return statistics.median(values[-third:]) - statistics.median(values[:third])


class Timeline:
    """What one worker received during the current second (reset by ``roll``)."""

    def __init__(self) -> None:
        self.audio_frames = 0
        self.video_frames = 0
        self.latencies: list[float] = []

    def roll(self) -> tuple[int, int, list[float]]:
        out = (self.audio_frames, self.video_frames, self.latencies)
        self.audio_frames = self.video_frames = 0
        self.latencies = []
        return out


@dataclass
class _Stream:
    sender: int
    frames: int = 0
    first_at: float | None = None
    """Wall-clock arrival of the first frame."""
    last_at: float | None = None
    lost: int = 0
    latencies: list[float] = field(default_factory=list)
    window_frames: int = 0
    """Frames that arrived after the measuring window opened."""
    window_from: float | None = None
    window_open: bool = False

    def _arrived(self) -> float:
        """Count one received frame (in the window too, once it is open); returns the wall-clock now."""
        now = time.time()
        self.frames += 1
        self.last_at = now
        if self.first_at is None:
            self.first_at = now
        if self.window_open:
            self.window_frames += 1
            if self.window_from is None:
                self.window_from = now
        return now


class VideoCheck(_Stream):
    """One sender's video as received by one participant.

    The pattern repeats every 10 s (``stamped``): stamps count milliseconds modulo
    ``VIDEO_CYCLE_MS`` and indices count frames modulo ``cycle`` (``fps`` x 10). The capture
    time is unwrapped on the assumption that latency moves by less than 5 s from one received
    frame to the next (a stream that falls 14 s behind reads 14 s, a 7 s freeze is a 7 s gap,
    not an old frame);
    the first frame is taken to be less than 10 s late. The order and the frames lost follow
    from the capture times; the index must agree with them, or the frame counts as unreadable.
    """

    def __init__(self, sender: int, timeline: Timeline, fps: float) -> None:
        super().__init__(sender)
        self.timeline = timeline
        self.fps = fps
        self.cycle = cycle_frames(fps)
        self.verified = 0
        self.unreadable = 0
        self.out_of_order = 0
        self.last_index = -1
        self.window_verified = 0
        self._capture_ms = 0.0
        """Capture time of the last verified frame, ms since the epoch (unwrapped)."""
        self._latency = 0.0

    def on_frame(self, frame: VideoFrame) -> None:
        now = self._arrived()
        self.timeline.video_frames += 1
        index = read_index(frame)
        stamp = read_capture_ms(frame) if index is not None else None
        if index is None or stamp is None:
            self.unreadable += 1
            return
        lat = latency_ms(stamp, now)
        if self.last_index >= 0:
            lat += VIDEO_CYCLE_MS * max(0, round((self._latency - lat) / VIDEO_CYCLE_MS))
            capture = now * 1000 - lat
            step = round((capture - self._capture_ms) * self.fps / 1000)
            if step <= 0:
                self.out_of_order += 1
                return
            if (self.last_index + step) % self.cycle != index % self.cycle:
                self.unreadable += 1  # its index and its time disagree
                return
            if self.window_open:
                self.lost += step - 1
        self.last_index, self._latency, self._capture_ms = index, lat, now * 1000 - lat
        self.verified += 1
        if self.window_open:
            self.window_verified += 1
        self.timeline.latencies.append(lat)
        if self.window_open:
            self.latencies.append(lat)


class AudioCheck(_Stream):
    """One sender's tone as received by one participant."""

    def __init__(self, sender: int, timeline: Timeline, marks: ToneMarks) -> None:
        super().__init__(sender)
        self.timeline = timeline
        self.marks = marks
        self.ring = np.zeros(RING_SAMPLES, np.int16)
        self._ring_pos = 0
        self._ring_full = False
        self._f32 = np.zeros(BLOCK, np.float32)
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.rate = AUDIO_SAMPLE_RATE

    def on_samples(self, samples: np.ndarray, ts: int, rate: int) -> None:
        """``samples``: int16 ``(n, channels)``; ``ts``: the frame's RTP timestamp (pts) in samples."""
        now = self._arrived()
        self.rate = rate
        self.timeline.audio_frames += 1
        n = samples.shape[0]
        mono = samples[:, 0]
        if n == BLOCK:
            buf = self._f32
            np.copyto(buf, mono, casting="unsafe")
            rms = math.sqrt(float(np.dot(buf, buf)) / n)
        else:
            x = mono.astype(np.float32)
            rms = math.sqrt(float(np.dot(x, x)) / max(n, 1))
        end = self._ring_pos + n
        if end <= RING_SAMPLES:
            self.ring[self._ring_pos:end] = mono
        else:
            first = RING_SAMPLES - self._ring_pos
            self.ring[self._ring_pos:] = mono[:first]
            self.ring[: n - first] = mono[first:]
        self._ring_full = self._ring_full or end >= RING_SAMPLES
        self._ring_pos = end % RING_SAMPLES
        if self.first_ts is None:
            self.first_ts = ts
        elif self.last_ts is not None and ts > self.last_ts + n and self.window_open:
            self.lost += (ts - self.last_ts) // n - 1
        self.last_ts = ts if self.last_ts is None else max(ts, self.last_ts)
        lat = self.marks.push(ts, rms, now)
        if lat is not None:
            self.timeline.latencies.append(lat)
            if self.window_open:
                self.latencies.append(lat)

    def frequency(self) -> float | None:
        """The dominant frequency of the last second received (None before 0.2 s arrived)."""
        if self._ring_full:
            samples = np.concatenate([self.ring[self._ring_pos:], self.ring[: self._ring_pos]])
        else:
            samples = self.ring[: self._ring_pos]
        if samples.size < AUDIO_SAMPLE_RATE // 5:
            return None
        return dominant_frequency(samples, self.rate)


def stream_rate(stream: _Stream, window_end: float) -> float:
    """Frames per second that arrived between the window's opening (or the stream's first frame) and its end."""
    if stream.window_from is None or stream.window_frames < 2:
        return 0.0
    span = window_end - stream.window_from
    return stream.window_frames / span if span > 0.5 else 0.0


def summarize_video(checks: list[VideoCheck], window_end: float) -> dict[str, Any]:
    lat = [x for c in checks for x in c.latencies]
    expected = sum(c.window_verified + c.lost for c in checks)
    return {
        "streams": len(checks),
        "streams_received": sum(1 for c in checks if c.frames),
        "fps": round(statistics.fmean([stream_rate(c, window_end) for c in checks]), 2) if checks else 0.0,
        "frames": sum(c.frames for c in checks),
        "frames_verified": sum(c.verified for c in checks),
        "frames_unreadable": sum(c.unreadable for c in checks),
        "frames_out_of_order": sum(c.out_of_order for c in checks),
        "loss": round(sum(c.lost for c in checks) / expected, 4) if expected else None,
        "latency_ms_p50": percentile_r1(lat, 0.5),
        "latency_ms_p95": percentile_r1(lat, 0.95),
        "latency_ms_trend": r1(_worst_trend([c.latencies for c in checks])),
        "verified": bool(checks) and all(c.verified > 0 and c.out_of_order == 0
                                         and c.unreadable <= max(2, c.frames // 50) for c in checks),
    }


def summarize_audio(checks: list[AudioCheck], expected_hz: dict[int, float], window_end: float) -> dict[str, Any]:
    lat = [x for c in checks for x in c.latencies]
    hz = {c.sender: c.frequency() for c in checks}
    frames = sum(c.frames for c in checks)
    in_window = sum(c.window_frames for c in checks)
    lost = sum(c.lost for c in checks)
    return {
        "streams": len(checks),
        "streams_received": sum(1 for c in checks if c.frames),
        "rate": round(statistics.fmean([stream_rate(c, window_end) for c in checks]), 2) if checks else 0.0,
        "frames": frames,
        "loss": round(lost / (in_window + lost), 4) if in_window + lost else None,
        "latency_ms_p50": percentile_r1(lat, 0.5),
        "latency_ms_p95": percentile_r1(lat, 0.95),
        "latency_ms_trend": r1(_worst_trend([c.latencies for c in checks])),
        "marks": len(lat),
        "hz": {str(s): (round(f, 1) if f is not None else None) for s, f in hz.items()},
        "verified": bool(checks) and all(
            f is not None and abs(f - expected_hz[s]) <= FREQ_TOLERANCE_HZ for s, f in hz.items()),
    }


def _worst_trend(series: list[list[float]]) -> float | None:
    trends = [t for t in (trend(s) for s in series) if t is not None]
    return max(trends) if trends else None

