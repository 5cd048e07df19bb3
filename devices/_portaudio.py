"""sounddevice (PortAudio) behind a guarded, lazy import, and its errors mapped to ours.

``import devices`` works without ``libportaudio2``; only opening or listing audio devices
raises ``BackendMissing`` then.
"""

from __future__ import annotations

import logging
import threading
from types import ModuleType
from typing import Any, Literal

from devices.errors import (
    START_DEVICES_HINT,
    BackendMissing,
    DeviceBusy,
    DeviceError,
    DeviceNotFound,
    DeviceUnavailable,
)

logger = logging.getLogger("devices")

Direction = Literal["input", "output"]

_lock = threading.Lock()
_open_streams = 0

_PA_INVALID_CHANNEL_COUNT = -9998
_PA_INVALID_SAMPLE_RATE = -9997
_PA_DEVICE_UNAVAILABLE = -9985

NO_AUDIO_FIX = (
    "start PulseAudio (or PipeWire) so PortAudio sees a device, check PULSE_SERVER points at it, "
    "or plug in a sound card (`aplay -l` / `arecord -l`); " + START_DEVICES_HINT
)


def load() -> ModuleType:
    """Import sounddevice, or raise ``BackendMissing`` naming the package to install."""
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError('PortAudio library not found')
        raise BackendMissing(
            "PortAudio",
            f"the PortAudio library is not installed ({exc})",
            "`apt-get install libportaudio2` (Debian/Ubuntu) or `brew install portaudio` (macOS), then restart",
        ) from exc
    return sounddevice


def _role(direction: Direction) -> str:
    return "microphone" if direction == "input" else "speaker"


def label(device: int | str | None, direction: Direction) -> str:
    """How errors name a device: ``microphone 'pulse'``, ``default speaker``."""
    return f"default {_role(direction)}" if device is None else f"{_role(direction)} {device!r}"


def _names(sd: ModuleType, direction: Direction) -> list[str]:
    key = "max_input_channels" if direction == "input" else "max_output_channels"
    return [f"[{d['index']}] {d['name']}" for d in sd.query_devices() if d[key] > 0]


def refresh_if_idle(sd: ModuleType) -> bool:
    """Re-scan PortAudio's device list (it is fixed at import) when none of our streams is open."""
    with _lock:
        if _open_streams:
            return False
        sd._terminate()
        sd._initialize()
    logger.debug("PortAudio device list refreshed")
    return True


def resolve(device: int | str | None, direction: Direction) -> dict[str, Any]:
    """The sounddevice info dict for ``device`` (index, name substring, or ``None`` = default).

    Rescans once if the device is not found (a sound server started after import).
    """
    sd = load()
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device)
    err: DeviceError | None = None
    for attempt in range(2):
        try:
            return dict(sd.query_devices(device, direction))
        except (ValueError, sd.PortAudioError) as exc:
            err = _not_found(sd, device, direction, exc)
            err.__cause__ = exc
        if attempt == 0 and not refresh_if_idle(sd):
            break
    assert err is not None
    raise err


def _not_found(sd: ModuleType, device: int | str | None, direction: Direction, exc: BaseException) -> DeviceError:
    who = label(device, direction)
    names = _names(sd, direction)
    listing = f"available: {', '.join(names)}" if names else "PortAudio lists no audio devices at all"
    text = str(exc)
    if text.startswith("Multiple"):
        return DeviceNotFound(who, f"the name matches several devices ({listing})", "use a longer name or the index")
    if device is None:
        return DeviceNotFound(who, f"there is no default {direction} device ({listing})", NO_AUDIO_FIX)
    fix = "pick one from `callrt devices`" if names else NO_AUDIO_FIX
    return DeviceNotFound(who, f"no {direction} device matches ({listing})", fix)


def stream_error(exc: BaseException, who: str, sample_rate: int, channels: int) -> DeviceError:
    """Map an error from opening or starting a PortAudio stream."""
    code = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
    text = str(exc.args[0]) if exc.args else repr(exc)
    if code == _PA_DEVICE_UNAVAILABLE:
        return DeviceBusy(who, f"device unavailable ({text})", "close the program that holds it")
    if code == _PA_INVALID_SAMPLE_RATE:
        return DeviceUnavailable(who, f"does not support {sample_rate} Hz", "use a device that supports 48 kHz")
    if code == _PA_INVALID_CHANNEL_COUNT:
        return DeviceUnavailable(who, f"does not support {channels} channel(s)", "use fewer channels")
    if "querying device" in text:
        return DeviceNotFound(who, f"no such device ({text})", NO_AUDIO_FIX)
    return DeviceUnavailable(who, f"cannot be opened ({text})", NO_AUDIO_FIX)


def opened() -> None:
    """Count a stream we opened (the device list is not rescanned while any is open)."""
    global _open_streams
    with _lock:
        _open_streams += 1


def closed() -> None:
    """Count a stream we closed."""
    global _open_streams
    with _lock:
        _open_streams = max(0, _open_streams - 1)


def close_stream(stream: Any) -> None:
    """Abort and close a PortAudio stream (blocking), logging instead of raising."""
    try:
        stream.abort()
        stream.close()
    except Exception as exc:
        logger.warning("closing audio stream %r failed: %r", stream, exc)
    finally:
        closed()
