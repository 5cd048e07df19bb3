"""The fan-outs' source pump awaits ``source.recv()`` directly in its own task: ``pause()`` and
``replace_source()`` interrupt that wait by cancelling the task and taking the cancellation back,
``aclose()`` still ends it, whatever the source does with the cancellation."""

from __future__ import annotations

import asyncio
from typing import Literal

import numpy as np
import pytest

from media.fanout import FrameFanout
from media.frames import VideoFrame
from media.source import SourceEnded, VideoSource
from tests.media.helpers import eventually

pytestmark = pytest.mark.timeout(30)

Behaviour = Literal["reraise", "return-frame", "end"]


class GatedSource(VideoSource):
    """A source whose ``recv()`` returns a frame each time ``release()`` is called, and meanwhile
    waits; on cancellation it re-raises, returns a frame anyway, or ends (``on_cancel``), the three
    things real sources do."""

    def __init__(self, name: str, on_cancel: Behaviour = "reraise") -> None:
        self._name = name
        self.on_cancel = on_cancel
        self.calls = 0
        self.cancelled = 0
        self._gate = asyncio.Semaphore(0)

    @property
    def name(self) -> str:
        return self._name

    @property
    def running(self) -> bool:
        return True

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self._gate.release()

    async def recv(self) -> VideoFrame:
        self.calls += 1
        try:
            await self._gate.acquire()
        except asyncio.CancelledError:
            self.cancelled += 1
            if self.on_cancel == "return-frame":
                return VideoFrame(np.zeros((24, 16), np.uint8))
            if self.on_cancel == "end":
                raise SourceEnded(self.name) from None
            raise
        return VideoFrame(np.zeros((24, 16), np.uint8))


async def _waiting_in_recv(source: GatedSource, calls: int) -> None:
    await eventually(lambda: source.calls >= calls, timeout=5)
    await asyncio.sleep(0.01)


@pytest.mark.parametrize("on_cancel", ["reraise", "return-frame"])
async def test_pause_leaves_the_wait_and_resume_pulls_again(on_cancel: Behaviour) -> None:
    source = GatedSource("cam", on_cancel)
    fanout = FrameFanout(source)
    fanout.start()
    try:
        source.release(2)
        await eventually(lambda: fanout.frames_in == 2, timeout=5)
        await _waiting_in_recv(source, 3)
        fanout.pause()
        await eventually(lambda: source.cancelled == 1, timeout=5)
        await asyncio.sleep(0.05)
        assert fanout.frames_in == 2  # a frame returned in spite of the cancellation is dropped
        assert fanout._task is not None and not fanout._task.done()
        assert fanout._task.cancelling() == 0  # the interrupt was taken back, the pump lives on
        source.release(1)
        await asyncio.sleep(0.05)
        assert fanout.frames_in == 2 and source.calls == 3  # paused: nothing pulled
        fanout.resume()
        await eventually(lambda: fanout.frames_in == 3, timeout=5)
    finally:
        await asyncio.wait_for(fanout.aclose(), 5)
    assert fanout.state == "closed"


async def test_replace_source_while_waiting_pulls_the_new_one() -> None:
    first, second = GatedSource("first"), GatedSource("second")
    fanout = FrameFanout(first)
    fanout.start()
    try:
        await _waiting_in_recv(first, 1)
        assert fanout.replace_source(second) is first
        await eventually(lambda: first.cancelled == 1 and second.calls == 1, timeout=5)
        first.release(3)  # the old source is no longer pulled
        second.release(2)
        await eventually(lambda: fanout.frames_in == 2, timeout=5)
        await asyncio.sleep(0.05)
        assert fanout.frames_in == 2 and first.calls == 1
    finally:
        await asyncio.wait_for(fanout.aclose(), 5)


@pytest.mark.parametrize("on_cancel", ["reraise", "return-frame", "end"])
async def test_aclose_ends_the_pump_whatever_recv_does(on_cancel: Behaviour) -> None:
    source = GatedSource("cam", on_cancel)
    fanout = FrameFanout(source)
    fanout.start()
    task = fanout._task
    await _waiting_in_recv(source, 1)
    await asyncio.wait_for(fanout.aclose(), 5)
    assert task is not None and task.cancelled()
    assert source.cancelled == 1


async def test_pause_then_aclose_before_the_pump_ran_again() -> None:
    # the interrupt's cancellation and aclose()'s land together: aclose() wins
    source = GatedSource("cam", "end")
    fanout = FrameFanout(source)
    fanout.start()
    task = fanout._task
    await _waiting_in_recv(source, 1)
    fanout.pause()
    await asyncio.wait_for(fanout.aclose(), 5)
    assert task is not None and task.cancelled()
