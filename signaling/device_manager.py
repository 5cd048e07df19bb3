"""Camera and microphone managers on a call: the user's choice before join, the state after.

Before join a manager only records an explicit ``enable()``/``disable()``. At join the
reference's rule decides: an explicit choice wins, otherwise the call's
``camera_default_on``/``mic_default_on`` applies, and in both cases only if the user holds
``send-video``/``send-audio``. During a call the manager drives the published track
through the ``MediaController`` it is attached to.
"""

from __future__ import annotations

import enum
import logging
from typing import Any, Literal, Protocol

from signaling.emitter import EventEmitter

logger = logging.getLogger(__name__)


class DeviceStatus(enum.StrEnum):
    """``unset`` until the user chooses, or until join resolves the default."""

    UNSET = "unset"
    ENABLED = "enabled"
    DISABLED = "disabled"


class MediaController(Protocol):
    """What a manager needs from the call's media session while joined."""

    async def set_track_enabled(self, kind: Literal["audio", "video"], enabled: bool) -> bool:
        """Start/stop publishing ``kind``; returns the state actually reached."""
        ...

    async def replace_source(self, kind: Literal["audio", "video"], source: Any) -> None: ...


def _source_for(choice: Any) -> Any:
    """A source for a ``DeviceInfo`` (as listed), or ``choice`` itself when it already is one."""
    import devices

    if not isinstance(choice, devices.DeviceInfo):
        return choice
    if choice.kind == "camera":
        return devices.Camera(choice.id)
    if choice.kind == "screen":
        return devices.ScreenCapture(choice.id)
    if choice.kind == "microphone":
        return devices.Microphone(int(choice.id) if choice.id.isdigit() else choice.id)
    raise ValueError(f"a {choice.kind} cannot be published; select a camera, screen or microphone")


class DeviceManager:
    """State and control of one kind of local device on one call."""

    def __init__(self, kind: Literal["camera", "microphone"], emitter: EventEmitter) -> None:
        self.kind = kind
        self.track_kind: Literal["audio", "video"] = "video" if kind == "camera" else "audio"
        self.capability = "send-video" if kind == "camera" else "send-audio"
        self.status = DeviceStatus.UNSET
        self.source: Any = None
        """The selected source (a ``media.Source``), or None for the default device."""
        self.error: Exception | None = None
        """The last device error (e.g. no device at join), kept for inspection."""
        self._explicit = False
        self._controller: MediaController | None = None
        self._emitter = emitter

    def __repr__(self) -> str:
        return f"<DeviceManager {self.kind} {self.status.value} source={self.source!r}>"

    @property
    def enabled(self) -> bool:
        return self.status is DeviceStatus.ENABLED

    @property
    def explicit(self) -> bool:
        """True when the user chose enable/disable (rather than the call's default)."""
        return self._explicit

    async def enable(self) -> None:
        """Turn the device on: before join, a choice; during a call, (re)open and publish."""
        self._explicit = True
        await self._apply(True)

    async def disable(self) -> None:
        """Turn the device off: during a call the device is released and the track muted."""
        self._explicit = True
        await self._apply(False)

    async def toggle(self) -> None:
        await (self.disable() if self.enabled else self.enable())

    def list_devices(self) -> list[Any]:
        """Devices of this kind present now (``devices.DeviceInfo``: cameras and screens, or microphones)."""
        import devices

        found = devices.list_devices()
        return list(found.cameras if self.kind == "camera" else found.microphones)

    async def select(self, source: Any) -> None:
        """Choose what to publish: a ``media.Source`` (device, file, synthetic) or a ``devices.DeviceInfo``
        from ``list_devices()``.

        During a call the new source replaces the old one on the same track, without a new join.
        """
        source = _source_for(source)
        self.source = source
        if self._controller is not None and self.enabled:
            await self._controller.replace_source(self.track_kind, source)
        self._emitter.emit(f"{self.kind}.changed", self)

    async def _apply(self, on: bool) -> None:
        if self._controller is not None:
            reached = await self._controller.set_track_enabled(self.track_kind, on)
            self.status = DeviceStatus.ENABLED if reached else DeviceStatus.DISABLED
        else:
            self.status = DeviceStatus.ENABLED if on else DeviceStatus.DISABLED
        self._emitter.emit(f"{self.kind}.changed", self)

    def resolve_at_join(self, default_on: bool, own_capabilities: list[str]) -> bool:
        """The reference's rule: explicit choice, else the call default; only with the capability."""
        wanted = self.enabled if self._explicit else default_on
        allowed = self.capability in own_capabilities
        if wanted and not allowed:
            logger.info("%s stays off: the user lacks %s", self.kind, self.capability)
        on = wanted and allowed
        self.status = DeviceStatus.ENABLED if on else DeviceStatus.DISABLED
        return on

    def attach(self, controller: MediaController | None) -> None:
        """Bind to (or, with None, detach from) the joined call's media session."""
        self._controller = controller

    def fail(self, error: Exception) -> None:
        """Record a device failure: the manager ends disabled and an event says why."""
        self.error = error
        self.status = DeviceStatus.DISABLED
        self._emitter.emit(f"{self.kind}.error", error)
