"""What a participant receives from one remote participant: its tracks as bounded sinks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from media.sinks import AudioSink, VideoSink


@dataclass
class RemoteParticipant:
    """A remote participant session as seen by the media runtime."""

    session_id: str
    user_id: str
    published_tracks: list[str] = field(default_factory=list)
    """Kinds it sends now (from the coordinator; a muted kind is absent)."""
    video: VideoSink | None = None
    """Its video, once a track arrived: ``async for frame in participant.video``."""
    audio: AudioSink | None = None

    @property
    def video_muted(self) -> bool:
        return "video" not in self.published_tracks

    @property
    def audio_muted(self) -> bool:
        return "audio" not in self.published_tracks


@dataclass(frozen=True)
class RemoteTrack:
    """Payload of the ``track.added`` event."""

    participant: RemoteParticipant
    kind: Literal["audio", "video"]
    sink: VideoSink | AudioSink
