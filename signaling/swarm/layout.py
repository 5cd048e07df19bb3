"""Who is where in a swarm: calls, participant indices, ids, tone frequencies, worker ranges, media.

Participants are numbered ``0 .. calls * per_call - 1``; participant ``k`` is in call
``k // per_call`` at slot ``k % per_call``. Every id derives from the run id and ``k``, so
workers on different machines that share ``--run-id``, ``--calls`` and ``--per-call`` agree on
everything without talking to each other: user ``{run}-p{k}``, call ``default:{run}-c{c}``,
tone ``300 + 50 * (k % 150)`` Hz (distinct inside any call of up to 150), pacing phase.
"""

from __future__ import annotations

import itertools
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any, Literal

from signaling.cli_args import size_problem
from signaling.swarm.errors import InvalidSwarmSpec

CALL_TYPE = "default"
TONE_BASE_HZ = 300.0
TONE_STEP_HZ = 50.0
"""A multiple of 50 Hz: every 20 ms block of the tone is the same array (no per-frame synthesis)."""
TONE_SLOTS = 150
PHASES = 8
"""Sources start at one of 8 evenly spread phases of their period, so a worker's sources do not all fire at once."""

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9]{1,24}$")
_VIDEO_RE = re.compile(r"^(\d+)x(\d+)(?:@(\d+(?:\.\d+)?))?$")


def check_loop(loop: str) -> None:
    """Refuse ``--loop uvloop`` up front when uvloop is not installed (rather than in every worker)."""
    import importlib.util

    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise InvalidSwarmSpec("--loop uvloop needs uvloop (pip install uvloop)")
    if loop not in ("asyncio", "uvloop"):
        raise InvalidSwarmSpec(f"--loop {loop!r}: asyncio or uvloop")


def new_run_id() -> str:
    return "sw" + secrets.token_hex(3)


@dataclass(frozen=True)
class VideoSpec:
    width: int
    height: int
    fps: float

    def __str__(self) -> str:
        return f"{self.width}x{self.height}@{self.fps:g}"


def parse_video(spec: str | None) -> VideoSpec | None:
    """``WxH@fps`` (fps defaults to 30), or ``none``/empty for no video."""
    if spec is None or spec.strip().lower() in ("", "none", "off"):
        return None
    m = _VIDEO_RE.match(spec.strip().lower())
    if not m:
        raise InvalidSwarmSpec(f"--video {spec!r}: expected WxH@fps, e.g. 640x480@30, or none")
    width, height = int(m.group(1)), int(m.group(2))
    fps = float(m.group(3) or 30)
    problem = size_problem(width, height)
    if problem:
        raise InvalidSwarmSpec(f"--video {spec!r}: {problem}")
    if not 1 <= fps <= 60:
        raise InvalidSwarmSpec(f"--video {spec!r}: fps must be 1..60")
    return VideoSpec(width, height, fps)


@dataclass(frozen=True)
class MediaSpec:
    """What every participant publishes (and therefore receives from each peer)."""

    audio: bool = True
    video: VideoSpec | None = None
    codec: Literal["vp8", "h264"] = "vp8"
    bitrate: int = 800_000
    """Video target bits per second."""
    audio_encoding: Literal["replay", "live"] = "replay"
    """callrt bots: send their marked tone encoded once at start (``replay``) or encode it live."""
    video_encoding: Literal["replay", "live"] = "replay"
    """callrt bots: send their stamped pattern's 10 s cycle encoded once at start (``replay``) or encode it live."""

    def __post_init__(self) -> None:
        if not self.audio and self.video is None:
            raise InvalidSwarmSpec("nothing to send: give --audio and/or --video WxH@fps")
        if self.codec not in ("vp8", "h264"):
            raise InvalidSwarmSpec(f"--codec {self.codec!r}: vp8 or h264")
        if self.audio_encoding not in ("replay", "live"):
            raise InvalidSwarmSpec(f"--audio-encoding {self.audio_encoding!r}: replay or live")
        if self.video_encoding not in ("replay", "live"):
            raise InvalidSwarmSpec(f"--video-encoding {self.video_encoding!r}: replay or live")

    def describe(self) -> str:
        parts = []
        if self.audio:
            replay = " (pre-encoded replay)" if self.audio_encoding == "replay" else ""
            parts.append(f"audio opus 48 kHz mono{replay}")
        if self.video is not None:
            replay = " (pre-encoded replay)" if self.video_encoding == "replay" else ""
            parts.append(f"video {self.codec} {self.video}{replay}")
        return " + ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["video"] = str(self.video) if self.video is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MediaSpec:
        return cls(audio=bool(d["audio"]), video=parse_video(d.get("video")), codec=d.get("codec", "vp8"),
                   bitrate=int(d.get("bitrate", 800_000)), audio_encoding=d.get("audio_encoding", "replay"),
                   video_encoding=d.get("video_encoding", "replay"))


