"""callrt's call API: ``Client``, ``Call``, ``ServerClient``, typed errors; the coordinator lives in
``signaling.server``.

Imports are lazy so that the coordinator (``signaling.server``) can use the shared models
without loading the client, media or device stacks.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BackstageClosed": "signaling.errors",
    "Call": "signaling.call",
    "CallEnded": "signaling.errors",
    "CallFull": "signaling.errors",
    "CallNotFound": "signaling.errors",
    "CallState": "signaling.call_state",
    "CallTypeNotFound": "signaling.errors",
    "CallingState": "signaling.call_state",
    "CallrtError": "media.errors",
    "Client": "signaling.client",
    "Conflict": "signaling.errors",
    "ConnectionFailed": "signaling.errors",
    "DeviceManager": "signaling.device_manager",
    "DeviceStatus": "signaling.device_manager",
    "InternalError": "signaling.errors",
    "InvalidRequest": "signaling.errors",
    "InvalidState": "signaling.errors",
    "NotFound": "signaling.errors",
    "PayloadTooLarge": "signaling.errors",
    "PermissionDenied": "signaling.errors",
    "RateLimited": "signaling.errors",
    "RemoteParticipant": "signaling.rtc.remote",
    "RemoteTrack": "signaling.rtc.remote",
    "ServerClient": "signaling.client",
    "SignalingError": "signaling.errors",
    "Unauthenticated": "signaling.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'signaling' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
