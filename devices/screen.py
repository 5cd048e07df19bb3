"""``ScreenCapture``: an X11 display (real or Xvfb) through PyAV's ``x11grab``."""

from __future__ import annotations

import os
import re
import socket

from devices.errors import START_DEVICES_HINT, DeviceError, DeviceGone, DeviceUnavailable, from_os_error
from devices.ffmpeg import FFmpegSource

_NO_DISPLAY_FIX = (
    "set DISPLAY to a running X server, or start one: "
    "`Xvfb :99 -screen 0 1280x720x24 -nolisten tcp -noreset &` then `export DISPLAY=:99`; " + START_DEVICES_HINT
)


class ScreenCapture(FFmpegSource):
    """Frames of an X display (``bgr0``, converted to I420), at ``fps`` (default 30).

    ``display`` defaults to ``$DISPLAY`` at construction; ``region=(x, y, w, h)`` grabs part of
    the screen; ``width``/``height`` scale the result.
    """

    def __init__(
        self,
        display: str | None = None,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float = 30.0,
        region: tuple[int, int, int, int] | None = None,
        cursor: bool = False,
        open_timeout: float = 5.0,
        read_timeout: float = 5.0,
    ) -> None:
        self.display = display or os.environ.get("DISPLAY") or None
        """The X display (``:99``, ``host:0.0``); ``None`` when none was given or set."""
        self.region = region
        """``(x, y, width, height)`` of the grabbed area, or ``None`` for the whole screen."""
        url = self.display or ""
        options = {"framerate": f"{fps:g}", "draw_mouse": "1" if cursor else "0"}
        if region is not None:
            x, y, w, h = region
            url += f"+{x},{y}"
            options["video_size"] = f"{w}x{h}"
        super().__init__(
            url,
            "x11grab",
            options=options,
            width=width,
            height=height,
            fps=fps,
            pace=False,
            open_timeout=open_timeout,
            read_timeout=read_timeout,
            name=f"screen {self.display}" if self.display else "screen (DISPLAY not set)",
        )

    def _precheck(self) -> None:
        if not self.display:
            raise DeviceUnavailable(
                self.name, "DISPLAY is not set, so there is no X display to capture", _NO_DISPLAY_FIX
            )
        m = re.fullmatch(r"(?:unix)?:(\d+)(?:\.\d+)?", self.display)
        if m and not os.path.exists(f"/tmp/.X11-unix/X{m.group(1)}"):
            raise DeviceUnavailable(self.name, f"no X server is running on display {self.display}", _NO_DISPLAY_FIX)

    def _check_alive(self) -> None:
        if self.display and not _x_server_answers(self.display):
            raise DeviceGone(self.name, "the X server went away mid-capture", self._gone_fix())

    def _map_open_error(self, exc: BaseException) -> DeviceError:
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | PermissionError):
            return DeviceUnavailable(self.name, f"cannot connect to the X server ({exc})", _NO_DISPLAY_FIX)
        return from_os_error(exc, self.name, missing_fix=_NO_DISPLAY_FIX, unavailable_fix=_NO_DISPLAY_FIX)

    def _gone_fix(self) -> str:
        return "the X server stopped or stalled; restart it and start the capture again"


def _x_server_answers(display: str) -> bool:
    """Whether something accepts connections on ``display``'s socket (a cheap liveness probe)."""
    m = re.fullmatch(r"(?P<host>[^:]*):(?P<num>\d+)(?:\.\d+)?", display)
    if m is None:
        return True  # a form we do not probe; rely on FFmpeg's errors
    host, num = m.group("host"), int(m.group("num"))
    if host in ("", "unix"):
        for address in (f"/tmp/.X11-unix/X{num}", f"\0/tmp/.X11-unix/X{num}"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.5)
                try:
                    sock.connect(address)
                except OSError:
                    continue
                return True
        return False
    try:
        with socket.create_connection((host, 6000 + num), timeout=0.5):
            return True
    except OSError:
        return False
