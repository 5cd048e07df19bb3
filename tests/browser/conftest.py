"""Browser fixtures: Debian's ``chromium`` driven by Playwright for Python, never a downloaded browser.

The browser tests skip, saying why, when chromium or Playwright is missing (``bash scripts/browser.sh``
installs both); with ``CI`` set they fail instead, so CI cannot pass without running them.
The browser runs headless with its fake camera (640x480, 20 fps, moving content) and fake
microphone (a 400 Hz beep, 30 ms every 0.5 s), a fresh profile, and nothing it may fetch from
outside the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from benchmarks.browser import CHROMIUM, CHROMIUM_ARGS, browser_missing
from signaling.server import EmbeddedCoordinator
from tests.browser.helpers import CallPage
from tests.conftest import make_config
from tests.signaling.media_helpers import Bot, make_bot

if TYPE_CHECKING:
    from playwright.async_api import Browser


def require_browser() -> None:
    """Skip (fail with ``CI`` set) when chromium or Playwright is missing."""
    reason = browser_missing()
    if reason is None:
        return
    hint = "bash scripts/browser.sh installs chromium (apt-get) and Playwright (the venv's pip)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so the browser tests must run: {hint}")
    pytest.skip(f"{reason}; {hint}")


class SessionIds:
    """Chooses the prefix of the next session ids the embedded coordinator hands out.

    Who offers in a pair is decided by the session ids (the smaller offers), which the
    coordinator draws at random; tests that must cover the page as offerer and as answerer
    set a prefix (``"0000"`` offers to everyone, ``"ffff"`` answers everyone) for the next join.
    """

    def __init__(self) -> None:
        self.prefixes: deque[str] = deque()

    def next(self, prefix: str) -> None:
        self.prefixes.append(prefix)

    def token_hex(self, nbytes: int | None = None) -> str:
        real = secrets.token_hex(nbytes)
        if self.prefixes:
            prefix = self.prefixes.popleft()
            return prefix + real[len(prefix):]
        return real

    def __getattr__(self, name: str) -> Any:
        return getattr(secrets, name)


@pytest.fixture
def session_ids(monkeypatch: pytest.MonkeyPatch) -> SessionIds:
    ids = SessionIds()
    monkeypatch.setattr("signaling.server.service.secrets", ids)
    return ids


@pytest.fixture
async def coord() -> AsyncIterator[EmbeddedCoordinator]:
    """A coordinator with development keys (the page's dev login) and a short participant timeout:
    a page whose heartbeats stopped would be removed within a test."""
    async with EmbeddedCoordinator(make_config(dev_keys=True, participant_timeout_s=3.0, reap_interval_s=0.25)) as c:
        yield c


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Chromium for one test (Playwright's ``launch`` gives it a fresh temporary profile)."""
    require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        try:
            yield launched
        finally:
            await launched.close()


PageFactory = Callable[..., Awaitable[CallPage]]


@pytest.fixture
async def call_page(browser: Browser, coord: EmbeddedCoordinator) -> AsyncIterator[PageFactory]:
    """``await call_page("default", "c1", "alice")``: the call page in a fresh browser context (dev login
    as alice; ``token=...`` joins with a user token instead)."""
    pages: list[CallPage] = []

    async def open_page(call_type: str, call_id: str, user: str | None, **kw: str) -> CallPage:
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        cp = CallPage(context, coord.url)
        pages.append(cp)
        await cp.open(call_type, call_id, user, **kw)
        return cp

    yield open_page
    for cp in pages:
        with contextlib.suppress(Exception):
            await cp.close()


BotFactory = Callable[..., Awaitable[Bot]]
BOT_CLOSE_TIMEOUT_S = 20.0


@pytest.fixture
async def bots(coord: EmbeddedCoordinator) -> AsyncIterator[BotFactory]:
    """``await bots("bot1", "c1", 440)``: a Python participant with a TestPattern and a Tone; left at teardown."""
    made: list[Bot] = []

    async def make(user: str, call_id: str, freq: float, **kw: Any) -> Bot:
        bot = await make_bot(coord, user, call_id, freq, **kw)
        made.append(bot)
        return bot

    yield make
    stuck = []
    for bot in made:
        try:
            await asyncio.wait_for(bot.client.aclose(), BOT_CLOSE_TIMEOUT_S)
        except TimeoutError:
            stuck.append(f"{bot.client.user_id}: close did not finish in {BOT_CLOSE_TIMEOUT_S:g}s; "
                         f"pending tasks:\n{pending_tasks()}")
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            stuck.append(f"{bot.client.user_id}: close raised CancelledError without being cancelled")
        except Exception as exc:
            stuck.append(f"{bot.client.user_id}: close failed: {exc!r}")
    if stuck:
        pytest.fail("a bot did not leave cleanly:\n" + "\n".join(stuck))


def pending_tasks(limit: int = 40) -> str:
    """Where this loop's unfinished tasks wait (evidence when a close hangs)."""
    lines = []
    for task in list(asyncio.all_tasks())[:limit]:
        frames = task.get_stack(limit=6)
        where = " <- ".join(f"{Path(f.f_code.co_filename).name}:{f.f_lineno} {f.f_code.co_name}" for f in frames)
        lines.append(f"  {task.get_name()}: {where}")
    return "\n".join(lines)