@dataclass(frozen=True)
class Layout:
    """The participants of one run and the calls they are in."""

    run_id: str
    calls: int
    per_call: int

    def __post_init__(self) -> None:
        if not _RUN_ID_RE.match(self.run_id):
            raise InvalidSwarmSpec(f"--run-id {self.run_id!r}: 1-24 letters or digits")
        if self.calls < 1:
            raise InvalidSwarmSpec("--calls must be >= 1")
        if not 2 <= self.per_call <= TONE_SLOTS:
            raise InvalidSwarmSpec(f"--per-call must be 2..{TONE_SLOTS}")

    @property
    def total(self) -> int:
        return self.calls * self.per_call

    def call_of(self, k: int) -> int:
        return k // self.per_call

    def call_id(self, call: int) -> str:
        return f"{self.run_id}-c{call}"

    def user_id(self, k: int) -> str:
        return f"{self.run_id}-p{k}"

    def index_of(self, user_id: str) -> int | None:
        """The participant index a user id names, or None for a user outside this run."""
        prefix = f"{self.run_id}-p"
        if not user_id.startswith(prefix) or not user_id[len(prefix):].isdigit():
            return None
        k = int(user_id[len(prefix):])
        return k if 0 <= k < self.total else None

    def members(self, call: int) -> range:
        return range(call * self.per_call, (call + 1) * self.per_call)

    def peers(self, k: int) -> list[int]:
        """The participants ``k`` receives from."""
        return [j for j in self.members(self.call_of(k)) if j != k]

    def tone_hz(self, k: int) -> float:
        return TONE_BASE_HZ + TONE_STEP_HZ * (k % TONE_SLOTS)

    def phase(self, k: int) -> float:
        """Fraction of a period by which ``k``'s sources are offset (0, 1/8, ... 7/8)."""
        return (k % PHASES) / PHASES


def parse_range(spec: str, total: int) -> range:
    """``A-B`` (inclusive) or ``A`` → a range of participant indices inside ``0 .. total-1``."""
    m = re.match(r"^\s*(\d+)\s*(?:-\s*(\d+))?\s*$", spec)
    if not m:
        raise InvalidSwarmSpec(f"--participants {spec!r}: expected A-B (inclusive), e.g. 0-49")
    a = int(m.group(1))
    b = int(m.group(2)) if m.group(2) is not None else a
    if not 0 <= a <= b < total:
        raise InvalidSwarmSpec(f"--participants {spec!r}: must lie inside 0-{total - 1}")
    return range(a, b + 1)


def format_range(r: range) -> str:
    return f"{r.start}-{r.stop - 1}"


SplitMode = Literal["auto", "calls", "participants"]


def split(layout: Layout, workers: int, mode: SplitMode = "calls") -> list[range]:
    """Contiguous participant ranges, one per worker.

    ``calls``: whole calls per worker (both ends of every call in one process, as a plain aiortc
    script would have it), balanced by participant count; ``participants``: an even split that may
    put the members of one call in different workers (they meet through the coordinator);
    ``auto``: whole calls when they divide evenly among the workers, else an even split (3 calls
    of 4 on 2 workers: 6 + 6 participants rather than 4 + 8, which overloads one core).
    Workers that would get nothing are dropped.
    """
    if workers < 1:
        raise InvalidSwarmSpec("--processes must be >= 1")
    if mode == "auto":
        mode = "calls" if layout.calls % workers == 0 else "participants"
    if mode == "participants":
        bounds = [layout.total * w // workers for w in range(workers + 1)]
    else:
        bounds = [layout.calls * w // workers * layout.per_call for w in range(workers + 1)]
    return [range(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def whole_calls(layout: Layout, participants: range) -> bool:
    """True when ``participants`` holds every member of each call it touches."""
    if not participants:
        return True
    first, last = layout.call_of(participants.start), layout.call_of(participants.stop - 1)
    return participants.start == first * layout.per_call and participants.stop == (last + 1) * layout.per_call
