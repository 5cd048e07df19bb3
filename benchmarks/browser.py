"""Browser benchmark: how soon the call page shows a bot's video, next to a Python participant.

``python -m benchmarks.browser [--quick] [--codecs vp8,h264] [--rounds N] [--json PATH] [--markdown PATH]``

Debian's ``chromium`` (headless, driven by Playwright for Python, its fake camera and microphone)
opens the call page served by an ``EmbeddedCoordinator`` in this process; bots are
``signaling.Client`` participants publishing a 640x480 ``TestPattern`` and a ``Tone``. Every
figure is the median over rounds, and each round measures the page and its Python baseline
back to back, so load from elsewhere on the machine hits both alike:

* **page load -> first remote frame**: a bot is in the call; the page is navigated to
  ``/call/default/ID?user=...`` and its Join button clicked as soon as it exists. Measured from
  the navigation start (``performance.timeOrigin``) to the first frame of the bot's video the
  page presents (``requestVideoFrameCallback``): page load, dev login, event socket, join REST
  call, camera and microphone, media socket, offer/answer with complete ICE gathering,
  ICE/DTLS, first keyframe, decode. Baseline: a Python participant (``Client`` + ``call.join``,
  also publishing a camera and a microphone) joining the same way: from creating the client to
  the first frame its sink receives from the bot.
* **bot join -> first frame in the page**: the page is alone in a call (publishing its fake
  camera and microphone); a bot joins; from the start of the bot's ``call.join()`` to the first
  frame of its video presented in the page. Baseline: the same with a Python participant in the
  page's place (first frame received by its sink). This is the media benchmark's (``e2e``)
  "time to first frame from join start", measured in this run with the same bots.

Wall-clock instants from the page (``Date.now()``) and from Python (``time.time()``) are
compared directly: one machine, one clock. The bots and the coordinator share this process;
chromium runs in its own processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks._report import Progress, Record, configure_logging, publish
from devices import TestPattern, Tone
from signaling.call import Call
from signaling.client import Client
from signaling.server.config import ServerConfig
from signaling.server.embedded import EmbeddedCoordinator

logger = logging.getLogger(__name__)

CHROMIUM = os.environ.get("CALLRT_CHROMIUM", "/usr/bin/chromium")
"""The system's browser (Debian's ``chromium`` package); never a downloaded one."""
CHROMIUM_ARGS = (
    "--no-sandbox",  # root in a container
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
)
SIZE = (640, 480)
FIRST_FRAME_TIMEOUT_S = 30.0


class BenchmarkError(RuntimeError):
    """The benchmark could not run (no browser) or a stream never delivered a frame."""


def browser_missing() -> str | None:
    """Why chromium + Playwright cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed in this environment"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no chromium at {CHROMIUM} (Debian's package; or set CALLRT_CHROMIUM)"
    return None


# ---------------------------------------------------------------- participants


async def _bot(coord: EmbeddedCoordinator, user: str, call_id: str, *, camera: bool = True) -> tuple[Client, Call]:
    client = Client(coord.url, api_key=coord.config.api_key, token=coord.user_token(user))
    call = client.call("default", call_id)
    await call.camera.select(TestPattern(*SIZE, fps=30))
    await call.microphone.select(Tone(440))
    if not camera:
        await call.camera.disable()
    return client, call


async def _first_frame_epoch(call: Call, user_id: str, timeout: float = FIRST_FRAME_TIMEOUT_S) -> float:
    """``time.time()`` at which ``call`` received its first video frame from ``user_id``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in call.remote_participants.values():
            if p.user_id == user_id and p.video is not None:
                frame = await asyncio.wait_for(p.video.recv(), max(0.1, deadline - time.monotonic()))
                return frame.capture_time  # stamped by the sink when the decoded frame arrived
        await asyncio.sleep(0.005)
    raise BenchmarkError(f"{call.client.user_id} got no video from {user_id} within {timeout:g}s")


async def _page_stats(page: Any) -> dict[str, Any]:
    return await page.evaluate("window.callrt.stats()")


async def _page_first_frame(page: Any, user_id: str, timeout: float = FIRST_FRAME_TIMEOUT_S) -> dict[str, Any]:
    """The page's stats once it presented a frame of ``user_id``'s video."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = await _page_stats(page)
        for r in stats["remotes"]:
            if r["user_id"] == user_id and r["video"] and r["video"]["first_frame_epoch_ms"] is not None:
                return stats
        await asyncio.sleep(0.02)
    raise BenchmarkError(f"the page showed no video from {user_id} within {timeout:g}s")


