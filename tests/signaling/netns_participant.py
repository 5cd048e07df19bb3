"""A participant run inside a network namespace by test_network_impairment.py; prints one JSON report.

    ip netns exec NS python -m tests.signaling.netns_participant URL USER FREQ SECONDS
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time

import numpy as np

from devices import TestPattern, Tone, dominant_frequency, read_frame_index
from signaling import Client
from signaling.tokens import TokenIssuer
from tests.conftest import API_KEY, API_SECRET


async def main(url: str, user: str, freq: float, seconds: float) -> dict:
    token = TokenIssuer(API_KEY, API_SECRET).create_user_token(user)
    async with Client(url, api_key=API_KEY, token=token) as client:
        call = client.call("default", "impaired")
        await call.camera.select(TestPattern(320, 240, fps=30))
        await call.microphone.select(Tone(freq))
        await call.join(create=True)
        deadline = time.monotonic() + 20
        while not any(p.video and p.audio for p in call.remote_participants.values()):
            if time.monotonic() > deadline:
                return {"user": user, "error": "no remote media within 20 s"}
            await asyncio.sleep(0.05)
        remote = next(p for p in call.remote_participants.values() if p.video and p.audio)
        indices: list[int | None] = []
        audio: list[np.ndarray] = []

        async def video() -> None:
            async for frame in remote.video:
                indices.append(read_frame_index(frame))

        async def sound() -> None:
            async for frame in remote.audio:
                audio.append(frame.samples.copy())
                del audio[:-100]

        tasks = [asyncio.ensure_future(video()), asyncio.ensure_future(sound())]
        await asyncio.sleep(seconds)
        for t in tasks:
            t.cancel()
        links = list(call.media.links.values())
        if not links:
            return {"user": user, "error": "the peer connection closed before the end of the window"}
        # Per remote SSRC from each receiver: aiortc's getStats() gives one inbound-rtp entry per
        # receiver, so for video the retransmission (RTX) stream's figures overwrite the media stream's.
        inbound: dict[str, dict[str, int]] = {}
        for transceiver in links[0].pc.getTransceivers():
            receiver = transceiver.receiver
            rtx = receiver._RTCRtpReceiver__rtx_ssrc  # type: ignore[attr-defined]  # rtx ssrc -> media ssrc
            entry = inbound.setdefault(transceiver.kind, {"packets_received": 0, "packets_lost": 0,
                                                          "retransmissions_received": 0})
            for ssrc, stream in receiver._RTCRtpReceiver__remote_streams.items():  # type: ignore[attr-defined]
                if ssrc in rtx:
                    entry["retransmissions_received"] += stream.packets_received
                else:
                    entry["packets_received"] += stream.packets_received
                    entry["packets_lost"] += stream.packets_lost
        fanout = call.media.publishers["video"].fanout
        readable = [i for i in indices if i is not None]
        in_order = sum(1 for a, b in itertools.pairwise(readable) if b > a)
        report = {
            "user": user, "frames": len(indices), "readable": len(readable),
            "in_order_fraction": in_order / max(1, len(readable) - 1), "fps": len(readable) / seconds,
            "max_index_gap": max((b - a for a, b in itertools.pairwise(readable)), default=0),
            "tone_hz": dominant_frequency(np.concatenate(audio), 48_000) if audio else None,
            "inbound": inbound, "keyframe_requests_from_peers": fanout.keyframe_requests,
            "keyframes_sent": getattr(fanout.encoder, "keyframes", None),
        }
        await asyncio.sleep(5)  # linger: the other participant may still be measuring
        await call.leave()
        return report


if __name__ == "__main__":
    url, user, freq, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    print(json.dumps(asyncio.run(main(url, user, freq, seconds))))
