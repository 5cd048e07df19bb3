"""A real chromium on the call page and real aiortc bots in one call, over loopback.

Content is verified at both ends: the page reads the bots' TestPattern frame indices from the
pixels it presents and measures their tones; the bots see the fake camera's changing frames and
hear the fake microphone's 400 Hz beep by FFT. Who offers in each pair is chosen through the
session ids (``session_ids``), so the page is tested as offerer and as answerer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from signaling import CallingState, ServerClient
from tests.browser.helpers import (
    BEEP_HZ,
    FAKE_CAMERA,
    assert_increasing,
    beep_frequency,
    decoded,
    drain,
    link_to,
    remote,
    sink_of,
    tone_seen,
    video_changes,
)
from tests.conftest import API_KEY, API_SECRET, eventually

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "artifacts" / "browser-call.png"
BEEP_TOLERANCE_HZ = 12.0


async def assert_bot_receives_browser(bot, user: str = "alice", *, audio: bool = True) -> None:
    """The bot got the page's camera (640x480, changing) and, optionally, its microphone's beep."""
    width, height, changing = await video_changes(await sink_of(bot.call, user, "video"))
    assert (width, height) == FAKE_CAMERA
    assert changing >= 0.7, f"the browser's video hardly changes ({changing:.0%} of frames)"
    if audio:
        freq = await beep_frequency(await sink_of(bot.call, user, "audio"))
        assert abs(freq - BEEP_HZ) < BEEP_TOLERANCE_HZ, f"{bot.client.user_id} heard {freq:.1f} Hz from {user}"


def pattern_flowing(user: str, n: int = 12):
    return lambda s: len(decoded(s, user)) >= n


async def test_page_offers_vp8_and_opus_to_a_late_bot(coord, call_page, bots, session_ids):
    page = await call_page("default", "offer", "alice")
    session_ids.next("0000")  # the page's session: smaller than any bot's, so the page offers
    joined = await page.join()
    assert joined["own_capabilities"] and "end-call" in joined["own_capabilities"]  # it created the call
    assert joined["published"] == ["audio", "video"]

    bot = await bots("bot1", "offer", 440)
    await bot.call.join()  # a late joiner on the bot side
    stats = await page.until(lambda s: pattern_flowing("bot1")(s) and tone_seen(s, "bot1", 440), 25,
                             "bot1's test pattern and 440 Hz tone")
    assert_increasing(decoded(stats, "bot1"), "bot1's frame indices read in the page")
    assert remote(stats, "bot1")["video"]["width"] == 320  # the bot's pattern size, decoded as sent
    link = link_to(await page.stats(), bot.call.session_id)
    assert link["offerer"] is True and link["state"] == "connected"
    assert link["send_video"]["codec"] == "video/VP8" and link["recv_video"]["codec"] == "video/VP8"
    assert link["send_audio"]["codec"] == "audio/opus" and link["recv_audio"]["codec"] == "audio/opus"
    assert bot.call.media.links[page_sid(stats)].offerer is False

    await assert_bot_receives_browser(bot)
    remote_alice = next(p for p in bot.call.remote_participants.values() if p.user_id == "alice")
    assert sorted(remote_alice.published_tracks) == ["audio", "video"]
    assert sorted(await page.listed_users()) == ["alice", "bot1"]
    assert await page.dom_tracks("bot1") == "audio video"
    stats = await page.stats()
    assert stats["media"]["errors"] == [] and remote(stats, "bot1")["audio_playing"] is True
    assert not [e for e in page.errors if "pageerror" in e], page.errors

    # closing the tab leaves the call at once (not after the participant timeout)
    await page.p.close(run_before_unload=True)
    await eventually(lambda: [p.user_id for p in bot.call.state.participants] == ["bot1"], timeout=5)


def page_sid(stats) -> str:
    return stats["session_id"]


async def test_page_answers_h264_joining_late_with_two_bots(coord, call_page, bots, session_ids):
    bot1, bot2 = await bots("bot1", "h264", 440), await bots("bot2", "h264", 660)
    await bot1.call.join(create=True, data={"settings_override": {"video": {"codec": "h264"}}})
    await bot2.call.join()
    page = await call_page("default", "h264", "alice")
    session_ids.next("ffff")  # larger than any bot's: both bots offer to the page
    await page.join()  # a late joiner on the browser side
    stats = await page.until(lambda s: all(pattern_flowing(u)(s) and tone_seen(s, u, f)
                                           for u, f in (("bot1", 440), ("bot2", 660))), 30,
                             "both bots' patterns and tones")
    for user in ("bot1", "bot2"):
        assert_increasing(decoded(stats, user), f"{user}'s frame indices read in the page")
    stats = await page.stats()
    for bot in (bot1, bot2):
        link = link_to(stats, bot.call.session_id)
        assert link["offerer"] is False and bot.call.media.links[page_sid(stats)].offerer is True
        assert link["send_video"]["codec"] == "video/H264" and link["recv_video"]["codec"] == "video/H264", link
        assert "packetization-mode=1" in link["recv_video"]["sdp_fmtp"]
        assert link["send_audio"]["codec"] == "audio/opus" and link["recv_audio"]["codec"] == "audio/opus"
    await asyncio.gather(assert_bot_receives_browser(bot1), assert_bot_receives_browser(bot2))

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    await page.p.set_viewport_size({"width": 1280, "height": 430})
    await page.p.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000  # docs/browser-call.png is a copy of one (refreshed by hand)


async def test_mute_and_unmute_mid_call_on_either_side(coord, call_page, bots):
    page = await call_page("default", "mute", "alice")
    await page.join()
    bot = await bots("bot1", "mute", 440)
    await bot.call.join()
    await page.until(pattern_flowing("bot1", 5), 25, "bot1's pattern")
    video = await sink_of(bot.call, "alice", "video")
    await video_changes(video, frames=3)
    stats = await page.stats()
    alice_sid = page_sid(stats)
    bot_link = bot.call.media.links[alice_sid]
    pc, negotiations = bot_link.pc, bot_link.negotiations
    page_negotiations = link_to(stats, bot.call.session_id)["negotiations"]

    def bot_sees_alice(tracks):
        return lambda: sorted(bot.call.state.participant(alice_sid).published_tracks) == tracks

    # the page mutes its camera: the bot sees the mute, and no more frames arrive
    await page.click("#call-video")
    await eventually(bot_sees_alice(["audio"]), timeout=10)
    remote_alice = next(p for p in bot.call.remote_participants.values() if p.user_id == "alice")
    await eventually(lambda: remote_alice.video_muted, timeout=5)
    await asyncio.sleep(0.7)  # frames in flight land
    settled = video.stats().received
    await asyncio.sleep(1.0)
    assert video.stats().received - settled <= 1
    assert "video-muted" in await page.p.get_attribute("#local-tile", "class")
    # ... and unmutes it: frames again, on the same connection, without renegotiation
    await page.click("#call-video")
    await eventually(bot_sees_alice(["audio", "video"]), timeout=10)
    await drain(video)
    _, _, changing = await video_changes(video, frames=6)
    assert changing >= 0.6
    assert bot.call.media.links[alice_sid] is bot_link and bot_link.pc is pc and bot_link.negotiations == negotiations

    # the page mutes and unmutes its microphone
    await page.click("#call-audio")
    await eventually(bot_sees_alice(["video"]), timeout=10)
    await page.click("#call-audio")
    await eventually(bot_sees_alice(["audio", "video"]), timeout=10)
    freq = await beep_frequency(await sink_of(bot.call, "alice", "audio"))
    assert abs(freq - BEEP_HZ) < BEEP_TOLERANCE_HZ, freq

    # the bot mutes its camera: the page shows it and stops presenting frames
    await bot.call.camera.disable()
    await page.until(lambda s: remote(s, "bot1")["published_tracks"] == ["audio"], 10, "bot1's camera mute")
    assert await page.dom_tracks("bot1") == "audio"
    assert "video-muted" in await page.p.get_attribute('#grid .tile[data-user-id="bot1"]', "class")
    await asyncio.sleep(0.7)
    frames = remote(await page.stats(), "bot1")["video"]["frames"]
    await asyncio.sleep(1.0)
    assert remote(await page.stats(), "bot1")["video"]["frames"] - frames <= 1
    # ... and unmutes it: the source restarts at index 0, the page reads new frames in order
    await bot.call.camera.enable()
    stats = await page.until(lambda s: remote(s, "bot1")["video"]["frames"] > frames + 10
                             and remote(s, "bot1")["published_tracks"] == ["audio", "video"], 15,
                             "bot1's video after unmute")
    fresh = [i for i in decoded(stats, "bot1") if i < 200][-8:]
    assert len(fresh) >= 5
    assert_increasing(fresh, "bot1's indices after unmute")
    assert await page.dom_tracks("bot1") == "audio video"

    # the bot mutes and unmutes its microphone: the page shows it and hears the tone again
    await bot.call.microphone.disable()
    await page.until(lambda s: remote(s, "bot1")["published_tracks"] == ["video"], 10, "bot1's microphone mute")
    await bot.call.microphone.enable()
    await page.until(lambda s: remote(s, "bot1")["published_tracks"] == ["audio", "video"]
                     and tone_seen(s, "bot1", 440), 10, "bot1's tone after unmute")
    assert link_to(await page.stats(), bot.call.session_id)["negotiations"] == page_negotiations
    assert (await page.stats())["media"]["errors"] == []
    # many participant timeouts later, the page's heartbeats kept its session alive
    assert alice_sid in [p.session_id for p in bot.call.state.participants]


async def test_leave_rejoin_late_joiner_and_end(coord, call_page, bots):
    page = await call_page("default", "bye", "alice")
    await page.join()  # alice creates the call: she holds end-call
    assert await page.p.is_visible("#end")
    bot1 = await bots("bot1", "bye", 440)
    await bot1.call.join()
    await page.until(pattern_flowing("bot1", 5), 25, "bot1's pattern")

    await bot1.call.leave()  # a bot leaves: the page's list and grid follow
    await page.until(lambda s: remote(s, "bot1") is None and [p["user_id"] for p in s["participants"]] == ["alice"],
                     10, "bot1 gone")
    assert await page.listed_users() == ["alice"] and await page.dom_tracks("bot1") is None

    bot2 = await bots("bot2", "bye", 660)
    await bot2.call.join()  # a late joiner
    await page.until(pattern_flowing("bot2", 5), 25, "bot2's pattern")
    alice_sid = (await page.stats())["session_id"]
    left = []
    bot2.call.on("participant.left", left.append)

    await page.click("#leave")  # the page leaves: the bot sees it go and closes its connection
    await page.until(lambda s: s["calling_state"] == "left", 10, "the page left")
    await eventually(lambda: left and left[0].user_id == "alice", timeout=10)
    await eventually(lambda: not bot2.call.media.links, timeout=10)
    await eventually(lambda: [p.user_id for p in bot2.call.state.participants] == ["bot2"], timeout=10)

    await page.click("#lobby-video")  # a choice before joining: camera off
    assert await page.p.get_attribute("#lobby-video", "aria-pressed") == "false"
    stats = await page.join()  # rejoin from the same page: a new session
    assert stats["session_id"] != alice_sid and stats["published"] == ["audio"]
    new_sid = stats["session_id"]
    await eventually(lambda: (p := bot2.call.state.participant(new_sid)) is not None
                     and p.published_tracks == ["audio"], timeout=10)
    await page.until(pattern_flowing("bot2", 5), 25, "bot2's pattern after rejoin")
    await page.click("#call-video")  # the camera turned on during the call
    await eventually(lambda: sorted(bot2.call.state.participant(new_sid).published_tracks) == ["audio", "video"],
                     timeout=10)
    await assert_bot_receives_browser(bot2)

    await page.click("#end")  # end for everyone: the bot is disconnected
    await eventually(lambda: bot2.call.state.calling_state is CallingState.LEFT, timeout=10)
    stats = await page.until(lambda s: s["calling_state"] == "left", 10, "the page ended the call")
    assert "ended" in stats["left_reason"]
    assert bot2.call.media is None


@pytest.mark.parametrize("page_offers", [True, False], ids=["page-offers", "page-answers"])
async def test_page_without_send_capabilities_receives_then_is_granted_them(coord, call_page, bots, session_ids,
                                                                             page_offers):
    async with ServerClient(coord.url, api_key=API_KEY, api_secret=API_SECRET) as sc:
        grants = (await sc.get_call_type("default")).grants
        await sc.create_call_type("listen-only", grants={**grants, "user": ["create-call", "read-call", "join-call"]})
    host = await bots("host", "listen", 440, call_type="listen-only")
    await host.call.join(create=True)  # the creator holds host: it sends, and may end the call
    page = await call_page("listen-only", "listen", None, token=coord.user_token("alice"))  # no dev login
    session_ids.next("0000" if page_offers else "ffff")
    joined = await page.join()
    assert joined["user_id"] == "alice"
    assert "send-video" not in joined["own_capabilities"] and "send-audio" not in joined["own_capabilities"]
    assert joined["published"] == []
    assert await page.p.is_disabled("#call-video") and await page.p.is_disabled("#call-audio")
    assert await page.p.is_hidden("#end")
    stats = await page.until(lambda s: pattern_flowing("host", 8)(s) and tone_seen(s, "host", 440), 25,
                             "the host's pattern and tone")
    assert_increasing(decoded(stats, "host"))
    link = link_to(stats, host.call.session_id)
    assert link["offerer"] is page_offers
    assert "send_video" not in link or not link["send_video"]["bytes"]
    assert stats["media"]["errors"] == []  # recvonly offers and answers pass the relay's capability check
    negotiations = link["negotiations"]

    # send-video and send-audio granted mid-call: the new directions are renegotiated (the page
    # asks the offerer, or offers itself), then the page turns its camera and microphone on
    await host.call.update_call_members(update_members=[{"user_id": "alice", "role": "admin"}])
    await page.until(lambda s: "send-video" in s["own_capabilities"], 10, "the granted capabilities")
    stats = await page.until(lambda s: link_to(s, host.call.session_id)["negotiations"] > negotiations, 10,
                             "a renegotiation")
    await page.click("#call-video")
    await page.click("#call-audio")
    await eventually(lambda: sorted(host.call.state.participant(stats["session_id"]).published_tracks)
                     == ["audio", "video"], timeout=10)
    await assert_bot_receives_browser(host)
    assert (await page.stats())["media"]["errors"] == []

    await host.call.end_call()
    stats = await page.until(lambda s: s["calling_state"] == "left", 10, "the page sees the call end")
    assert "ended" in stats["left_reason"]
    assert stats["media"] is None and stats["remotes"] == []
