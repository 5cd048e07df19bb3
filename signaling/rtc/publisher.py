"""One local kind (camera or microphone) being published: source, fan-out, enable/disable.

Each kind is encoded once for all peers (``EncodedVideoFanout``, ``EncodedAudioFanout``): a
peer costs packetization and SRTP, not an encoder. Disabling pauses the
fan-out and stops the source, which releases the OS device; enabling restarts the source
and resumes on the same transceivers, with a keyframe.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, Literal

from aiortc import RTCRtpTransceiver

from media.errors import CallrtError
from media.fanout import EncodedAudioFanout, EncodedVideoFanout
from media.source import Source, SourceEnded
from media.tracks import prefer_codec
from signaling.models import CallSettings

logger = logging.getLogger(__name__)


def default_source(kind: Literal["audio", "video"], settings: CallSettings) -> Source[Any]:
    """The system's default camera or microphone (raises a ``DeviceError`` when there is none)."""
    import devices

    if kind == "video":
        res = settings.video.target_resolution
        return devices.Camera(0, width=res.width, height=res.height, fps=settings.video.fps)
    return devices.Microphone()


def apply_target(source: Source[Any], settings: CallSettings) -> None:
    """Give a device source the call's target resolution and frame rate when the user chose none."""
    if source.kind != "video" or not all(hasattr(source, a) for a in ("width", "height", "fps")):
        return
    target = settings.video.target_resolution
    if getattr(source, "width", None) is None and getattr(source, "height", None) is None:
        source.width, source.height = target.width, target.height  # type: ignore[attr-defined]
    if getattr(source, "fps", None) is None:
        source.fps = float(settings.video.fps)  # type: ignore[attr-defined]


class _Guarded(Source[Any]):
    """Wraps the published source: a device failure mid-call (``DeviceGone``...) becomes a mute.

    The fan-out sees the source end; the publisher is told, so the call goes on with the
    track reported muted and the error kept on the manager.
    """

    def __init__(self, inner: Source[Any], on_failure: Callable[[CallrtError], None]) -> None:
        self.inner = inner
        self.kind = inner.kind
        self._on_failure = on_failure

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def running(self) -> bool:
        return self.inner.running

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def recv(self) -> Any:
        try:
            return await self.inner.recv()
        except CallrtError as exc:
            if self.inner.running:
                with contextlib.suppress(CallrtError):
                    await self.inner.stop()
            self._on_failure(exc)
            raise SourceEnded(str(exc)) from exc


class Publisher:
    """Publishes one kind. ``enabled`` is True while the source runs and frames flow."""

    def __init__(self, kind: Literal["audio", "video"], settings: CallSettings,
                 on_failure: Callable[[Publisher, CallrtError], None] | None = None) -> None:
        self.kind = kind
        self.settings = settings
        self.source: Source[Any] | None = None
        self.enabled = False
        self._on_failure = on_failure
        self.fanout: EncodedVideoFanout | EncodedAudioFanout
        if kind == "video":
            v = settings.video
            self.fanout = EncodedVideoFanout(None, v.codec, bitrate=v.target_resolution.bitrate, fps=v.fps)
        else:
            self.fanout = EncodedAudioFanout(None)
        self.fanout.pause()

    def __repr__(self) -> str:
        return f"<Publisher {self.kind} enabled={self.enabled} source={self.source!r}>"

    def attach(self, transceiver: RTCRtpTransceiver) -> None:
        """Send this kind on ``transceiver`` (one per peer) without a new encoder."""
        track = self.fanout.subscribe()
        transceiver.sender.replaceTrack(track)
        track.bind_sender(transceiver.sender)
        prefer_codec(transceiver, self.fanout.codec)

    async def enable(self, source: Source[Any] | None) -> None:
        """Open ``source`` (or the default device) and send it. Raises ``DeviceError`` on failure."""
        chosen = source or self.source or default_source(self.kind, self.settings)
        if chosen is not self.source and self.source is not None and self.source.running:
            await self.source.stop()
        apply_target(chosen, self.settings)
        await chosen.start()
        self.source = chosen
        self.fanout.replace_source(_Guarded(chosen, self._failed))
        self.fanout.resume()
        self.enabled = True
        logger.info("publishing %s from %s", self.kind, chosen.name)

    async def disable(self) -> None:
        """Stop sending and release the device; transceivers stay (mute)."""
        self.fanout.pause()
        self.enabled = False
        if self.source is not None and self.source.running:
            await self.source.stop()
            logger.info("released %s device %s", self.kind, self.source.name)

    async def replace(self, source: Source[Any]) -> None:
        """Switch to another source mid-call (no new join, same transceivers)."""
        if self.enabled:
            old = self.source
            apply_target(source, self.settings)
            await source.start()
            self.source = source
            self.fanout.replace_source(_Guarded(source, self._failed))
            if old is not None and old is not source and old.running:
                await old.stop()
        else:
            self.source = source

    def _failed(self, error: CallrtError) -> None:
        if not self.enabled:
            return
        logger.warning("%s source %s failed mid-call: %s", self.kind, self.source.name if self.source else "?",
                       error.message)
        self.fanout.pause()
        self.enabled = False
        if self._on_failure is not None:
            self._on_failure(self, error)

    async def aclose(self) -> None:
        try:
            await self.disable()
        except CallrtError as exc:
            logger.warning("releasing %s failed: %s", self.kind, exc)
        await self.fanout.aclose()
