"""``VideoFile``: a video file decoded by PyAV, looped and paced at the file's own rate."""

from __future__ import annotations

import os

from devices.errors import UnreadableFile
from devices.ffmpeg import FFmpegSource


class VideoFile(FFmpegSource):
    """Frames of a video file at its real rate, from the start again at the end (``loop=True``).

    ``pts`` keeps increasing across loops; ``width``/``height`` scale, ``fps`` limits the rate.
    """

    _is_file = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        loop: bool = True,
        read_timeout: float = 5.0,
    ) -> None:
        self.path = os.fspath(path)
        """The file."""
        super().__init__(
            self.path,
            None,
            width=width,
            height=height,
            fps=fps,
            loop=loop,
            read_timeout=read_timeout,
            name=f"video file {self.path}",
        )

    def _open_fix(self) -> str:
        return "check the path and that the file is a video PyAV/FFmpeg can decode"

    def _precheck(self) -> None:
        if not os.path.isfile(self.path):
            raise UnreadableFile(self.name, "no such file", "check the path")
        if not os.access(self.path, os.R_OK):
            raise UnreadableFile(self.name, "permission denied", "make the file readable")

    def _gone_fix(self) -> str:
        return "check the file is still there and readable"