def _codec_of(stats: dict[str, Any]) -> str | None:
    for link in (stats.get("media") or {}).get("links", {}).values():
        recv = link.get("recv_video")
        if recv and recv.get("codec"):
            return str(recv["codec"]).split("/")[-1].lower()
    return None


async def _negotiated_codec(page: Any, timeout: float = 5.0) -> str:
    """The codec of the video the page receives (getStats names it shortly after the first frame)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codec = _codec_of(await _page_stats(page))
        if codec:
            return codec
        await asyncio.sleep(0.1)
    return "?"


# ---------------------------------------------------------------- one round


@dataclass
class Samples:
    page_load_ms: list[float] = field(default_factory=list)
    python_load_ms: list[float] = field(default_factory=list)
    page_after_bot_ms: list[float] = field(default_factory=list)
    python_after_bot_ms: list[float] = field(default_factory=list)
    page_joined_ms: list[float] = field(default_factory=list)
    """Navigation start -> the page joined (media socket open), in the page-load measurement."""
    negotiated: set[str] = field(default_factory=set)


async def _open_page(browser: Any, url: str) -> tuple[Any, Any]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    await page.goto(url)
    await page.click("#join")
    return context, page


async def _close_page(context: Any, page: Any) -> None:
    with contextlib.suppress(Exception):
        await page.evaluate("window.callrt.leave()")
    await context.close()


async def _round(browser: Any, coord: EmbeddedCoordinator, codec: str, tag: str, out: Samples) -> None:
    override = {"settings_override": {"video": {"codec": codec}}}
    closing: list[Client] = []
    try:
        # page load -> first remote frame, then a Python participant the same way
        call_id = f"load-{tag}"
        sender, sender_call = await _bot(coord, f"{tag}-sender", call_id)
        closing.append(sender)
        await sender_call.join(create=True, data=override)
        context, page = await _open_page(browser, f"{coord.url}/call/default/{call_id}?user={tag}-page")
        try:
            stats = await _page_first_frame(page, f"{tag}-sender")
            remote = next(r for r in stats["remotes"] if r["user_id"] == f"{tag}-sender")
            out.page_load_ms.append(float(remote["video"]["first_frame_at_ms"]))
            out.page_joined_ms.append(float(stats["timing"]["joined_at_ms"]))
            out.negotiated.add(await _negotiated_codec(page))
        finally:
            await _close_page(context, page)
        t0 = time.time()
        viewer, viewer_call = await _bot(coord, f"{tag}-viewer", call_id)
        closing.append(viewer)
        await viewer_call.join()
        out.python_load_ms.append((await _first_frame_epoch(viewer_call, f"{tag}-sender") - t0) * 1000)

        # bot join -> first frame in the page, then in a Python participant
        call_id = f"join-{tag}"
        bot, bot_call = await _bot(coord, f"{tag}-joiner", call_id)
        closing.append(bot)
        await bot_call.get_or_create(data=override)  # the call and its codec exist before the page joins
        context, page = await _open_page(browser, f"{coord.url}/call/default/{call_id}?user={tag}-host")
        try:
            deadline = time.monotonic() + FIRST_FRAME_TIMEOUT_S
            while (await _page_stats(page))["calling_state"] != "joined":
                if time.monotonic() > deadline:
                    raise BenchmarkError("the page did not join")
                await asyncio.sleep(0.02)
            t0 = time.time()
            await bot_call.join()
            stats = await _page_first_frame(page, f"{tag}-joiner")
            remote = next(r for r in stats["remotes"] if r["user_id"] == f"{tag}-joiner")
            out.page_after_bot_ms.append(remote["video"]["first_frame_epoch_ms"] - t0 * 1000)
        finally:
            await _close_page(context, page)
        call_id = f"pyjoin-{tag}"
        host, host_call = await _bot(coord, f"{tag}-pyhost", call_id)
        closing.append(host)
        await host_call.join(create=True, data=override)
        bot2, bot2_call = await _bot(coord, f"{tag}-joiner2", call_id)
        closing.append(bot2)
        t0 = time.time()
        await bot2_call.join()
        out.python_after_bot_ms.append((await _first_frame_epoch(host_call, f"{tag}-joiner2") - t0) * 1000)
    finally:
        for client in closing:
            try:
                await client.aclose()
            except Exception:
                logger.exception("closing %s failed", client.user_id)


# ---------------------------------------------------------------- the run


@dataclass
class Plan:
    codecs: tuple[str, ...]
    rounds: int
    quick: bool


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def records_for(codec: str, s: Samples, plan: Plan) -> list[Record]:
    extra_common: dict[str, object] = {"codec": codec, "negotiated": sorted(s.negotiated), "rounds": plan.rounds,
                                       "page_joined_ms_p50": round(_median(s.page_joined_ms), 1),
                                       "quick": plan.quick, "browser": CHROMIUM, "bot_video": f"{SIZE[0]}x{SIZE[1]}"}

    def rec(name: str, values: list[float], baseline: str, base: list[float]) -> Record:
        extra = {**extra_common, "samples_ms": [round(v, 1) for v in values],
                 "baseline_samples_ms": [round(v, 1) for v in base], "max_ms": round(max(values), 1),
                 "baseline_max_ms": round(max(base), 1)}
        return Record(name=f"{codec}: {name}", resolution=f"{SIZE[0]}x{SIZE[1]}", value=_median(values), unit="ms",
                      baseline=baseline, baseline_value=_median(base), extra=extra)

    return [
        rec("page load -> first remote frame (p50)", s.page_load_ms,
            "Python participant: Client() -> first remote frame", s.python_load_ms),
        rec("bot join -> first frame in the page (p50)", s.page_after_bot_ms,
            "bot join -> first frame in a Python participant", s.python_after_bot_ms),
    ]


async def run_benchmark(plan: Plan) -> list[Record]:
    reason = browser_missing()
    if reason:
        raise BenchmarkError(f"{reason}; bash scripts/browser.sh installs chromium and Playwright")
    from playwright.async_api import async_playwright

    config = ServerConfig.from_env()
    config.dev_keys = True  # the page logs in with the dev login
    coord = EmbeddedCoordinator(config)
    await asyncio.to_thread(coord.start)
    records: list[Record] = []
    progress = Progress(len(plan.codecs) * plan.rounds, "browser")
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
            try:
                for codec in plan.codecs:
                    samples = Samples()
                    for i in range(plan.rounds):
                        await _round(browser, coord, codec, f"{codec}{i}-{os.getpid()}", samples)
                        progress.step(f"{codec} round {i + 1}")
                    records += records_for(codec, samples, plan)
            finally:
                await browser.close()
    finally:
        await asyncio.to_thread(coord.stop)
    return records


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.browser", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="VP8 only, 1 round (a smoke run); other flags still apply")
    p.add_argument("--codecs", default=None, help="comma list of vp8,h264 (default both)")
    p.add_argument("--rounds", type=int, default=None, help="rounds per codec (default 5; --quick 1)")
    p.add_argument("--json", metavar="PATH", help="write the records as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the markdown table to this file too")
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


def make_plan(args: argparse.Namespace) -> Plan:
    codecs = tuple(c.strip().lower() for c in args.codecs.split(",")) if args.codecs else (
        ("vp8",) if args.quick else ("vp8", "h264"))
    bad = [c for c in codecs if c not in ("vp8", "h264")]
    if bad:
        raise SystemExit(f"unknown codec(s) {bad}: use vp8, h264")
    rounds = args.rounds or (1 if args.quick else 5)
    if rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    return Plan(codecs=codecs, rounds=rounds, quick=args.quick)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    plan = make_plan(args)
    t0 = time.perf_counter()
    try:
        records = asyncio.run(run_benchmark(plan))
    except BenchmarkError as exc:
        print(f"benchmarks.browser: {exc}", file=sys.stderr)
        return 1
    title = (f"Browser call page (chromium, headless) vs a Python participant, median of {plan.rounds} "
             f"round{'s' if plan.rounds > 1 else ''}{', --quick' if plan.quick else ''}")
    publish(records, title, args.json, args.markdown)
    print(f"benchmarks.browser: done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
