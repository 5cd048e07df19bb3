"""``list_devices()``: the cameras, screens, microphones and speakers this machine offers.

Cameras are the ``/dev/video*`` nodes; the X display named by ``DISPLAY`` is listed as a
screen source (``ScreenCapture``); audio devices come from PortAudio (sounddevice). A
backend that cannot be asked (no PortAudio library) leaves its section empty and records
the typed error in ``DeviceList.errors``, so a listing never fails.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

from devices import _portaudio
from devices.errors import DeviceError, DeviceNotFound

logger = logging.getLogger("devices")

DeviceKind = Literal["camera", "screen", "microphone", "speaker"]


@dataclass(frozen=True)
class DeviceInfo:
    """One device as ``callrt devices`` shows it."""

    kind: DeviceKind
    """``camera``, ``screen``, ``microphone`` or ``speaker``."""
    id: str
    """What to pass to the source: ``Camera("/dev/video0")``, ``ScreenCapture(":99")``, ``Microphone(1)``."""
    name: str
    """Human-readable name."""
    backend: str
    """``v4l2``, ``x11grab``, or the PortAudio host API (``ALSA``, ...)."""
    default: bool = False
    """The system default for its kind."""
    channels: int = 0
    """Audio channels the device offers (0 for video)."""
    sample_rate: float = 0.0
    """Default sample rate for audio (0 for video)."""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class DeviceList:
    """Everything ``list_devices()`` found, plus why a section may be empty."""

    cameras: tuple[DeviceInfo, ...] = ()
    """Cameras and screens (video sources a user can pick)."""
    microphones: tuple[DeviceInfo, ...] = ()
    speakers: tuple[DeviceInfo, ...] = ()
    errors: tuple[DeviceError, ...] = field(default_factory=tuple)
    """Typed errors from backends that could not be asked (e.g. ``BackendMissing`` for PortAudio)."""

    def __iter__(self) -> Iterator[DeviceInfo]:
        """Every device: cameras and screens, then microphones, then speakers."""
        yield from self.cameras
        yield from self.microphones
        yield from self.speakers

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form (``callrt devices --json``)."""
        return {
            "cameras": [d.to_dict() for d in self.cameras],
            "microphones": [d.to_dict() for d in self.microphones],
            "speakers": [d.to_dict() for d in self.speakers],
            "errors": [e.to_dict() for e in self.errors],
        }


def _v4l2_cameras() -> list[DeviceInfo]:
    out = []
    nodes = sorted(glob.glob("/dev/video*"), key=lambda p: int(re.sub(r"\D", "", p) or 0))
    for i, node in enumerate(nodes):
        name = node
        try:
            with open(f"/sys/class/video4linux/{os.path.basename(node)}/name", encoding="utf-8") as fh:
                name = fh.read().strip() or node
        except OSError:
            pass
        out.append(DeviceInfo("camera", node, name, "v4l2", default=i == 0))
    return out


def _screens() -> list[DeviceInfo]:
    display = os.environ.get("DISPLAY")
    if not display:
        return []
    m = re.fullmatch(r"(?:unix)?:(\d+)(?:\.\d+)?", display)
    if m and not os.path.exists(f"/tmp/.X11-unix/X{m.group(1)}"):
        logger.debug("DISPLAY=%s is set but no X server socket exists", display)
        return []
    return [DeviceInfo("screen", display, f"X display {display}", "x11grab")]


def _audio() -> tuple[list[DeviceInfo], list[DeviceInfo]]:
    sd = _portaudio.load()
    if not any(d["max_input_channels"] or d["max_output_channels"] for d in sd.query_devices()):
        _portaudio.refresh_if_idle(sd)  # a sound server may have started after import
    default_in, default_out = sd.default.device
    apis = [a["name"] for a in sd.query_hostapis()]
    mics, speakers = [], []
    for d in sd.query_devices():
        api = apis[d["hostapi"]] if d["hostapi"] < len(apis) else ""
        idx = int(d["index"])
        if d["max_input_channels"] > 0:
            mics.append(
                DeviceInfo(
                    "microphone",
                    str(idx),
                    d["name"],
                    api,
                    idx == default_in,
                    d["max_input_channels"],
                    float(d["default_samplerate"]),
                )
            )
        if d["max_output_channels"] > 0:
            speakers.append(
                DeviceInfo(
                    "speaker",
                    str(idx),
                    d["name"],
                    api,
                    idx == default_out,
                    d["max_output_channels"],
                    float(d["default_samplerate"]),
                )
            )
    return mics, speakers


def list_devices() -> DeviceList:
    """The devices present now. Never raises for a missing backend: see ``DeviceList.errors``."""
    errors: list[DeviceError] = []
    mics: list[DeviceInfo] = []
    speakers: list[DeviceInfo] = []
    try:
        mics, speakers = _audio()
    except DeviceError as exc:
        errors.append(exc)
    if not mics and not errors:
        errors.append(DeviceNotFound("microphone", "PortAudio lists no input devices", _portaudio.NO_AUDIO_FIX))
    return DeviceList(tuple(_v4l2_cameras() + _screens()), tuple(mics), tuple(speakers), tuple(errors))


def format_devices(devices: DeviceList) -> str:
    """A plain-text table of ``devices`` (what ``callrt devices`` prints), errors below it."""
    rows = [("KIND", "ID", "NAME", "BACKEND", "DETAILS")]
    for d in devices:
        details = []
        if d.channels:
            details.append(f"{d.channels} ch, {d.sample_rate:g} Hz")
        if d.default:
            details.append("default")
        rows.append((d.kind, d.id, d.name, d.backend, ", ".join(details)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if len(rows) == 1:
        lines.append("(no devices found)")
    for e in devices.errors:
        lines.append(f"! {e.message}")
    return "\n".join(lines) + "\n"
