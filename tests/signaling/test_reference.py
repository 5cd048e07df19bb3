"""One test per paragraph of the reference "Joining & Creating Calls", against the real coordinator."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from signaling import (
    BackstageClosed,
    CallEnded,
    CallingState,
    CallNotFound,
    CallTypeNotFound,
    DeviceStatus,
    InvalidState,
    PermissionDenied,
)
from tests.conftest import eventually


async def test_create_call(client_for):
    alice = await client_for("alice")
    call = alice.call("default", "test-call")
    first = await call.get_or_create()
    assert first.created is True
    assert call.state.created_by == "alice"
    assert call.state.settings is not None and call.state.settings.video.camera_default_on is True
    again = await alice.call("default", "test-call").get_or_create(data={"custom": {"ignored": True}})
    assert again.created is False
    assert again.call.custom == {}  # getOrCreate on an existing call does not change it


async def test_create_call_with_options(client_for):
    alice = await client_for("alice")
    call = alice.call("default", "with-options")
    await call.get_or_create(data={"custom": {"color": "blue"}, "members": [{"user_id": "bob"}]})
    assert call.state.custom == {"color": "blue"}
    assert set(call.state.members) == {"bob"}


async def test_join_existing_call(client_for):
    alice, bob = await client_for("alice"), await client_for("bob")
    await alice.call("default", "test-call").get_or_create()
    call = bob.call("default", "test-call")
    result = await call.join()
    assert call.state.calling_state is CallingState.JOINED
    assert result.participant.user_id == "bob"
    assert [p.user_id for p in call.state.participants] == ["bob"]
    assert result.credentials.url.startswith("ws://") and result.credentials.token
    assert result.credentials.ice_servers == []


async def test_join_without_create_fails_on_missing_call(client_for):
    alice = await client_for("alice")
    call = alice.call("default", "missing")
    with pytest.raises(CallNotFound) as info:
        await call.join(create=False)
    assert info.value.code == "call_not_found" and info.value.status == 404
    assert call.state.calling_state is CallingState.IDLE


async def test_create_and_join(client_for):
    alice = await client_for("alice")
    call = alice.call("default", "create-and-join")
    result = await call.join(create=True, data={"custom": {"topic": "demo"}, "members": [{"user_id": "bob"}]})
    assert result.created is True
    assert call.state.custom == {"topic": "demo"}
    assert "bob" in call.state.members
    assert call.state.calling_state is CallingState.JOINED


async def test_join_twice_is_an_invalid_state(client_for):
    alice = await client_for("alice")
    call = alice.call("default", "twice")
    await call.join(create=True)
    with pytest.raises(InvalidState):
        await call.join(create=True)
    assert len(call.state.participants) == 1


async def test_mic_and_camera_before_join(client_for):
    alice = await client_for("alice")
    # explicit choice before join wins over the call's defaults (both default on here)
    call = alice.call("default", "lobby")
    assert call.camera.status is DeviceStatus.UNSET
    await call.camera.disable()
    await call.microphone.enable()
    assert call.camera.status is DeviceStatus.DISABLED
    await call.join(create=True)
    assert call.camera.status is DeviceStatus.DISABLED
    assert call.microphone.status is DeviceStatus.ENABLED
    # no explicit choice: the call's defaults apply
    other = alice.call("default", "lobby-defaults")
    await other.join(create=True, data={"settings_override": {"audio": {"mic_default_on": False}}})
    assert other.microphone.status is DeviceStatus.DISABLED
    assert other.camera.status is DeviceStatus.ENABLED


async def test_camera_stays_off_without_send_video(client_for, server_client):
    await server_client.create_call_type("no-video", grants={
        "user": ["create-call", "read-call", "join-call", "send-audio"]})
    alice = await client_for("alice")
    call = alice.call("no-video", "c1")
    await call.camera.enable()  # an explicit wish cannot exceed the grants
    await call.join(create=True)
    assert "send-video" not in call.state.own_capabilities
    assert call.camera.status is DeviceStatus.DISABLED
    assert call.microphone.status is DeviceStatus.ENABLED


async def test_leave_call(client_for):
    alice, bob = await client_for("alice"), await client_for("bob")
    a = alice.call("default", "leave-me")
    await a.join(create=True)
    b = bob.call("default", "leave-me")
    await b.join()
    await eventually(lambda: len(a.state.participants) == 2)
    left = asyncio.get_running_loop().create_future()
    a.on("call.session_participant_left", lambda e: left.done() or left.set_result(e))
    await b.leave()
    assert b.state.calling_state is CallingState.LEFT
    event = await asyncio.wait_for(left, 5)
    assert event.participant.user_id == "bob"
    assert [p.user_id for p in a.state.participants] == ["alice"]
    with pytest.raises(InvalidState):
        await b.leave()


async def test_end_call_for_everyone_and_join_ended_call(client_for, server_client):
    alice, bob, carol = await client_for("alice"), await client_for("bob"), await client_for("carol")
    a = alice.call("default", "to-end")
    await a.join(create=True)
    b = bob.call("default", "to-end")
    await b.join()
    # bob is a plain user: no end-call
    with pytest.raises(PermissionDenied):
        await b.end_call()
    await a.end_call()  # alice created it: host holds end-call
    assert a.state.ended_at is not None
    await eventually(lambda: b.state.calling_state is CallingState.LEFT)
    assert b.state.ended_at is not None and b.state.participants == []
    with pytest.raises(CallEnded) as info:
        await carol.call("default", "to-end").join()
    assert info.value.code == "call_ended"
    # join-ended-call lets a holder in (admins hold it)
    await server_client.upsert_users([{"id": "dana", "role": "admin"}])
    dana = await client_for("dana")
    d = dana.call("default", "to-end")
    await d.join()
    assert d.state.calling_state is CallingState.JOINED


async def test_load_call_and_receive_live_updates(client_for):
    alice, bob = await client_for("alice"), await client_for("bob")
    await alice.call("default", "load-me").get_or_create(data={"custom": {"color": "blue"}})
    with pytest.raises(CallNotFound):
        await bob.call("default", "no-such-call").get()
    watched = bob.call("default", "load-me")
    await watched.get()  # just load; also subscribes to updates
    assert watched.state.custom == {"color": "blue"}
    updated = asyncio.get_running_loop().create_future()
    watched.on("call.updated", lambda e: updated.done() or updated.set_result(e))
    await alice.call("default", "load-me").update(custom={"color": "green"})
    event = await asyncio.wait_for(updated, 5)
    assert event.call.custom == {"color": "green"}
    assert watched.state.custom == {"color": "green"}


async def test_update_call(client_for):
    alice = await client_for("alice")
    call = alice.call("default", "update-me")
    await call.get_or_create(data={"custom": {"color": "blue"}})
    await call.update(custom={"color": "green"}, settings_override={"recording": {"mode": "disabled"}})
    assert call.state.custom == {"color": "green"}
    assert call.state.settings.recording.mode == "disabled"
    assert call.state.settings_override == {"recording": {"mode": "disabled"}}


async def test_creation_option_members(client_for):
    alice = await client_for("alice")
    call = alice.call("default", "members")
    await call.get_or_create(data={"members": [{"user_id": "alice", "role": "admin"}, {"user_id": "bob"}]})
    assert call.state.members["alice"].role == "admin"
    assert call.state.members["bob"].role is None  # call_member by default


async def test_creation_option_custom(client_for):
    alice = await client_for("alice")
    call = alice.call("default", "custom")
    await call.get_or_create(data={"custom": {"color": "blue", "nested": {"n": 1}}})
    reloaded = (await client_for("bob")).call("default", "custom")
    await reloaded.get()
    assert reloaded.state.custom == {"color": "blue", "nested": {"n": 1}}


async def test_creation_option_settings(client_for):
    alice = await client_for("alice")
    call = alice.call("default", "settings")
    await call.get_or_create(data={"settings_override": {"video": {"target_resolution": {"width": 1280,
                                                                                           "height": 720}}}})
    res = call.state.settings.video.target_resolution
    assert (res.width, res.height, res.bitrate) == (1280, 720, 800_000)  # deep merge keeps the bitrate


async def test_creation_option_starts_at(client_for):
    alice = await client_for("alice")
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    call = alice.call("default", "scheduled")
    await call.get_or_create(data={"starts_at": when})
    assert call.state.starts_at == when


async def test_creation_option_team(client_for, server_client):
    await server_client.upsert_users([{"id": "red1", "teams": ["red"]}, {"id": "blue1", "teams": ["blue"]}])
    red1, blue1 = await client_for("red1"), await client_for("blue1")
    call = red1.call("default", "red-only")
    await call.get_or_create(data={"team": "red"})
    assert call.state.team == "red"
    with pytest.raises(PermissionDenied):
        await blue1.call("default", "red-only").get()
    with pytest.raises(PermissionDenied):
        await blue1.call("default", "red-only").join()
    with pytest.raises(PermissionDenied):  # cannot create a call for a team you are not in
        await blue1.call("default", "red-too").get_or_create(data={"team": "red"})


async def test_creation_option_ring(client_for):
    alice, bob, carol = await client_for("alice"), await client_for("bob"), await client_for("carol")
    rings: list = []
    alice_rings: list = []
    bob.on("call.ring", rings.append)
    alice.on("call.ring", alice_rings.append)
    carol_got = []
    carol.on("call.ring", carol_got.append)
    await alice.call("default", "ring-me").get_or_create(
        data={"members": [{"user_id": "alice"}, {"user_id": "bob"}], "ring": True})
    await eventually(lambda: len(rings) == 1)
    assert rings[0].call_cid == "default:ring-me" and rings[0].user.id == "alice"
    await asyncio.sleep(0.2)
    assert alice_rings == [] and carol_got == []  # the caller and non-members are not rung


async def test_creation_option_notify(client_for):
    alice, bob = await client_for("alice"), await client_for("bob")
    notes: list = []
    rings: list = []
    bob.on("call.notification", notes.append)
    bob.on("call.ring", rings.append)
    await alice.call("default", "notify-me").get_or_create(data={"members": [{"user_id": "bob"}]}, notify=True)
    await eventually(lambda: len(notes) == 1)
    assert notes[0].call_cid == "default:notify-me" and rings == []


async def test_set_and_update_call_members(client_for):
    alice, charlie = await client_for("alice"), await client_for("charlie")
    call = alice.call("default", "members-update")
    await call.get_or_create(data={"members": [{"user_id": "alice", "role": "admin"}, {"user_id": "bob"}]})
    watcher = charlie.call("default", "members-update")
    await watcher.get()
    await call.update_call_members(update_members=[{"user_id": "charlie", "role": "admin"}],
                                   remove_members=["alice"])
    assert set(call.state.members) == {"bob", "charlie"}
    assert call.state.members["charlie"].role == "admin"
    await eventually(lambda: set(watcher.state.members) == {"bob", "charlie"})


async def test_member_update_takes_effect_on_next_check(client_for, server_client):
    await server_client.create_call_type("members-only", grants={
        "user": ["create-call", "read-call"], "call_member": ["read-call", "join-call"], "host": ["update-call-member",
                                                                                              "read-call"]})
    alice, bob = await client_for("alice"), await client_for("bob")
    call = alice.call("members-only", "c")
    await call.get_or_create()
    b = bob.call("members-only", "c")
    with pytest.raises(PermissionDenied):
        await b.join()
    await call.update_call_members(update_members=[{"user_id": "bob"}])
    await b.join()  # now a call_member: allowed without any reconnect
    assert "join-call" in b.state.own_capabilities


async def test_custom_call_data(client_for):
    alice = await client_for("alice")
    call = alice.call("default", "custom-data")
    await call.get_or_create(data={"custom": {"color": "blue"}})
    assert call.state.custom == {"color": "blue"}


async def test_settings_override_at_creation_and_later(client_for):
    alice = await client_for("alice")
    call = alice.call("default", "override")
    await call.get_or_create(data={"settings_override": {"audio": {"mic_default_on": False},
                                                         "video": {"camera_default_on": False}}})
    assert call.state.settings.audio.mic_default_on is False
    assert call.state.settings.video.camera_default_on is False
    await call.update(settings_override={"video": {"camera_default_on": True}})
    assert call.state.settings.video.camera_default_on is True
    assert call.state.settings.audio.mic_default_on is False  # earlier override kept (deep merge)
    # and a later join honours the new default
    bob = await client_for("bob")
    b = bob.call("default", "override")
    await b.join()
    assert b.camera.status is DeviceStatus.ENABLED and b.microphone.status is DeviceStatus.DISABLED


async def test_call_type_settings_are_inherited(client_for, server_client):
    await server_client.create_call_type("quiet", settings={"audio": {"mic_default_on": False}},
                                         grants={"user": ["create-call", "read-call", "join-call", "send-audio"]})
    alice = await client_for("alice")
    call = alice.call("quiet", "c")
    await call.get_or_create()
    assert call.state.settings.audio.mic_default_on is False
    await server_client.update_call_type("quiet", settings={"audio": {"mic_default_on": True}})
    await call.get()
    assert call.state.settings.audio.mic_default_on is True  # inherited, not copied at creation


async def test_backstage_with_join_ahead_time(client_for, server_client):
    alice, bob = await client_for("alice"), await client_for("bob")
    host = alice.call("livestream", "show")
    await host.get_or_create(data={
        "starts_at": datetime.now(UTC) + timedelta(seconds=500),
        "settings_override": {"backstage": {"enabled": True, "join_ahead_time_seconds": 300}},
    })
    assert host.state.backstage is True
    viewer = bob.call("livestream", "show")
    with pytest.raises(BackstageClosed) as info:
        await viewer.join()  # opens 200 s from now
    assert info.value.code == "backstage_closed"
    await host.join()  # the creator holds host, which has join-backstage
    # move the start so that we are inside the join-ahead window: regular users may join now
    await host.update(starts_at=datetime.now(UTC) + timedelta(seconds=200))
    await viewer.join()
    assert viewer.state.calling_state is CallingState.JOINED


async def test_a_join_refused_by_the_backstage_still_hears_the_call_go_live(client_for):
    alice, bob = await client_for("alice"), await client_for("bob")
    host = alice.call("livestream", "refused-then-live")
    await host.get_or_create()
    viewer = bob.call("livestream", "refused-then-live")
    live_events: list = []
    viewer.on("call.live_started", live_events.append)
    with pytest.raises(BackstageClosed):
        await viewer.join()
    assert viewer.state.calling_state is CallingState.IDLE and viewer.state.live is False
    await host.go_live()  # the refused instance learns it without a get() of its own ...
    await eventually(lambda: live_events and viewer.state.live)
    await viewer.join()  # ... and joins on the event, as a waiting viewer would
    assert viewer.state.calling_state is CallingState.JOINED


async def test_backstage_go_live_and_stop_live(client_for):
    alice, bob, carol = await client_for("alice"), await client_for("bob"), await client_for("carol")
    host = alice.call("livestream", "live")
    await host.get_or_create()
    await host.join()
    with pytest.raises(BackstageClosed):
        await bob.call("livestream", "live").join()
    watcher = bob.call("livestream", "live")
    await watcher.get()
    live_events: list = []
    watcher.on("call.live_started", live_events.append)
    await host.go_live()
    assert host.state.backstage is False and host.state.live is True
    await eventually(lambda: live_events and watcher.state.backstage is False)
    await watcher.join()
    await host.stop_live()
    assert host.state.backstage is True
    with pytest.raises(BackstageClosed):
        await carol.call("livestream", "live").join()


async def test_a_new_call_type_holds_only_the_grants_it_was_given(server_client):
    bare = await server_client.create_call_type("bare")
    assert bare.grants == {}
    default = (await server_client.get_call_type("default")).grants
    mixed = await server_client.create_call_type("mixed", copy_from="default", grants={"user": ["read-call"]})
    assert mixed.grants["user"] == ["read-call"]
    assert {r: g for r, g in mixed.grants.items() if r != "user"} == {r: g for r, g in default.items() if r != "user"}
    with pytest.raises(CallTypeNotFound):
        await server_client.create_call_type("orphan", copy_from="no-such-type")


async def test_restricted_access_in_two_steps(client_for, server_client):
    # Step 1: roles and permissions of my-call-type (the dashboard steps, here API calls)
    created = await server_client.create_call_type("my-call-type", copy_from="default")
    assert created.grants == (await server_client.get_call_type("default")).grants
    await server_client.revoke("my-call-type", "user", ["join-call"])
    await server_client.grant("my-call-type", "call_member", ["join-call"])
    ct = await server_client.get_call_type("my-call-type")
    assert "join-call" not in ct.grants["user"] and "join-call" in ct.grants["call_member"]
    # Step 2: the call with its members
    owner = await client_for("owner")
    call = owner.call("my-call-type", "my-call-id")
    await call.get_or_create(data={"members": [{"user_id": "alice", "role": "call_member"},
                                               {"user_id": "bob", "role": "call_member"}]})
    alice, charlie = await client_for("alice"), await client_for("charlie")
    await alice.call("my-call-type", "my-call-id").join()
    with pytest.raises(PermissionDenied):
        await charlie.call("my-call-type", "my-call-id").join()
    await call.update_call_members(update_members=[{"user_id": "charlie", "role": "call_member"}])
    c = charlie.call("my-call-type", "my-call-id")
    await c.join()
    await c.leave()
    await call.update_call_members(remove_members=["charlie"])
    with pytest.raises(PermissionDenied):
        await charlie.call("my-call-type", "my-call-id").join()
