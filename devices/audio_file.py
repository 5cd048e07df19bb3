"""``AudioFile``: an audio file (any format FFmpeg reads) as paced 48 kHz, 20 ms int16 frames."""

from __future__ import annotations

import os
import threading
import time

import av
import numpy as np

from devices._reader import ThreadedSource
from devices._video import Pacer
from devices.errors import DeviceError, UnreadableFile, from_os_error
from media.frames import AUDIO_SAMPLE_RATE, AudioFrame
from media.source import AudioSource, SourceEnded


class AudioFile(ThreadedSource[AudioFrame], AudioSource):
    """Frames of an audio file at real-time pace, resampled to ``sample_rate`` and ``channels``.

    ``channels=None`` keeps the file's layout (mono stays mono, more than two are mixed to
    stereo). With ``loop=True`` the file repeats seamlessly; otherwise the last block is
    padded with silence and ``recv()`` then raises ``SourceEnded``.
    """

    queue_size = 10

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        loop: bool = False,
        sample_rate: int = AUDIO_SAMPLE_RATE,
        channels: int | None = None,
        block_ms: int = 20,
        read_timeout: float = 5.0,
    ) -> None:
        if channels is not None and channels not in (1, 2):
            raise ValueError("channels must be 1, 2 or None")
        self.path = os.fspath(path)
        """The file."""
        self.loop = loop
        self.sample_rate = sample_rate
        self.channels = channels
        self.block_size = sample_rate * block_ms // 1000
        """Samples per frame (960 at 48 kHz, 20 ms)."""
        super().__init__(f"audio file {self.path}", read_timeout=read_timeout)

    def _gone_fix(self) -> str:
        return "check the file is still there and readable"

    def _open(self, stop: threading.Event) -> _AudioCapture:
        if not os.path.isfile(self.path):
            raise UnreadableFile(self.name, "no such file", "check the path")
        try:
            container = av.open(self.path)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise self._map(exc) from exc
        try:
            if not container.streams.audio:
                raise UnreadableFile(self.name, "has no audio stream", "pass an audio file")
            capture = _AudioCapture(self, container, stop)
            capture.prime()
            return capture
        except BaseException:
            container.close()
            raise

    def _map(self, exc: BaseException) -> DeviceError:
        return from_os_error(
            exc,
            self.name,
            missing_fix="check the path",
            unavailable_fix="use an audio file FFmpeg can decode",
            is_file=True,
        )


class _AudioCapture:
    """Decode, resample, cut into blocks, pace."""

    def __init__(self, source: AudioFile, container: av.container.InputContainer, stop: threading.Event) -> None:
        self.source = source
        self.container = container
        self.stream = container.streams.audio[0]
        file_channels = self.stream.codec_context.channels or 1
        self.channels = source.channels or (1 if file_channels == 1 else 2)
        self.resampler = av.AudioResampler(
            format="s16", layout="mono" if self.channels == 1 else "stereo", rate=source.sample_rate
        )
        self.pacer = Pacer(stop)
        self.pending = np.zeros((0, self.channels), np.int16)
        self.pts = 0
        self.ended = False
        self._frames = container.decode(self.stream)

    def prime(self) -> None:
        """Decode until one block is ready, so ``start()`` fails on a file without audio."""
        self._fill()
        if len(self.pending) == 0:
            raise UnreadableFile(self.source.name, "has no decodable audio", "check the file")

    def _fill(self) -> None:
        bs = self.source.block_size
        while len(self.pending) < bs and not self.ended:
            try:
                frame = next(self._frames)
                out = self.resampler.resample(frame)
            except StopIteration:
                out = self.resampler.resample(None)
                if self.source.loop and self.pts + len(self.pending) > 0:
                    self.container.seek(0)
                    self._frames = self.container.decode(self.stream)
                    self.resampler = av.AudioResampler(
                        format="s16", layout="mono" if self.channels == 1 else "stereo", rate=self.source.sample_rate
                    )
                else:
                    self.ended = True
            except (av.FFmpegError, OSError, ValueError) as exc:
                raise UnreadableFile(self.source.name, f"decoding failed ({exc})", "check the file") from exc
            chunks = [self.pending] + [f.to_ndarray().reshape(-1, self.channels) for f in out]
            self.pending = np.concatenate(chunks)

    def read(self) -> AudioFrame | None:
        bs = self.source.block_size
        self._fill()
        if len(self.pending) == 0:
            raise SourceEnded(f"{self.source.name} ended")
        block, self.pending = self.pending[:bs], self.pending[bs:]
        if len(block) < bs:
            block = np.concatenate([block, np.zeros((bs - len(block), self.channels), np.int16)])
        if not self.pacer.wait(self.pts / self.source.sample_rate):
            return None
        frame = AudioFrame(
            samples=np.ascontiguousarray(block),
            sample_rate=self.source.sample_rate,
            pts=self.pts,
            capture_time=time.time(),
        )
        self.pts += bs
        return frame

    def close(self) -> None:
        self.container.close()
