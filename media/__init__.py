"""NumPy frame types, colour conversion, the encode/decode path, tracks and receive sinks.

``media`` imports neither ``signaling`` nor ``devices``.
"""

from media.errors import CallrtError
from media.frames import AUDIO_SAMPLE_RATE, VIDEO_TIME_BASE, AudioFrame, VideoFrame
from media.source import AudioSource, Source, SourceEnded, VideoSource

__all__ = [
    "AUDIO_SAMPLE_RATE",
    "VIDEO_TIME_BASE",
    "AudioFrame",
    "AudioSource",
    "CallrtError",
    "Source",
    "SourceEnded",
    "VideoFrame",
    "VideoSource",
]
