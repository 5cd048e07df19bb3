"""``FFmpegSource``: any FFmpeg input (format + device/URL/file string) through PyAV.

The base of ``ScreenCapture`` (x11grab) and ``VideoFile``. Frames are paced by their own
timestamps when the input is a file or a ``lavfi`` generator (which would otherwise run as fast
as the CPU allows); live devices and network streams deliver at their own pace. Limited to
``fps`` when given, scaled to ``width`` x ``height`` and converted to I420.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping

import av

from devices._reader import ThreadedSource
from devices._video import FrameRateGate, I420Converter, Pacer, check_size, to_pts
from devices.errors import BackendMissing, DeviceError, DeviceGone, UnreadableFile, from_os_error
from media.frames import VideoFrame
from media.source import SourceEnded, VideoSource


class FFmpegSource(ThreadedSource[VideoFrame], VideoSource):
    """Video from an FFmpeg input, e.g. ``FFmpegSource("testsrc=size=640x480:rate=30", format="lavfi")``."""

    def __init__(
        self,
        url: str,
        format: str | None = None,
        *,
        options: Mapping[str, str] | None = None,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        loop: bool = False,
        pace: bool | None = None,
        open_timeout: float = 5.0,
        read_timeout: float = 5.0,
        name: str | None = None,
    ) -> None:
        check_size(width, height, fps)
        super().__init__(
            name or (f"{format}:{url}" if format else url), open_timeout=open_timeout, read_timeout=read_timeout
        )
        self.url = url
        """What ``av.open`` opens: a file, URL, device or filter graph."""
        self.format = format
        """FFmpeg input format (``lavfi``, ``x11grab``, ``v4l2``, ...); ``None`` to probe."""
        self.options = dict(options or {})
        """FFmpeg input options (``framerate``, ``video_size``, ...)."""
        self.width, self.height, self.fps = width, height, fps
        self.loop = loop
        """Seek back to the start at the end instead of ending."""
        if pace is None:
            pace = format == "lavfi" or (format is None and ("://" not in url or url.startswith("file:")))
        self.pace = pace
        """Sleep until each frame's timestamp is due: for files and generators (``lavfi``). Off for
        live devices and network streams, which deliver at their own pace (their timestamps are
        capture times, and pacing by them would only add delay)."""

    # -- hooks for subclasses ------------------------------------------------------------

    _is_file = False

    def _open_fix(self) -> str:
        return "check the input string and format (try it with `ffmpeg -f FORMAT -i INPUT`)"

    def _map_open_error(self, exc: BaseException) -> DeviceError:
        if isinstance(exc, ValueError) and "no container format" in str(exc):
            return BackendMissing(
                self.name, f"this FFmpeg build has no input format {self.format!r}", "use a format listed by PyAV"
            )
        return from_os_error(
            exc, self.name, missing_fix=self._open_fix(), unavailable_fix=self._open_fix(), is_file=self._is_file
        )

    def _precheck(self) -> None:
        """Fast checks before ``av.open`` (missing file, no display, ...)."""

    def _check_alive(self) -> None:
        """Called from the reader about once a second: raise ``DeviceGone`` if the device went away
        while FFmpeg keeps returning frames (x11grab does, with the last image, after its server died)."""

    def _input_options(self) -> dict[str, str]:
        return self.options

    # -- reader thread -------------------------------------------------------------------

    def _open(self, stop: threading.Event) -> _AVCapture:
        self._precheck()
        try:
            container = av.open(
                self.url,
                format=self.format,
                options=self._input_options(),
                timeout=(self.open_timeout, self.read_timeout),
            )
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise self._map_open_error(exc) from exc
        try:
            if not container.streams.video:
                raise UnreadableFile(self.name, "has no video stream", "pass a video input")
            capture = _AVCapture(self, container, stop)
            capture.prime()
            return capture
        except BaseException:
            container.close()
            raise

    def _read_error(self, exc: BaseException) -> DeviceError:
        if self._is_file:
            return UnreadableFile(self.name, f"decoding failed ({exc})", "check the file is not truncated")
        return DeviceGone(self.name, f"input failed mid-capture ({exc})", self._gone_fix())


class _AVCapture:
    """An open PyAV input: decode, loop, limit fps, pace, convert."""

    def __init__(self, source: FFmpegSource, container: av.container.InputContainer, stop: threading.Event) -> None:
        self.source = source
        self.container = container
        self.stream = container.streams.video[0]
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.frame_duration = float(1 / rate) if rate else 1 / 30
        self.converter = I420Converter(source.width, source.height)
        self.pacer = Pacer(stop) if source.pace else None
        self.gate = FrameRateGate(source.fps)
        self._frames: Iterator[av.VideoFrame] = container.decode(self.stream)
        self._first: float | None = None  # media time of the file's first frame
        self._last = 0.0  # media time (relative, this pass) of the last frame
        self._offset = 0.0  # accumulated duration of previous loops
        self._count = 0
        self._pending: av.VideoFrame | None = None
        self._next_check = time.monotonic() + 1.0

    def prime(self) -> None:
        """Decode the first frame now, so ``start()`` fails if the input yields nothing.

        A live device hands back the frames FFmpeg grabbed while probing the input first; those
        are stale by the time we start, so frames stamped well before now are skipped here.
        """
        frame = self._next_frame()
        for _ in range(30):
            if frame is None or self.pacer is not None or frame.time is None:
                break
            age = time.time() - frame.time
            if age > 5.0 or age < 2 * self.frame_duration:  # not wall-clock stamped, or fresh
                break
            frame = self._next_frame()
        if frame is None:
            raise UnreadableFile(self.source.name, "has no decodable video frames", "check the input")
        self._pending = frame

    def _next_frame(self) -> av.VideoFrame | None:
        try:
            return next(self._frames)
        except StopIteration:
            return None
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise self.source._read_error(exc) from exc

    def read(self) -> VideoFrame | None:
        frame, self._pending = self._pending, None
        if frame is None:
            frame = self._next_frame()
        while frame is None:  # end of input
            if not self.source.loop or self._count == 0:
                raise SourceEnded(f"{self.source.name} ended")
            self._offset += self._last + self.frame_duration
            self._first, self._count = None, 0
            try:
                self.container.seek(0)
            except (av.FFmpegError, OSError) as exc:
                raise self.source._read_error(exc) from exc
            self._frames = self.container.decode(self.stream)
            frame = self._next_frame()
        ft = frame.time if frame.time is not None else self._count * self.frame_duration
        if self._first is None:
            self._first = ft
        self._last = max(ft - self._first, 0.0)
        self._count += 1
        t = self._offset + self._last
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + 1.0
            self.source._check_alive()
        if not self.gate.accept(t) or (self.pacer is not None and not self.pacer.wait(t)):
            return None
        captured = time.time()  # the frame left the device (or came due): before conversion
        if self.pacer is None and frame.time is not None and abs(frame.time - captured) < 5.0:
            captured = frame.time  # a live device stamped it with the wall clock (x11grab, v4l2)
        return VideoFrame(data=self.converter.from_av(frame), pts=to_pts(t), capture_time=captured)

    def close(self) -> None:
        self.container.close()
