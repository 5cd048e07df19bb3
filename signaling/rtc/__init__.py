"""The client's media runtime: publishers, one peer connection per remote participant, sinks.

``open_media_session`` is installed as ``Client.media_factory``; ``Call.join`` calls it.
"""

from signaling.rtc.remote import RemoteParticipant, RemoteTrack
from signaling.rtc.session import MediaSession, open_media_session

__all__ = ["MediaSession", "RemoteParticipant", "RemoteTrack", "open_media_session"]
