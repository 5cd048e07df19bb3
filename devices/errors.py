"""Typed device errors, and the boundary where foreign errors become them.

    CallrtError (media.errors)
    └── DeviceError                       device_error         something is wrong with a device
        ├── DeviceNotFound (LookupError)  device_not_found     no such camera/microphone/speaker/display
        ├── BackendMissing                device_backend_missing  a library (PortAudio, an FFmpeg format) is absent
        ├── DeviceUnavailable             device_unavailable   exists (or was named) but cannot be opened now
        │   └── DeviceBusy                device_busy          another program holds it
        ├── DeviceGone                    device_gone          disappeared or stalled mid-capture
        └── UnreadableFile                unreadable_file      a media file is missing or not decodable

Every error names the device (``error.device``) and says what to do (``error.fix``); the
message joins both so a person reading a log knows what to install or start. Foreign
errors (sounddevice, cv2, PyAV) are translated here, with ``raise ... from exc``.
"""

from __future__ import annotations

import errno

from media.errors import CallrtError

START_DEVICES_HINT = "`bash scripts/devices.sh start` starts virtual ones (PulseAudio null sink, Xvfb)"
"""The hint every 'no device' message ends with on a headless machine."""


class DeviceError(CallrtError):
    """Base of every device failure; carries the device's name and the fix."""

    code = "device_error"
    status = 500

    def __init__(self, device: str, problem: str, fix: str = "", *, code: str | None = None) -> None:
        self.device = device
        """The device, file or URL concerned, as the user named it."""
        self.problem = problem
        """What went wrong."""
        self.fix = fix
        """What to install, start or change."""
        message = f"{device}: {problem}"
        if fix:
            message += f". Fix: {fix}"
        super().__init__(message, code=code)

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "device": self.device, "fix": self.fix}

    def __reduce__(self) -> tuple[object, ...]:
        return (self.__class__, (self.device, self.problem, self.fix))


class DeviceNotFound(DeviceError, LookupError):
    """No device matches the name, index or path (or there is no default device)."""

    code = "device_not_found"
    status = 404


class BackendMissing(DeviceError):
    """A library the device needs is not installed (PortAudio, an FFmpeg input format)."""

    code = "device_backend_missing"
    status = 501


class DeviceUnavailable(DeviceError):
    """The device exists or was named but cannot be opened now (server down, no display, timeout)."""

    code = "device_unavailable"
    status = 503


class DeviceBusy(DeviceUnavailable):
    """Another program holds the device."""

    code = "device_busy"
    status = 409


class DeviceGone(DeviceError):
    """The device disappeared or stopped delivering frames mid-capture."""

    code = "device_gone"
    status = 410


class UnreadableFile(DeviceError):
    """A media file is missing, unreadable or holds no decodable stream."""

    code = "unreadable_file"
    status = 422


def from_os_error(
    exc: BaseException, device: str, *, missing_fix: str, unavailable_fix: str, is_file: bool = False
) -> DeviceError:
    """Map an ``OSError`` (PyAV raises subclasses of it) on open to a typed error."""
    err = getattr(exc, "errno", None)
    text = getattr(exc, "strerror", None) or str(exc)
    if isinstance(exc, FileNotFoundError) or err == errno.ENOENT:
        if is_file:
            return UnreadableFile(device, "no such file", missing_fix)
        return DeviceNotFound(device, "no such device", missing_fix)
    if isinstance(exc, PermissionError) or err in (errno.EACCES, errno.EPERM):
        cls = UnreadableFile if is_file else DeviceUnavailable
        return cls(device, "permission denied", "grant read access (e.g. add the user to the 'video' group)")
    if err == errno.EBUSY:
        return DeviceBusy(device, "device is busy", "close the other program that uses it")
    if err in (errno.ENODEV, errno.ENXIO):
        return DeviceGone(device, f"device disappeared ({text})", missing_fix)
    if isinstance(exc, ValueError) or err == errno.EINVAL or "Invalid data" in str(exc):
        if is_file:
            return UnreadableFile(device, f"not a readable media file ({text})", "check the file is a video/audio file")
        return DeviceUnavailable(device, f"cannot be opened ({text})", unavailable_fix)
    cls = UnreadableFile if is_file else DeviceUnavailable
    return cls(device, f"cannot be opened ({text})", unavailable_fix)


__all__ = [
    "START_DEVICES_HINT",
    "BackendMissing",
    "DeviceBusy",
    "DeviceError",
    "DeviceGone",
    "DeviceNotFound",
    "DeviceUnavailable",
    "UnreadableFile",
    "from_os_error",
]
