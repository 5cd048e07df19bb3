"""Helpers for media tests: participants with verifiable synthetic sources, content checks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from devices import TestPattern, Tone, dominant_frequency, read_frame_index
from signaling import Call, Client
from signaling.server import EmbeddedCoordinator
from tests.conftest import API_KEY


@dataclass
class Bot:
    client: Client
    call: Call
    pattern: TestPattern
    tone: Tone


async def make_bot(coord: EmbeddedCoordinator, user: str, call_id: str, freq: float, *,
                   call_type: str = "default", size: tuple[int, int] = (320, 240)) -> Bot:
    client = Client(coord.url, api_key=API_KEY, token=coord.user_token(user))
    call = client.call(call_type, call_id)
    pattern, tone = TestPattern(*size, fps=30), Tone(freq)
    await call.camera.select(pattern)
    await call.microphone.select(tone)
    return Bot(client, call, pattern, tone)


async def remote_of(call: Call, user_id: str, kind: str = "video", timeout: float = 15.0):
    """The remote participant ``user_id`` once its ``kind`` sink exists."""
    return (await call.wait_for_track(kind, user_id=user_id, timeout=timeout)).participant  # type: ignore[arg-type]


async def frame_indices(sink, n: int = 15, timeout: float = 10.0) -> list[int]:
    """Decode ``n`` frames and read the TestPattern index of each (None if unreadable)."""
    out = []
    for _ in range(n):
        frame = await asyncio.wait_for(sink.recv(), timeout)
        out.append(read_frame_index(frame))
    return out


def assert_in_order(indices: list[int | None]) -> None:
    readable = [i for i in indices if i is not None]
    assert len(readable) >= len(indices) * 0.8, f"too many unreadable frames: {indices}"
    assert readable == sorted(readable) and len(set(readable)) == len(readable), f"out of order: {indices}"


async def tone_frequency(sink, blocks: int = 25, timeout: float = 10.0) -> float:
    """Dominant frequency of ``blocks`` received audio frames (20 ms each)."""
    chunks = []
    rate = 48_000
    for _ in range(blocks):
        frame = await asyncio.wait_for(sink.recv(), timeout)
        chunks.append(frame.samples.copy())
        rate = frame.sample_rate
    return dominant_frequency(np.concatenate(chunks), rate)
