"""``Camera``: a camera through OpenCV: an index (``/dev/videoN``), a device node, a URL, or a file.

URLs (``http://.../stream.mjpg``, ``rtsp://...``) are opened with the FFMPEG backend and
open/read timeouts, so a dead server fails ``start()`` instead of hanging. A regular file
stands in for a camera: it is paced at its frame rate and looped.
"""

from __future__ import annotations

import glob
import os
import threading
import time

import numpy as np

from devices._reader import ThreadedSource
from devices._video import FrameRateGate, I420Converter, Pacer, check_size, to_pts
from devices.errors import (
    START_DEVICES_HINT,
    DeviceGone,
    DeviceNotFound,
    DeviceUnavailable,
    UnreadableFile,
)
from media._opencv import cv2
from media.frames import VideoFrame
from media.source import SourceEnded, VideoSource

_NO_CAMERA_FIX = (
    "plug in a camera (check `ls /dev/video*`), or select another source: a camera URL, "
    "ScreenCapture, VideoFile or TestPattern (`callrt devices` lists what exists; " + START_DEVICES_HINT + ")"
)


class Camera(ThreadedSource[VideoFrame], VideoSource):
    """A camera read by OpenCV in its own thread, scaled to ``width`` x ``height``, limited to ``fps``."""

    def __init__(
        self,
        device: int | str = 0,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        loop: bool = True,
        open_timeout: float = 5.0,
        read_timeout: float = 5.0,
    ) -> None:
        check_size(width, height, fps)
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        self.device = device
        """Index, device node, URL or file path, as given."""
        self.width, self.height, self.fps = width, height, fps
        self.loop = loop
        """For a file: start again at the end (otherwise the source ends)."""
        if isinstance(device, int):
            kind, label = "index", f"camera {device} (/dev/video{device})"
        elif "://" in device:
            kind, label = "url", f"camera {device}"
        elif device.startswith("/dev/"):
            kind, label = "node", f"camera {device}"
        else:
            kind, label = "file", f"camera file {device}"
        self.input_kind = kind
        """``index``, ``node``, ``url`` or ``file``."""
        super().__init__(label, open_timeout=open_timeout, read_timeout=read_timeout)

    def _gone_fix(self) -> str:
        if self.input_kind == "url":
            return "check the stream server is still running and reachable, then start the camera again"
        return "check the camera is still connected and not used by another program"

    def _open(self, stop: threading.Event) -> _CvCapture:
        cap = self._open_capture()
        try:
            if self.input_kind in ("index", "node"):
                if self.width and self.height:
                    cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
                    cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
                if self.fps:
                    cap.set(cv2.CAP_PROP_FPS, self.fps)
            capture = _CvCapture(self, cap, stop)
            capture.prime()
            return capture
        except BaseException:
            cap.release()
            raise

    def _open_capture(self) -> cv2.VideoCapture:
        ms = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(self.open_timeout * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(self.read_timeout * 1000),
        ]
        device = self.device
        if self.input_kind in ("index", "node"):
            node = f"/dev/video{device}" if isinstance(device, int) else str(device)
            if not os.path.exists(node):
                nodes = sorted(glob.glob("/dev/video*"))
                have = f"cameras present: {', '.join(nodes)}" if nodes else "this machine has no /dev/video* nodes"
                raise DeviceNotFound(self.name, f"no such camera ({have})", _NO_CAMERA_FIX)
            cap = cv2.VideoCapture(device, cv2.CAP_V4L2) if isinstance(device, int) else cv2.VideoCapture(node)
            if not cap.isOpened():
                cap.release()
                raise DeviceUnavailable(
                    self.name,
                    "exists but cannot be opened (used by another program, no permission, or not a capture device)",
                    "close other programs using the camera (`fuser "
                    + node
                    + "`) and check you are in the 'video' group",
                )
            return cap
        if self.input_kind == "file":
            path = str(device)
            if not os.path.isfile(path):
                raise UnreadableFile(self.name, "no such file", "check the path")
            cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
            if not cap.isOpened():
                cap.release()
                raise UnreadableFile(self.name, "OpenCV cannot decode it", "use a video file FFmpeg can read")
            return cap
        cap = cv2.VideoCapture(str(device), cv2.CAP_FFMPEG, ms)
        if not cap.isOpened():
            cap.release()
            raise DeviceUnavailable(
                self.name,
                f"no video stream there within {self.open_timeout:g} s (refused, timed out, or not a video stream)",
                "check the camera/stream server is running and the URL is right (try it with `ffplay URL`)",
            )
        return cap


class _CvCapture:
    """An open ``cv2.VideoCapture``: read, (for files) pace and loop, limit fps, convert."""

    def __init__(self, source: Camera, cap: cv2.VideoCapture, stop: threading.Event) -> None:
        self.source = source
        self.cap = cap
        self.stop = stop
        self.converter = I420Converter(source.width, source.height)
        self.gate = FrameRateGate(source.fps)
        self.is_file = source.input_kind == "file"
        file_fps = cap.get(cv2.CAP_PROP_FPS) if self.is_file else 0.0
        self.frame_duration = 1.0 / file_fps if file_fps and file_fps < 1000 else 1 / 30
        self.pacer = Pacer(stop) if self.is_file else None
        self.t0 = time.monotonic()
        self.count = 0
        self._pending: np.ndarray | None = None

    def prime(self) -> None:
        """Read one frame now, so ``start()`` fails if the device opens but yields nothing."""
        ok, img = self.cap.read()
        if not ok or img is None:
            if self.is_file:
                raise UnreadableFile(self.source.name, "has no decodable video frames", "check the file")
            raise DeviceUnavailable(self.source.name, "opened but delivered no frame", self.source._gone_fix())
        self._pending = img

    def _read_image(self) -> np.ndarray:
        img, self._pending = self._pending, None
        if img is not None:
            return img
        ok, img = self.cap.read()
        if ok and img is not None:
            return img
        if self.stop.is_set():
            raise SourceEnded(self.source.name)
        if not self.is_file:
            raise DeviceGone(self.source.name, "stream ended or stalled (read failed)", self.source._gone_fix())
        if not self.source.loop:
            raise SourceEnded(f"{self.source.name} ended")
        self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        ok, img = self.cap.read()
        if not ok or img is None:
            raise UnreadableFile(self.source.name, "cannot read frames after seeking to the start", "check the file")
        return img

    def read(self) -> VideoFrame | None:
        try:
            img = self._read_image()
        except cv2.error as exc:
            raise DeviceGone(self.source.name, f"OpenCV read failed ({exc})", self.source._gone_fix()) from exc
        if self.is_file:
            t = self.count * self.frame_duration
            self.count += 1
            if not self.gate.accept(t) or self.pacer is None or not self.pacer.wait(t):
                return None
        else:
            t = time.monotonic() - self.t0
            if not self.gate.accept(t):
                return None
        captured = time.time()  # the frame left the device (or came due): before conversion
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        return VideoFrame(data=self.converter.from_bgr(img), pts=to_pts(t), capture_time=captured)

    def close(self) -> None:
        self.cap.release()
