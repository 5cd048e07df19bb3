"""Real WebRTC calls over loopback through the coordinator: content verified on receipt."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from media.inline_decode import _InlineDecoder
from signaling import CallingState, DeviceStatus, InvalidRequest, InvalidState
from signaling.server import EmbeddedCoordinator
from tests.conftest import API_KEY, eventually, make_config
from tests.signaling.media_helpers import assert_in_order, frame_indices, make_bot, remote_of, tone_frequency

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def coord():
    async with EmbeddedCoordinator(make_config(participant_timeout_s=2.0, reap_interval_s=0.25)) as c:
        yield c


@pytest.fixture
async def bots(coord):
    made = []

    async def make(user, call_id, freq, **kw):
        bot = await make_bot(coord, user, call_id, freq, **kw)
        made.append(bot)
        return bot

    yield make
    for bot in made:
        await bot.client.aclose()


async def test_two_participants_exchange_verified_video_and_audio(bots):
    alice, bob = await bots("alice", "two", 440), await bots("bob", "two", 660)
    await alice.call.join(create=True)
    await bob.call.join()
    for me, other, freq in ((alice, bob, 660), (bob, alice, 440)):
        remote = await remote_of(me.call, other.client.user_id, "video")
        assert_in_order(await frame_indices(remote.video))
        remote = await remote_of(me.call, other.client.user_id, "audio")
        assert abs(await tone_frequency(remote.audio) - freq) < 5
    assert len(alice.call.media.links) == 1 and len(bob.call.media.links) == 1


async def test_three_participants_each_receive_both_others(bots):
    trio = [await bots(u, "three", f) for u, f in (("a", 400), ("b", 600), ("c", 800))]
    await trio[0].call.join(create=True)
    for bot in trio[1:]:
        await bot.call.join()
    for me in trio:
        for other in trio:
            if other is me:
                continue
            remote = await remote_of(me.call, other.client.user_id, "audio")
            assert abs(await tone_frequency(remote.audio, blocks=15) - other.tone.frequency) < 5
            remote = await remote_of(me.call, other.client.user_id, "video")
            assert_in_order(await frame_indices(remote.video, n=8))
    # the camera and the microphone are each encoded once for both peers ...
    for kind in ("video", "audio"):
        assert len(trio[0].call.media.publishers[kind].fanout.tracks) == 2
    # ... and every received audio stream is decoded on the loop, by offerers and answerers alike
    for me in trio:
        for link in me.call.media.links.values():
            receivers = [t.receiver for t in link.pc.getTransceivers() if t.kind == "audio"]
            assert receivers and all(isinstance(r._RTCRtpReceiver__decoder_queue, _InlineDecoder) for r in receivers)


async def test_wait_for_track_returns_a_track_that_arrives_later_or_is_already_there(bots):
    alice, bob = await bots("alice", "waitfor", 440), await bots("bob", "waitfor", 660)
    await alice.call.join(create=True)
    # asked before bob is in the call: resolved when his track arrives
    waiting = asyncio.ensure_future(alice.call.wait_for_track("video", user_id="bob", timeout=20))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await bob.call.join()
    track = await waiting
    assert (track.kind, track.participant.user_id) == ("video", "bob")
    assert_in_order(await frame_indices(track.sink))
    # asked again: the same sink, at once
    again = await alice.call.wait_for_track("video", timeout=0.01)
    assert again.sink is track.sink
    audio = await bob.call.wait_for_track("audio", user_id="alice", timeout=20)
    assert abs(await tone_frequency(audio.sink) - 440) < 5


async def test_wait_for_track_errors(bots):
    alice = await bots("alice", "waitfor-errors", 440)
    with pytest.raises(InvalidState):  # not joined
        await alice.call.wait_for_track("video")
    await alice.call.join(create=True)
    with pytest.raises(InvalidRequest):
        await alice.call.wait_for_track("screen")  # type: ignore[arg-type]
    with pytest.raises(TimeoutError, match="no video track from nobody"):
        await alice.call.wait_for_track("video", user_id="nobody", timeout=0.3)
    waiting = asyncio.ensure_future(alice.call.wait_for_track("audio"))
    await asyncio.sleep(0.1)
    await alice.call.leave()
    with pytest.raises(InvalidState, match="was left"):
        await waiting


@pytest.mark.parametrize("attempt", range(3))
async def test_leaving_right_after_a_peer_left_still_closes_its_sinks(bots, attempt):
    """The peer's removal (closing its connection, then its sinks) is under way when we leave:
    leave() cancels the task doing it, and the sinks it had taken out must still be closed."""
    alice, bob = await bots("alice", f"left-first-{attempt}", 440), await bots("bob", f"left-first-{attempt}", 660)
    await alice.call.join(create=True)
    await bob.call.camera.disable()
    await bob.call.microphone.disable()
    await bob.call.join()
    video = await bob.call.wait_for_track("video", user_id="alice", timeout=20)
    audio = await bob.call.wait_for_track("audio", user_id="alice", timeout=20)
    await alice.call.leave()
    await eventually(lambda: not bob.call.remote_participants, timeout=10, interval=0)  # removal started
    await bob.call.leave()
    assert video.sink.ended and audio.sink.ended
    left = [t for t in asyncio.all_tasks() if t.get_name() == "callrt-sink" and not t.done()]
    assert not left, left


async def test_mute_and_unmute_mid_call_on_the_same_connection(bots):
    alice, bob = await bots("alice", "mute", 440), await bots("bob", "mute", 660)
    await alice.call.join(create=True)
    await bob.call.join()
    remote = await remote_of(bob.call, "alice", "video")
    await frame_indices(remote.video, n=3)
    link = alice.call.media.links[bob.call.session_id]
    pc, negotiations = link.pc, link.negotiations
    changes = []
    bob.call.on("call.session_participant_updated", changes.append)

    await alice.call.camera.disable()
    assert alice.call.camera.status is DeviceStatus.DISABLED
    assert not alice.pattern.running  # the source (device) is released
    await eventually(lambda: bob.call.state.participant(alice.call.session_id).published_tracks == ["audio"])
    assert changes and changes[-1].participant.published_tracks == ["audio"]
    assert remote.video_muted
    received = remote.video.stats().received
    await asyncio.sleep(0.7)
    await asyncio.sleep(0)  # frames in flight have landed; nothing new is sent while muted
    settled = remote.video.stats().received
    await asyncio.sleep(0.7)
    assert remote.video.stats().received - settled <= 1, (received, settled)

    while remote.video.stats().queued:  # drop what arrived before the mute
        await remote.video.recv()
    await alice.call.camera.enable()
    assert alice.pattern.running
    await eventually(lambda: sorted(bob.call.state.participant(alice.call.session_id).published_tracks)
                     == ["audio", "video"])
    # aiortc's jitter buffer releases the last pre-mute frame only when the next one arrives: skip it
    assert_in_order((await frame_indices(remote.video, n=6))[1:])
    assert link.pc is pc and link.negotiations == negotiations  # same transceiver, no renegotiation
    assert alice.call.media.links[bob.call.session_id] is link

    await alice.call.microphone.disable()
    assert not alice.tone.running
    await eventually(lambda: bob.call.state.participant(alice.call.session_id).published_tracks == ["video"])
    await alice.call.microphone.enable()
    remote_audio = await remote_of(bob.call, "alice", "audio")
    assert abs(await tone_frequency(remote_audio.audio, blocks=15) - 440) < 5


async def test_late_joiner_receives_published_tracks(bots):
    alice, bob = await bots("alice", "late", 440), await bots("bob", "late", 660)
    await alice.call.join(create=True)
    await bob.call.join()
    await remote_of(bob.call, "alice")
    carol = await bots("carol", "late", 880)
    await carol.call.join()
    for user, freq in (("alice", 440), ("bob", 660)):
        remote = await remote_of(carol.call, user, "video")
        assert_in_order(await frame_indices(remote.video, n=5))
        remote = await remote_of(carol.call, user, "audio")
        assert abs(await tone_frequency(remote.audio, blocks=15) - freq) < 5


async def test_leave_closes_connections_and_releases_sources(bots):
    alice, bob = await bots("alice", "bye", 440), await bots("bob", "bye", 660)
    await alice.call.join(create=True)
    await bob.call.join()
    await remote_of(alice.call, "bob")
    link = alice.call.media.links[bob.call.session_id]
    bob_link = bob.call.media.links[alice.call.session_id]
    left = []
    alice.call.on("participant.left", left.append)
    await bob.call.leave()
    assert bob.call.media is None and bob_link.pc.connectionState == "closed"
    assert not bob.pattern.running and not bob.tone.running
    await eventually(lambda: left and left[0].user_id == "bob")
    assert link.pc.connectionState == "closed" and not alice.call.media.links
    await eventually(lambda: [p.user_id for p in alice.call.state.participants] == ["alice"])


async def test_end_call_disconnects_everyone(bots):
    alice, bob = await bots("alice", "end", 440), await bots("bob", "end", 660)
    await alice.call.join(create=True)
    await bob.call.join()
    await remote_of(bob.call, "alice")
    bob_link = bob.call.media.links[alice.call.session_id]
    await alice.call.end_call()
    assert alice.call.state.calling_state is CallingState.LEFT
    await eventually(lambda: bob.call.state.calling_state is CallingState.LEFT)
    assert bob.call.media is None and bob_link.pc.connectionState == "closed"
    assert not bob.pattern.running


async def test_killed_participant_is_seen_leaving(bots):
    alice, bob = await bots("alice", "killed", 440), await bots("bob", "killed", 660)
    await alice.call.join(create=True)
    await bob.call.join()
    await remote_of(alice.call, "bob")
    # bob's process dies: its sockets close without a leave, its peer connection goes silent
    await bob.client.event_socket.aclose()
    await bob.call.media._ws.close()
    for task in list(bob.call.media._tasks):
        task.cancel()
    await eventually(lambda: not alice.call.media.links, timeout=5)  # media socket gone: link closed at once
    await eventually(lambda: [p.user_id for p in alice.call.state.participants] == ["alice"], timeout=8)


async def test_signaling_only_participant_costs_no_peer_connection(bots, coord):
    from signaling import Client

    alice = await bots("alice", "observed", 440)
    await alice.call.join(create=True)
    observer = Client(coord.url, api_key=API_KEY, token=coord.user_token("observer"))
    try:
        call = observer.call("default", "observed")
        await call.camera.disable()
        await call.microphone.disable()
        await call.join(auto_subscribe=False)
        await eventually(lambda: len(alice.call.state.participants) == 2)
        await asyncio.sleep(1.0)
        assert call.media.links == {} and alice.call.media.links == {}
        bob = await bots("bob", "observed", 660)
        await bob.call.join()
        await remote_of(bob.call, "alice")
        assert call.media.links == {} and list(alice.call.media.links) == [bob.call.session_id]
    finally:
        await observer.aclose()


async def test_participant_without_send_video_cannot_publish_video(coord, bots):
    from signaling import ServerClient
    from tests.conftest import API_SECRET

    async with ServerClient(coord.url, api_key=API_KEY, api_secret=API_SECRET) as sc:
        grants = (await sc.get_call_type("default")).grants
        await sc.create_call_type("audio-only", grants={**grants, "user": ["create-call", "read-call",
                                                                           "join-call", "send-audio"]})
    host = await bots("host", "ao", 330, call_type="audio-only")  # the creator holds host: it may send video
    await host.call.join(create=True)
    bob = await bots("bob", "ao", 660, call_type="audio-only")
    await bob.call.camera.enable()  # an explicit wish cannot exceed the grants
    await bob.call.join()
    assert bob.call.camera.status is DeviceStatus.DISABLED
    assert "video" not in bob.call.media.publishers and not bob.pattern.running
    remote = await remote_of(host.call, "bob", "audio")
    assert abs(await tone_frequency(remote.audio, blocks=10) - 660) < 5
    # a hand-written client trying anyway is refused by the coordinator
    join = await bob.client._request("POST", "/video/call/audio-only/ao/join", json={})
    async with websockets.connect(join["credentials"]["url"]) as ws:
        await ws.send(json.dumps({"type": "join", "token": join["credentials"]["token"], "tracks": ["video"]}))
        reply = json.loads(await ws.recv())
        assert reply["type"] == "error" and reply["error"]["code"] == "permission_denied"
    join = await bob.client._request("POST", "/video/call/audio-only/ao/join", json={})
    async with websockets.connect(join["credentials"]["url"]) as ws:
        await ws.send(json.dumps({"type": "join", "token": join["credentials"]["token"]}))
        assert json.loads(await ws.recv())["type"] == "joined"

        async def refusal() -> dict:
            reply = json.loads(await ws.recv())
            while reply["type"] != "error":
                reply = json.loads(await ws.recv())
            return reply

        await ws.send(json.dumps({"type": "publish", "tracks": ["audio", "video"]}))
        assert (await refusal())["error"]["code"] == "permission_denied"
        video_offer = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
                       "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendrecv\r\n")
        await ws.send(json.dumps({"type": "signal", "to": host.call.session_id,
                                  "description": {"type": "offer", "sdp": video_offer}}))
        assert (await refusal())["error"]["code"] == "permission_denied"
    assert host.call.state.participant(bob.call.session_id).published_tracks == ["audio"]


async def test_garbage_and_foreign_signaling_refused_and_the_call_goes_on(bots, coord):
    alice, bob = await bots("alice", "garbage", 440), await bots("bob", "garbage", 660)
    await alice.call.join(create=True)
    await bob.call.join()
    eve = await bots("eve", "other-call", 880)
    await eve.call.join(create=True)
    remote = await remote_of(bob.call, "alice", "video")
    relay = coord  # noqa: F841 (the coordinator keeps serving everyone below)
    join = await eve.client._request("POST", "/video/call/default/other-call/join", json={})
    async with websockets.connect(join["credentials"]["url"]) as ws:
        await ws.send(json.dumps({"type": "join", "token": join["credentials"]["token"]}))
        assert json.loads(await ws.recv())["type"] == "joined"
        cases = [
            ("not json at all", "invalid_request"),
            (json.dumps({"type": "signal", "to": bob.call.session_id,  # a session of another call
                         "description": {"type": "offer", "sdp": "v=0\r\n"}}), "not_found"),
            (json.dumps({"type": "signal", "to": eve.call.session_id,
                         "description": {"type": "offer", "sdp": "hello"}}), "invalid_request"),
            (json.dumps({"type": "signal", "to": eve.call.session_id,
                         "description": {"type": "offer", "sdp": "v=0\r\nm=bogus\r\n"}}), "invalid_request"),
            (json.dumps({"type": "teleport"}), "invalid_request"),
            (json.dumps({"type": "signal", "to": eve.call.session_id}), "invalid_request"),
        ]
        for raw, code in cases:
            await ws.send(raw)
            reply = json.loads(await ws.recv())
            while reply["type"] != "error":
                reply = json.loads(await ws.recv())
            assert reply["error"]["code"] == code, (raw, reply)
    assert not any(e for e in bob.call.media.errors)
    assert_in_order(await frame_indices(remote.video, n=5))  # the call went on


async def test_no_consumer_keeps_memory_bounded(bots):
    import psutil

    alice, bob = await bots("alice", "bounded", 440, size=(640, 480)), await bots("bob", "bounded", 660,
                                                                                    size=(640, 480))
    await alice.call.join(create=True)
    await bob.call.join()
    remote = await remote_of(bob.call, "alice", "video")
    await remote_of(bob.call, "alice", "audio")
    proc = psutil.Process()
    await asyncio.sleep(2.0)
    rss_before = proc.memory_info().rss
    await asyncio.sleep(6.0)  # nobody reads any sink for 6 s: 180 video frames, 300 audio frames arrive
    rss_after = proc.memory_info().rss
    for participant in list(bob.call.remote_participants.values()) + list(alice.call.remote_participants.values()):
        for sink in (participant.video, participant.audio):
            stats = sink.stats()
            assert stats.queued <= sink._queue.maxsize
            assert stats.received > 30 and stats.dropped > 0
    assert remote.video.stats().received > 100
    growth_mb = (rss_after - rss_before) / 2**20
    assert growth_mb < 40, f"RSS grew {growth_mb:.1f} MiB with no consumer"


async def test_ice_servers_and_codec_come_from_the_coordinator_and_settings(bots):
    from signaling.models import ICEServer

    alice, bob = await bots("alice", "h264", 440), await bots("bob", "h264", 660)
    await alice.call.join(create=True, data={"settings_override": {"video": {"codec": "h264"}}})
    await bob.call.join()
    remote = await remote_of(bob.call, "alice", "video")
    assert_in_order(await frame_indices(remote.video, n=5))
    link = alice.call.media.links[bob.call.session_id]
    video = next(t for t in link.pc.getTransceivers() if t.kind == "video")
    assert video._codecs[0].mimeType.lower() == "video/h264"  # negotiated, not only preferred
    assert alice.call.media.publishers["video"].fanout.codec == "h264"
    assert alice.call.credentials.ice_servers == [] and isinstance(alice.call.media.ice_servers, list)
    assert all(isinstance(s, ICEServer) for s in alice.call.media.ice_servers)


async def test_ice_servers_configured_on_the_coordinator_reach_participants():
    from signaling import Client
    from signaling.models import ICEServer

    config = make_config(ice_servers=[ICEServer(urls=["turn:127.0.0.1:3478"], username="u", credential="p")])
    async with EmbeddedCoordinator(config) as coord, \
            Client(coord.url, api_key=API_KEY, token=coord.user_token("alice")) as client:
        client.media_factory = None
        call = client.call("default", "ice")
        result = await call.join(create=True)
        assert result.credentials.ice_servers == config.ice_servers
