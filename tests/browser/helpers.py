"""The call page driven as a person would (clicks), read through ``window.callrt.stats()``; media checks."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from devices import dominant_frequency

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

    from signaling import Call

BEEP_HZ = 400.0
"""Chromium's fake microphone: a 400 Hz beep, 30 ms every 0.5 s."""
FAKE_CAMERA = (640, 480)


class CallPage:
    """One browser tab on the call page."""

    def __init__(self, context: BrowserContext, base_url: str) -> None:
        self.context = context
        self.base_url = base_url
        self.page: Page | None = None
        self.errors: list[str] = []
        """Uncaught page errors and console errors: a test may assert there were none."""

    @property
    def p(self) -> Page:
        assert self.page is not None
        return self.page

    async def open(self, call_type: str, call_id: str, user: str | None, *, token: str | None = None,
                   **query: str) -> None:
        """Open ``/call/TYPE/ID``: ``user`` fills the dev login, ``token`` goes in the URL fragment."""
        self.page = await self.context.new_page()
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        params = "&".join(f"{k}={v}" for k, v in (({"user": user} if user else {}) | query).items())
        fragment = f"#token={token}" if token else ""
        await self.page.goto(f"{self.base_url}/call/{call_type}/{call_id}?{params}{fragment}")

    async def join(self, timeout: float = 20.0) -> dict[str, Any]:
        await self.p.click("#join")
        return await self.until(lambda s: s["calling_state"] == "joined", timeout, "the page joined")

    async def click(self, selector: str) -> None:
        await self.p.click(selector)

    async def stats(self) -> dict[str, Any]:
        return await self.p.evaluate("window.callrt.stats()")

    async def until(self, predicate: Callable[[dict[str, Any]], object], timeout: float = 20.0,
                    what: str = "condition") -> dict[str, Any]:
        """Poll the page's stats until ``predicate`` holds; fail with the last stats."""
        deadline = time.monotonic() + timeout
        while True:
            stats = await self.stats()
            try:
                if predicate(stats):
                    return stats
            except (KeyError, TypeError, IndexError):
                pass
            if time.monotonic() > deadline:
                brief = {k: stats.get(k) for k in ("calling_state", "participants", "published", "left_reason",
                                                   "messages")}
                brief["remotes"] = [{k: r.get(k) for k in ("user_id", "published_tracks", "audio")}
                                    | {"video": {k: (r.get("video") or {}).get(k) for k in ("frames", "indices")}}
                                    for r in stats.get("remotes", [])]
                raise AssertionError(f"page: {what} not seen within {timeout}s; page state {brief}; "
                                     f"page errors {self.errors[-5:]}")
            await asyncio.sleep(0.2)

    async def dom_tracks(self, user_id: str) -> str | None:
        """The mute state the page shows for ``user_id`` (its tile's ``data-tracks``), None if no tile."""
        return await self.p.evaluate(
            "(u) => { const t = document.querySelector(`#grid .tile[data-user-id=\"${u}\"]`); "
            "return t ? t.dataset.tracks : null; }", user_id)

    async def listed_users(self) -> list[str]:
        return await self.p.evaluate(
            "[...document.querySelectorAll('#participants li')].map((li) => li.dataset.userId)")

    async def close(self) -> None:
        await self.context.close()


def remote(stats: dict[str, Any], user_id: str) -> dict[str, Any] | None:
    """The page's view of remote participant ``user_id``."""
    return next((r for r in stats["remotes"] if r["user_id"] == user_id), None)


def decoded(stats: dict[str, Any], user_id: str) -> list[int]:
    """TestPattern indices the page read from ``user_id``'s video (the most recent ones)."""
    r = remote(stats, user_id)
    return list(r["video"]["indices"]) if r and r["video"] else []


def link_to(stats: dict[str, Any], session_id: str) -> dict[str, Any]:
    return stats["media"]["links"][session_id]


def assert_increasing(indices: list[int], what: str = "indices") -> None:
    assert indices, f"no {what}"
    assert all(b > a for a, b in itertools.pairwise(indices)), f"{what} out of order: {indices}"


def tone_seen(stats: dict[str, Any], user_id: str, hz: float, tolerance: float = 12.0) -> bool:
    r = remote(stats, user_id)
    return bool(r and r["audio"] and r["audio"]["level"] > 1e-3 and abs(r["audio"]["dominant_hz"] - hz) < tolerance)


async def video_changes(sink: Any, frames: int = 10, timeout: float = 10.0) -> tuple[int, int, float]:
    """Receive ``frames`` frames; return (width, height, fraction of consecutive pairs that differ)."""
    previous = None
    changed = 0
    size = (0, 0)
    for _ in range(frames + 1):
        frame = await asyncio.wait_for(sink.recv(), timeout)
        y = frame.y.astype(np.int16)
        size = (frame.width, frame.height)
        if previous is not None and previous.shape == y.shape and float(np.abs(y - previous).mean()) > 0.05:
            changed += 1
        previous = y
    return size[0], size[1], changed / frames


async def beep_frequency(sink: Any, seconds: float = 1.6, timeout: float = 10.0) -> float:
    """Dominant frequency of ``seconds`` of received audio: a window holding at least three beeps."""
    chunks = []
    rate = 48_000
    got = 0.0
    while got < seconds:
        frame = await asyncio.wait_for(sink.recv(), timeout)
        chunks.append(frame.samples.copy())
        rate = frame.sample_rate
        got += frame.samples.shape[0] / rate
    return dominant_frequency(np.concatenate(chunks), rate)


async def drain(sink: Any) -> None:
    """Drop what a sink queued (frames from before a change)."""
    while sink.stats().queued:
        await sink.recv()


async def sink_of(call: Call, user_id: str, kind: str = "video", timeout: float = 20.0) -> Any:
    """The receive sink of ``user_id``'s ``kind`` in a Python participant."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in call.remote_participants.values():
            if p.user_id == user_id and getattr(p, kind) is not None:
                return getattr(p, kind)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{call.client.user_id} got no {kind} from {user_id} within {timeout}s")
