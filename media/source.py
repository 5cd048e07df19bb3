"""The source protocol: what a camera, microphone, file or synthetic generator implements.

Sources live in ``devices/``; tracks and the pipeline in ``media/`` pull from them. A
source is *pulled*: ``await recv()`` returns the next frame at the source's real pace.
``start()`` opens the underlying device, ``stop()`` releases it (a stopped source holds
no OS resource and may be started again).
"""

from __future__ import annotations

import abc
from typing import Generic, Literal, Self, TypeVar

from media.frames import AudioFrame, VideoFrame

F = TypeVar("F", VideoFrame, AudioFrame)


class SourceEnded(Exception):
    """Raised by ``recv()`` when a source has no more frames (stopped, or a file ended)."""


class Source(abc.ABC, Generic[F]):
    """Base class of every media source."""

    kind: Literal["audio", "video"]
    """``"audio"`` or ``"video"``."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Human-readable name of the device or generator (used in errors and listings)."""

    @property
    @abc.abstractmethod
    def running(self) -> bool:
        """True between a successful ``start()`` and ``stop()``."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Open the device. Raises a ``DeviceError`` subclass when it cannot."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Release the device. Idempotent."""

    @abc.abstractmethod
    async def recv(self) -> F:
        """The next frame, paced at the source's real rate. Raises ``SourceEnded`` when stopped."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class VideoSource(Source[VideoFrame]):
    """A source of I420 ``VideoFrame``s."""

    kind: Literal["audio", "video"] = "video"


class AudioSource(Source[AudioFrame]):
    """A source of int16 ``AudioFrame``s (48 kHz unless stated)."""

    kind: Literal["audio", "video"] = "audio"
