"""Rate limits, token expiry on the event socket, and a coordinator restart in the middle of a call."""

from __future__ import annotations

import asyncio
import socket

import pytest

from signaling import CallingState, CallNotFound, Client, RateLimited, Unauthenticated
from signaling.server import EmbeddedCoordinator
from tests.conftest import API_KEY, eventually, make_config
from tests.signaling.media_helpers import assert_in_order, frame_indices, make_bot, remote_of

pytestmark = pytest.mark.timeout(120)


async def test_per_user_rate_limit_on_creation_and_joins():
    async with EmbeddedCoordinator(make_config(rate_limit_per_s=2.0, rate_limit_burst=5)) as coord:
        async with Client(coord.url, api_key=API_KEY, token=coord.user_token("greedy")) as greedy, \
                Client(coord.url, api_key=API_KEY, token=coord.user_token("polite")) as polite:
            greedy.media_factory = polite.media_factory = None
            created = 0
            with pytest.raises(RateLimited) as info:
                for i in range(20):
                    await greedy.call("default", f"c{i}").get_or_create()
                    created += 1
            assert created == 5 and info.value.code == "rate_limited" and info.value.status == 429
            with pytest.raises(CallNotFound):  # the refused call was not created
                await polite.call("default", f"c{created}").get()
            await polite.call("default", "mine").join(create=True)  # another user is not affected
            await asyncio.sleep(0.6)  # the bucket refills at 2/s
            await greedy.call("default", "later").get_or_create()


async def test_expired_token_closes_the_event_socket(coordinator):
    client = Client(coordinator.url, api_key=API_KEY, token=coordinator.user_token("shortlived", expires_in=2))
    client.media_factory = None
    try:
        call = client.call("default", "expiring")
        await call.get_or_create()
        assert client.event_socket.connected.is_set()
        await eventually(lambda: not client.event_socket.connected.is_set(), timeout=10)
        await asyncio.sleep(0.5)
        assert not client.event_socket.connected.is_set()  # the reconnect is refused too
        with pytest.raises(Unauthenticated):
            await call.get()
    finally:
        await client.aclose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_coordinator_restart_mid_call_keeps_media_and_state(tmp_path):
    db, port = str(tmp_path / "restart.db"), _free_port()
    coord = EmbeddedCoordinator(make_config(db), port=port)
    await asyncio.to_thread(coord.start)
    alice = await make_bot(coord, "alice", "survivor", 440)
    bob = await make_bot(coord, "bob", "survivor", 660)
    try:
        await alice.call.join(create=True, data={"custom": {"keep": "me"}, "members": [{"user_id": "bob"}]})
        await bob.call.join()
        for bot in (alice, bob):
            bot.client.event_socket.max_backoff = 0.5
        remote = await remote_of(bob.call, "alice", "video")
        await frame_indices(remote.video, n=3)
        link = bob.call.media.links[alice.call.session_id]
        before = remote.video.stats().received

        await asyncio.to_thread(coord.stop)  # the coordinator goes away...
        await eventually(lambda: bob.call.state.calling_state is CallingState.RECONNECTING, timeout=5)
        await asyncio.sleep(1.0)
        during = remote.video.stats().received
        assert during - before > 10, "media between the peers stopped with the coordinator"

        coord = EmbeddedCoordinator(make_config(db), port=port)  # ...and comes back on the same db
        await asyncio.to_thread(coord.start)
        for bot in (alice, bob):
            await eventually(lambda b=bot: b.call.state.calling_state is CallingState.JOINED, timeout=15)
            await eventually(lambda b=bot: b.call.media.reconnects >= 1, timeout=15)
        assert bob.call.media.links[alice.call.session_id] is link  # same peer connection throughout
        assert_in_order(await frame_indices(remote.video, n=5))
        assert alice.call.state.custom == {"keep": "me"} and "bob" in alice.call.state.members
        assert sorted(p.user_id for p in alice.call.state.participants) == ["alice", "bob"]
        await alice.call.update(custom={"after": "restart"})  # the restarted coordinator serves events
        await eventually(lambda: bob.call.state.custom == {"after": "restart"})
        await bob.call.camera.disable()  # and media signaling
        await eventually(lambda: alice.call.state.participant(bob.call.session_id).published_tracks == ["audio"])
    finally:
        for bot in (alice, bob):
            await bot.client.aclose()
        await asyncio.to_thread(coord.stop)
