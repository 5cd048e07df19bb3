"""The callrt engine: each participant is a ``Client`` that joins its call through the coordinator.

Everything is the product's own path: ``Call.join(create=True)`` (the first to arrive creates the
call with the run's codec and resolution), the media session's peer connections, the shared
encoder of ``EncodedVideoFanout``, the bounded sinks. Received frames reach the checks through
``sink.on_frame`` (inline in the sink's drain task, no extra task or queue per frame).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from media.errors import CallrtError
from media.frames import AudioFrame, VideoFrame
from signaling.client import Client
from signaling.rtc.remote import RemoteTrack
from signaling.swarm.layout import CALL_TYPE, Layout, MediaSpec
from signaling.swarm.participant import Participant
from signaling.tokens import TokenIssuer

logger = logging.getLogger(__name__)


class CallrtBot:
    """One participant joined with callrt's call API."""

    def __init__(self, participant: Participant, url: str, api_key: str, issuer: TokenIssuer) -> None:
        self.p = participant
        self.client = Client(url, api_key=api_key, token=issuer.create_user_token(participant.user_id),
                             events=False)
        self.call = self.client.call(CALL_TYPE, participant.layout.call_id(participant.call))
        self.call.on("track.added", self._on_track)
        self.unsubscribers: list[Any] = []

    async def join(self) -> None:
        p, media = self.p, self.p.media
        if p.pattern is not None:
            await self.call.camera.select(p.pattern)
            await self.call.camera.enable()
        else:
            await self.call.camera.disable()
        if p.tone is not None:
            await self.call.microphone.select(p.tone)
            await self.call.microphone.enable()
        else:
            await self.call.microphone.disable()
        p.t_join = time.time()
        t0 = time.perf_counter()
        await self.call.join(create=True, data=call_data(media))
        p.join_ms = (time.perf_counter() - t0) * 1000
        p.joined = True

    def _on_track(self, track: RemoteTrack) -> None:
        sender = self.p.layout.index_of(track.participant.user_id)
        if track.kind == "video":
            vcheck = self.p.video_checks.get(sender) if sender is not None else None
            if vcheck is None:
                logger.warning("%s: unexpected video from %s", self.p.user_id, track.participant.user_id)
                return

            def on_video(frame: VideoFrame) -> None:
                vcheck.on_frame(frame)

            self.unsubscribers.append(track.sink.on_frame(on_video))  # type: ignore[arg-type]
        else:
            acheck = self.p.audio_checks.get(sender) if sender is not None else None
            if acheck is None:
                logger.warning("%s: unexpected audio from %s", self.p.user_id, track.participant.user_id)
                return

            def on_audio(frame: AudioFrame) -> None:
                acheck.on_samples(frame.samples, frame.pts, frame.sample_rate)

            self.unsubscribers.append(track.sink.on_frame(on_audio))  # type: ignore[arg-type]

    async def leave(self) -> None:
        try:
            if self.p.joined and self.call.media is not None:
                await self.call.leave()
        except CallrtError as exc:
            logger.warning("%s: leave failed: %s", self.p.user_id, exc)
        finally:
            await self.client.aclose()


def call_data(media: MediaSpec) -> dict[str, Any]:
    """``join(create=True, data=...)``: the call's codec, resolution and frame rate for this run."""
    video: dict[str, Any] = {"enabled": media.video is not None, "codec": media.codec}
    if media.video is not None:
        video["fps"] = round(media.video.fps)
        video["target_resolution"] = {"width": media.video.width, "height": media.video.height,
                                      "bitrate": media.bitrate}
    return {"settings_override": {"video": video, "audio": {"mic_default_on": media.audio}}}


def make_bots(participants: list[Participant], layout: Layout, url: str, api_key: str,
              api_secret: str) -> list[CallrtBot]:
    issuer = TokenIssuer(api_key, api_secret)
    return [CallrtBot(p, url, api_key, issuer) for p in participants]
