"""Persistence across restarts, concurrency, liveness (heartbeats) and event-socket reconnection."""

from __future__ import annotations

import asyncio

from signaling import CallingState, Client
from signaling.server import EmbeddedCoordinator
from tests.conftest import API_KEY, eventually, make_config


async def test_restart_on_same_db_keeps_calls(tmp_path):
    db = str(tmp_path / "callrt.db")
    async with EmbeddedCoordinator(make_config(db)) as coord:
        async with Client(coord.url, api_key=API_KEY, token=coord.user_token("alice")) as alice:
            alice.media_factory = None
            call = alice.call("default", "persistent")
            await call.get_or_create(data={
                "custom": {"color": "blue"}, "members": [{"user_id": "bob", "role": "admin"}],
                "settings_override": {"audio": {"mic_default_on": False}}})
            await call.update(custom={"color": "green"})
            version = call.state.version
    async with EmbeddedCoordinator(make_config(db)) as coord:
        async with Client(coord.url, api_key=API_KEY, token=coord.user_token("bob")) as bob:
            call = bob.call("default", "persistent")
            await call.get()
            assert call.state.custom == {"color": "green"}
            assert call.state.members["bob"].role == "admin"
            assert call.state.settings.audio.mic_default_on is False
            assert call.state.created_by == "alice" and call.state.version == version


async def test_fifty_clients_join_concurrently_once_each(client_for):
    owner = await client_for("owner")
    await owner.call("default", "crowd").get_or_create()
    clients = await asyncio.gather(*(client_for(f"user{i}") for i in range(50)))
    calls = [c.call("default", "crowd") for c in clients]
    await asyncio.gather(*(call.join(auto_subscribe=False) for call in calls))
    watcher = owner.call("default", "crowd")
    await watcher.get()
    users = [p.user_id for p in watcher.state.participants]
    assert sorted(users) == sorted(f"user{i}" for i in range(50))
    assert len({p.session_id for p in watcher.state.participants}) == 50


async def test_concurrent_get_or_create_creates_once(client_for):
    clients = await asyncio.gather(*(client_for(f"racer{i}") for i in range(10)))
    results = await asyncio.gather(*(c.call("default", "race").get_or_create(data={"custom": {"by": i}})
                                     for i, c in enumerate(clients)))
    assert sum(r.created for r in results) == 1
    winner = next(r for r in results if r.created)
    assert all(r.call.custom == winner.call.custom for r in results)


async def test_dead_participant_is_seen_leaving_after_heartbeat_timeout():
    config = make_config(participant_timeout_s=1.0, reap_interval_s=0.2)
    async with EmbeddedCoordinator(config) as coord:
        alice = Client(coord.url, api_key=API_KEY, token=coord.user_token("alice"))
        bob = Client(coord.url, api_key=API_KEY, token=coord.user_token("bob"))
        alice.media_factory = bob.media_factory = None
        try:
            a = alice.call("default", "heartbeat")
            await a.join(create=True)
            b = bob.call("default", "heartbeat")
            await b.join()
            await eventually(lambda: len(a.state.participants) == 2)
            await asyncio.sleep(1.5)  # heartbeats keep both alive past the timeout
            assert len(a.state.participants) == 2
            # bob's process "dies": its socket closes without a leave, and it never reconnects
            await bob.event_socket.aclose()
            await eventually(lambda: [p.user_id for p in a.state.participants] == ["alice"], timeout=5)
        finally:
            await alice.aclose()
            await bob.aclose()


async def test_event_socket_reconnects_and_resynchronises(client_for, server_client):
    alice = await client_for("alice")
    a = alice.call("default", "resync")
    await a.join(create=True)
    b = server_client.call("default", "resync")
    states: list[CallingState] = []
    a.on("calling_state.changed", states.append)
    old_connection = alice.connection_id
    alice.event_socket.max_backoff = 0.2
    await alice.event_socket.drop()
    await eventually(lambda: a.state.calling_state is CallingState.RECONNECTING, timeout=2)
    await b.update(custom={"changed": "while disconnected"})  # alice misses this event...
    await eventually(lambda: a.state.calling_state is CallingState.JOINED, timeout=5)
    assert alice.connection_id != old_connection
    assert a.state.custom == {"changed": "while disconnected"}  # ...but the resync caught it
    assert states[:2] == [CallingState.RECONNECTING, CallingState.JOINED]
    await b.update(custom={"after": "reconnect"})  # and live events flow again
    await eventually(lambda: a.state.custom == {"after": "reconnect"})


async def test_a_consent_task_started_on_a_closed_ice_connection_ends_at_once():
    """aioice's race (signaling.rtc.ice_consent): connect() starting consent checks after close()."""
    import aioice

    import signaling.rtc.peer  # noqa: F401  (the media runtime installs the guard)

    conn = aioice.Connection(ice_controlling=True)
    conn.remote_username, conn.remote_password = "remote", "remote-password"
    await conn.close()
    # unguarded, this sleeps ~5 s, then checks an empty pair list forever
    await asyncio.wait_for(conn.query_consent(), timeout=1.0)


async def test_the_consent_guard_leaves_open_connections_alone():
    import aioice

    from signaling.rtc import ice_consent

    assert ice_consent.apply() and ice_consent.apply()  # idempotent
    conn = aioice.Connection(ice_controlling=True)
    conn.remote_username, conn.remote_password = "remote", "remote-password"
    task = asyncio.ensure_future(conn.query_consent())
    await asyncio.sleep(0.3)
    assert not task.done()  # still keeping consent fresh
    task.cancel()
    await conn.close()
